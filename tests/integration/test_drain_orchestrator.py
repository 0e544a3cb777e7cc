"""The orchestrator's side of draining with real agents and HAProxy: a target that leaves
drains (HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT=60) and is freed as soon as both agents report 0
sessions for it, not at the timeout; an agent stopped before a drain holds it until it is back.
(The load tests with failed-request counts are tests/integration/test_lifecycle*.py; this one
uses the same lab, without load.)"""
import json
import time

from conftest import wait_until
from lifecycle_fixtures import (draining, key_served_by, lab_of, long_request,  # noqa: F401
                                write_targets)

INTERVAL = 0.3


def test_a_leaving_target_drains_and_is_freed_by_the_agents_reports(lab_of, procs):  # noqa: F811
    lab = lab_of(drain_timeout=60, backends=4, interval=INTERVAL)
    targets = lab.targets

    def fleet_up_to_date():
        doc = json.loads(lab.hsdo("status", "--fleet", "--json").stdout)
        return doc["generation"] > 0 and len(doc["nodes"]) == 2 and doc["nodes_behind"] == 0
    wait_until(fleet_up_to_date, timeout=20, what="both agents up to date")

    # Target 2 (slot 2) leaves: its slot drains on both nodes, then is freed by the
    # reports (no traffic: 0 sessions) long before the 60 s timeout.
    write_targets(lab.targets_file, [targets[0]] + targets[2:])
    left = time.monotonic()
    doc = wait_until(lambda: (d := lab.status())["draining"] == 1 and d, what="draining")
    assert {s["id"]: s["state"] for s in doc["slots"]}[2] == "draining"
    wait_until(lambda: all(draining(server) for server in lab.slots(2)), timeout=10,
               what="slot 2 in drain on both nodes")
    doc = wait_until(lambda: (d := lab.status())["draining"] == 0 and d, timeout=15,
                     what="freed by the reports")
    freed_after = time.monotonic() - left
    assert {s["id"]: s["state"] for s in doc["slots"]}[2] == "free"
    assert freed_after < 15, freed_after
    print(f"slot freed {freed_after:.2f} s after the target left (INTERVAL {INTERVAL} s)")

    # Agent b stopped (a crash, a pause, a stalled HAProxy socket) before the drain began: its
    # HAProxy still sends the leaving target new requests, so its silence holds the drain
    # (until the 60 s timeout), however long after 3 x INTERVAL; a's 0 alone once freed it.
    node_b = next(node for node in lab.nodes if node.name == "b")
    procs.stop(lab.agents["b"].proc)
    write_targets(lab.targets_file, [targets[0], targets[3]])
    left = time.monotonic()
    doc = wait_until(lambda: (d := lab.status())["draining"] == 1 and d, what="draining")
    time.sleep(10 * INTERVAL)
    assert lab.status()["draining"] == 1, "freed on a's word while b was silent"
    # b back: it applies the drain, reports 0 sessions on the slot, and the slot is freed.
    lab.start_agent(node_b)
    doc = wait_until(lambda: (d := lab.status())["draining"] == 0 and d, timeout=15,
                     what="freed once b is back")
    assert {s["id"]: s["state"] for s in doc["slots"]}[3] == "free"
    print(f"with b stopped and restarted: freed {time.monotonic() - left:.2f} s after the "
          "target left")


def test_an_agent_with_a_longer_interval_still_holds_the_drain(lab_of, procs):  # noqa: F811
    """Agents given a longer INTERVAL (2 s) than the orchestrator's (0.3 s) report every 2 s
    while a slot drains. Between two reports each is still live (3 x its own INTERVAL, the
    `interval_ms` of its record), so node b's request in flight on the draining slot holds it:
    the slot is freed only after that request ended. (Judged by the orchestrator's 0.9 s, b
    looked dead between its reports, and a's 0 sessions alone freed the slot under b's
    request.)"""
    lab = lab_of(drain_timeout=60, backends=4, interval=INTERVAL, agent_extra={"INTERVAL": "2"})
    leaving = lab.targets[1]["name"]
    slot = lab.slot_of(leaving)
    node_b = next(node for node in lab.nodes if node.name == "b")
    held = []
    thread = long_request(node_b, key_served_by(node_b, leaving), 5, held)
    wait_until(lambda: node_b.sessions(slot) >= 1, timeout=5, what="the request in flight on b")
    write_targets(lab.targets_file, [t for t in lab.targets if t["name"] != leaving])
    wait_until(lambda: lab.status()["slots"][slot - 1]["state"] == "draining", timeout=10,
               what="the slot draining")
    freed_at = wait_until(
        lambda: lab.status()["slots"][slot - 1]["state"] == "free" and time.monotonic(),
        timeout=30, interval=0.05, what="the slot freed")
    thread.join(timeout=15)
    assert held and held[0][1] == 200, held
    ended_at = held[0][3]
    print(f"request on b ended, slot freed {freed_at - ended_at:+.2f} s after")
    assert freed_at > ended_at, f"freed {ended_at - freed_at:.2f} s before b's request ended"
