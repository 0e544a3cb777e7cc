"""A new target's ramp waits for its first passing health check (issue 10 item 4's gating
with the orchestrator's ramp): two real HAProxy nodes with `check`, the agents and the
orchestrator on SQLite. A target listed before its process listens is held at weight 0 on
both nodes by admission gating; its table weight stays at HAPROXY_BACKEND_SERVER_MIN_WEIGHT
for as long (before: the ramp ran on unseen, and a slow boot entered at a high weight at
once), and ramps once it listens."""
import time

from conftest import wait_until
from lifecycle_fixtures import SlowBackend, lab_of, serving, write_targets  # noqa: F401

INTERVAL = 0.3
RAMP = {"HAPROXY_BACKEND_SERVER_MIN_WEIGHT": 1, "HAPROXY_BACKEND_SERVER_MAX_WEIGHT": 10,
        "HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT": 1,
        "HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL": 1}


def table_weight(lab, name):
    return next(s["weight"] for s in lab.status()["slots"] if s.get("name") == name)


def test_a_target_not_yet_listening_keeps_its_first_weight_until_its_check_passes(
        lab_of, procs, tmp_path):  # noqa: F811
    lab = lab_of(backends=2, interval=INTERVAL, server_extra=RAMP)
    wait_until(lambda: all(table_weight(lab, b.name) == 10 for b in lab.backends), timeout=30,
               what="the first targets at full weight")
    late = SlowBackend(procs, "late", "127.0.0.9")
    write_targets(lab.targets_file, lab.targets + [late.target()])
    slot = wait_until(lambda: next((s["id"] for s in lab.status()["slots"]
                                    if s.get("name") == "late"), None), timeout=5,
                      what="late in the table")
    wait_until(lambda: all(s.addr == late.ip and s.weight == 0 for s in lab.slots(slot)),
               timeout=5, what="late held at weight 0 on both nodes")
    # Six increase intervals with its check failing on both nodes: not one step.
    deadline = time.monotonic() + 6
    weights = set()
    while time.monotonic() < deadline:
        weights.add(table_weight(lab, "late"))
        assert all(s.weight == 0 for s in lab.slots(slot)), lab.slots(slot)
        time.sleep(0.2)
    assert weights == {1}, f"the ramp ran while no node sent it a request: {sorted(weights)}"
    assert lab.server_metrics().get("hsdo_slots_awaiting_admission") == 1
    late.start()
    listening = time.monotonic()
    wait_until(lambda: all(serving(s, late, weight=1) or s.weight > 1 for s in lab.slots(slot)),
               timeout=10, what="late admitted on both nodes")
    wait_until(lambda: table_weight(lab, "late") == 10, timeout=30, what="late at full weight")
    took = time.monotonic() - listening
    print(f"late ramped 1 -> 10 in {took:.1f} s after it began to listen")
    assert took >= 8, f"ramped in {took:.1f} s, faster than 9 steps of 1 s"
    wait_until(lambda: all(serving(s, late, weight=10) for s in lab.slots(slot)), timeout=10,
               what="late at full weight on both nodes")

