"""Issue 10's "Must show", through the real binary: 2 HAProxy nodes, one orchestrator (file
source, SQLite, INTERVAL=1), one agent per node, 5 backends that answer in 1 s, and a steady
hashed load through both nodes. Every scenario ends with 0 failed requests (connection error,
5xx or timeout) out of all the load sent.

The comparison runs (DRAIN_TIMEOUT=0, no admission gating) are in bench/lifecycle.py, not here;
`hsdo status --fleet` with one agent stopped is in test_fleet_status.py, on the same lab.
"""
import re
import time

from conftest import wait_until
from haproxy_fixtures import wait_cycles
from lifecycle_fixtures import (INTERVAL, WEIGHT, SlowBackend, add_late_target,  # noqa: F401
                                draining, lab_of, poll, remove_target, serving)

CYCLE = float(INTERVAL)


def assert_no_failed_request(load):
    failed = load.failures()
    assert not failed, load.summary()
    assert load.count() > 0


def test_a_removed_target_drains_on_both_nodes_and_stops_after_with_no_failed_request(lab_of):
    lab = lab_of(drain_timeout=10)
    leaving = lab.backends[2]
    seen = remove_target(lab, leaving, hold_seconds=3)
    slot = seen.slot
    print("(a)", seen.load.summary())

    assert seen.drained_at, f"slot {slot} never draining on both nodes (freed: {seen.freed})"
    for server in seen.drained:  # it keeps its place: address, port, slot number
        assert (server.addr, server.port) == (leaving.ip, leaving.port), server
    assert seen.store_state["state"] == "draining", seen.store_state
    # hsdo_slots_draining on the orchestrator and on both agents.
    assert seen.draining_gauges == [1, 1, 1], seen.draining_gauges
    assert seen.freed_at, f"slot {slot} never freed on both nodes"
    # The requests in flight when the target left were answered by it, and the slot was freed
    # only after that, on both nodes.
    assert sorted((n, st, b) for n, st, b, _ in seen.held) == [
        ("a", 200, leaving.name), ("b", 200, leaving.name)], seen.held
    last_answer = max(end for *_, end in seen.held)
    assert seen.freed_at >= last_answer - 0.05, (
        f"freed {last_answer - seen.freed_at:.2f}s before the last in-flight request was answered")
    # The timeout would free it no earlier than 10 s after the file changed: freed before, it
    # was freed by the nodes' reports of 0 sessions.
    assert seen.freed_at - seen.removed_at < 10, \
        f"freed {seen.freed_at - seen.removed_at:.1f}s after the removal"
    assert seen.store_after == {"id": slot, "state": "free"}
    print(f"(a) draining on both nodes {seen.drained_at - seen.removed_at:.2f}s after the "
          f"removal, freed {seen.freed_at - seen.removed_at:.2f}s after it "
          f"({seen.freed_at - last_answer:.2f}s after the last in-flight answer)")
    assert_no_failed_request(seen.load)


def test_b_added_target_takes_traffic_only_after_its_check_passes(lab_of, procs):
    lab = lab_of(drain_timeout=10)
    late = SlowBackend(procs, "web-6", "127.0.0.7")  # not listening yet
    seen = add_late_target(lab, late, listen_after=3.0)
    print("(b)", seen.load.summary())

    # Nothing listened for 3 s: on both nodes the slot held the address but took no traffic.
    assert seen.staged_at, f"slot {seen.slot} never staged on both nodes"
    assert len(seen.samples) >= 5, seen.samples
    for servers in seen.samples:
        for node, server in zip(lab.nodes, servers):
            assert server.weight == 0, (f"node {node.name} gave slot {seen.slot} weight "
                                        f"{server.weight} before its check passed: {server}")
    print(f"(b) staged on both nodes {seen.staged_at - seen.added_at:.2f}s after the add, "
          f"weight {WEIGHT} {seen.admitted_at - seen.listening_at:.2f}s after it listened")
    assert_no_failed_request(seen.load)


FULL_SYNC = 2.0  # HAPROXY_FULL_SYNC_INTERVAL: how soon an agent sees a hand edit


def test_c_operator_drain_sticks_on_both_nodes_across_a_reload(lab_of):
    lab = lab_of(drain_timeout=10, agent_extra={"HAPROXY_FULL_SYNC_INTERVAL": FULL_SYNC})
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
    node_a = lab.nodes[0]
    old = node_a.reload()
    assert draining(node_a.slot(slot)), node_a.slot(slot)
    wait_until(lambda: old.poll() is not None, timeout=15, what="the old haproxy exiting")
    for agent in lab.agents.values():
        wait_cycles(agent, 2)
    assert all(draining(s) for s in lab.slots(slot)), lab.slots(slot)
    # Out of rotation: no request that began well after the drain reached it.
    late = [o for o in load.snapshot() if o.start > drained_at + 0.2 and o.body == target.name]
    assert not late, late[:5]
    # A hand edit through the socket is repaired at the agent's next full read of HAProxy's
    # state: the override is in the table.
    node_a.cmd(f"set server app/srv{slot} state ready")
    wait_until(lambda: draining(node_a.slot(slot)), timeout=FULL_SYNC + CYCLE + 1,
               what="the agent repairing a hand edit back to drain")
    # A reload that loses every runtime change (no state saved) gets the drain back from the
    # agent; node a is out of the load meanwhile, as a node restarted this way should be.
    load.paused.add(node_a.name)
    node_a.reload(save_state=False)
    wait_until(lambda: draining(node_a.slot(slot)), timeout=CYCLE + 2,
               what="the agent putting the drain back after a reload without state")
    lab.wait_serving([b for b in lab.backends if b is not target], timeout=10)
    load.paused.clear()

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
