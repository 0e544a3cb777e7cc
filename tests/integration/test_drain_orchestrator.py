"""The orchestrator's side of draining with real agents and HAProxy: a target that leaves
drains (HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT=60) and is freed as soon as both agents report 0
sessions for it, not at the timeout; with one agent stopped, the live one alone decides.
(The load tests with failed-request counts are tests/integration/test_lifecycle*.py; this one
uses the same lab, without load.)"""
import json
import time

from conftest import wait_until
from lifecycle_fixtures import draining, lab_of, write_targets  # noqa: F401 (lab_of: fixture)

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

    # Agent b stopped: once its report is older than 3 x INTERVAL, a alone decides.
    procs.stop(lab.agents["b"].proc)
    write_targets(lab.targets_file, [targets[0], targets[3]])
    left = time.monotonic()
    doc = wait_until(lambda: (d := lab.status())["draining"] == 1 and d, what="draining")
    doc = wait_until(lambda: (d := lab.status())["draining"] == 0 and d, timeout=15,
                     what="freed with agent b stopped")
    assert {s["id"]: s["state"] for s in doc["slots"]}[3] == "free"
    print(f"with b stopped: freed {time.monotonic() - left:.2f} s after the target left")
