"""Issue 10's "Must show", through the real binary: 2 HAProxy nodes, one orchestrator (file
source, SQLite, INTERVAL=1), one agent per node, 5 backends that answer in 1 s, and a steady
hashed load through both nodes. Every scenario ends with 0 failed requests (connection error,
5xx or timeout) out of all the load sent.

The comparison runs (DRAIN_TIMEOUT=0, no admission gating) are in bench/lifecycle.py, not here.
"""
import re
import threading
import time

import pytest

from conftest import wait_until
from haproxy_fixtures import wait_cycles
from lifecycle_fixtures import (BACKEND, INTERVAL, WEIGHT, Lab, SlowBackend, draining, get,
                                in_maint, key_served_by, poll, serving, write_targets)

CYCLE = float(INTERVAL)


@pytest.fixture
def lab_of(procs, tmp_path):
    labs = []

    def make(**kwargs):
        lab = Lab(procs, tmp_path, **kwargs)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.close()


def assert_no_failed_request(load):
    failed = load.failures()
    assert not failed, load.summary()
    assert load.count() > 0


def long_request(node, key, seconds, results):
    """A request that holds a session for `seconds`, in its own thread; appends
    (node, status, body, monotonic end) to `results`."""
    def run():
        status, body = get(node.frontend_ports[BACKEND], key, timeout=seconds + 10,
                           headers={"X-Delay": str(seconds)})
        results.append((node.name, status, body, time.monotonic()))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_removed_target_drains_on_both_nodes_and_stops_after_with_no_failed_request(lab_of):
    lab = lab_of(drain_timeout=10)
    leaving = lab.backends[2]
    slot = lab.slot_of(leaving.name)
    # One request of 3 s to the leaving backend through each node, in flight when the target
    # leaves: the slot must not be freed before both are answered.
    keys = {node.name: key_served_by(node, leaving.name) for node in lab.nodes}
    load = lab.start_load()
    load.wait_requests(8)
    long_results = []
    threads = [long_request(node, keys[node.name], 3, long_results) for node in lab.nodes]
    wait_until(lambda: all(node.sessions(slot) >= 1 for node in lab.nodes), timeout=5,
               what="the long requests in flight on both nodes")

    removed_at = time.monotonic()
    write_targets(lab.targets_file, [t for t in lab.targets if t["name"] != leaving.name])

    drained_at, _ = poll(lambda: all(draining(s) for s in lab.slots(slot)), timeout=5)
    assert drained_at, f"slot {slot} never draining on both nodes: {lab.slots(slot)}"
    for server in lab.slots(slot):  # it keeps its place: address, port, slot number
        assert (server.addr, server.port) == (leaving.ip, leaving.port), server
    status = {s["id"]: s for s in lab.status()["slots"]}
    assert status[slot]["state"] == "draining", status[slot]

    freed_at, _ = poll(lambda: all(in_maint(s) for s in lab.slots(slot)), timeout=15)
    assert freed_at, f"slot {slot} never freed on both nodes: {lab.slots(slot)}"
    # Only now does the instance go away.
    leaving.stop()
    for thread in threads:
        thread.join(10)

    assert sorted((n, st, b) for n, st, b, _ in long_results) == [
        ("a", 200, leaving.name), ("b", 200, leaving.name)], long_results
    last_answer = max(end for *_, end in long_results)
    assert freed_at >= last_answer - 0.05, (
        f"freed {last_answer - freed_at:.2f}s before the last in-flight request was answered")
    # The timeout would free it no earlier than 10 s after the file changed: freed before, it
    # was freed by the nodes' reports.
    assert freed_at - removed_at < 10, f"freed {freed_at - removed_at:.1f}s after the removal"
    assert lab.status()["slots"][slot - 1] == {"id": slot, "state": "free"}
    print(f"(a) draining on both nodes {drained_at - removed_at:.2f}s after the removal, "
          f"freed {freed_at - removed_at:.2f}s after it "
          f"({freed_at - last_answer:.2f}s after the last in-flight answer)")

    load.wait_requests(8)
    lab.stop_load()
    print("(a)", load.summary())
    assert_no_failed_request(load)


def test_b_added_target_takes_traffic_only_after_its_check_passes(lab_of, procs):
    lab = lab_of(drain_timeout=10)
    late = SlowBackend(procs, "web-6", "127.0.0.7")  # not listening yet
    load = lab.start_load()
    load.wait_requests(8)

    added_at = time.monotonic()
    write_targets(lab.targets_file, lab.targets + [late.target()])
    slot = wait_until(lambda: next((s["id"] for s in lab.status()["slots"]
                                    if s.get("name") == late.name), None),
                      timeout=5, what="web-6 in the table")

    def staged():
        servers = lab.slots(slot)
        return all(s.addr == late.ip and s.port == late.port and s.admin == "ready"
                   for s in servers) and servers
    staged_at, servers = poll(staged, timeout=5)
    assert staged_at, f"slot {slot} never staged on both nodes: {servers}"
    # Nothing listens for 3 s: on both nodes the slot holds the address but takes no traffic.
    samples = 0
    while time.monotonic() < added_at + 3:
        for node, server in zip(lab.nodes, lab.slots(slot)):
            assert server.weight == 0, f"node {node.name} gave slot {slot} weight " \
                f"{server.weight} before its check passed: {server}"
        samples += 1
        time.sleep(0.1)
    assert samples >= 5

    late.start()
    listening_at = time.monotonic()
    lab.wait_serving([late], timeout=10)
    admitted_at = time.monotonic()
    wait_until(lambda: any(o.ok and o.body == late.name for o in load.snapshot()), timeout=15,
               what="web-6 answering load requests")
    load.wait_requests(8)
    lab.stop_load()
    print(f"(b) staged at weight 0 on both nodes {staged_at - added_at:.2f}s after the add, "
          f"given weight {WEIGHT} {admitted_at - listening_at:.2f}s after it listened")
    print("(b)", load.summary())
    assert_no_failed_request(load)


def test_c_operator_drain_sticks_on_both_nodes_across_a_reload(lab_of):
    lab = lab_of(drain_timeout=10)
    target = lab.backends[1]
    slot = lab.slot_of(target.name)
    load = lab.start_load()
    load.wait_requests(8)

    asked_at = time.monotonic()
    lab.hsdo("set-state", target.name, "drain")
    drained_at, _ = poll(lambda: all(draining(s) for s in lab.slots(slot)), timeout=10)
    assert drained_at, f"slot {slot} never draining on both nodes: {lab.slots(slot)}"
    follow = drained_at - asked_at
    assert follow <= CYCLE + 1.0, f"both nodes followed in {follow:.2f}s, more than one cycle"
    row = next(line for line in lab.hsdo("status").stdout.splitlines()
               if re.search(rf"\b{re.escape(target.name)}\b", line))
    assert "drain" in row, f"hsdo status does not show the override: {row!r}"

    # A reload of node a, as documented (state saved, listeners handed over), keeps the drain,
    # and the agents keep it too.
    old = lab.nodes[0].reload()
    assert draining(lab.nodes[0].slot(slot)), lab.nodes[0].slot(slot)
    wait_until(lambda: old.poll() is not None, timeout=15, what="the old haproxy exiting")
    for agent in lab.agents.values():
        wait_cycles(agent, 2)
    assert all(draining(s) for s in lab.slots(slot)), lab.slots(slot)
    # Out of rotation: no request that began well after the drain reached it.
    late = [o for o in load.snapshot() if o.start > drained_at + 0.2 and o.body == target.name]
    assert not late, late[:5]

    ready_at = time.monotonic()
    lab.hsdo("set-state", target.name, "ready")
    back_at, _ = poll(lambda: all(serving(s, target) for s in lab.slots(slot)), timeout=10)
    assert back_at, f"slot {slot} not back in service on both nodes: {lab.slots(slot)}"
    assert back_at - ready_at <= CYCLE + 1.0, f"ready took {back_at - ready_at:.2f}s"
    load.wait_requests(8)
    lab.stop_load()
    print(f"(c) drain on both nodes in {follow:.2f}s, ready in {back_at - ready_at:.2f}s")
    print("(c)", load.summary())
    assert_no_failed_request(load)


def fleet_rows(lab) -> dict:
    """`hsdo status --fleet`, as {node name: its line}."""
    text = lab.hsdo("status", "--fleet").stdout
    rows = {}
    for line in text.splitlines():
        for name in ("node-a", "node-b"):
            if re.search(rf"(^|\s){name}(\s|$)", line):
                rows[name] = line
    return rows


def test_fleet_status_shows_a_stopped_agent_as_behind(lab_of, procs):
    lab = lab_of(drain_timeout=0)
    generation = lab.generation()
    rows = wait_until(lambda: (r := fleet_rows(lab)).keys() == {"node-a", "node-b"} and r,
                      timeout=10, what="both nodes in hsdo status --fleet")
    for row in rows.values():
        assert "behind" not in row.lower() or re.search(r"\b0\b", row), rows
    wait_until(lambda: lab.server_metrics().get("hsdo_fleet_nodes_behind") == 0, timeout=10,
               what="hsdo_fleet_nodes_behind 0")

    procs.stop(lab.agents["b"].proc)
    write_targets(lab.targets_file, lab.targets[:4])  # the table moves on without node-b
    wait_until(lambda: lab.generation() > generation, timeout=10, what="a new generation")
    wait_until(lambda: lab.server_metrics().get("hsdo_fleet_nodes_behind") == 1, timeout=15,
               what="hsdo_fleet_nodes_behind 1")
    rows = fleet_rows(lab)
    print("\n".join(rows.values()))
    assert set(rows) == {"node-a", "node-b"}, rows
    assert "behind" in rows["node-b"].lower(), rows
    assert str(lab.generation()) in rows["node-a"].split(), rows
