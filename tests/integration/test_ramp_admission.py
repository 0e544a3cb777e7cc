"""A new target's ramp waits for its first passing health check (issue 10 item 4's gating
with the orchestrator's ramp): two real HAProxy nodes with `check`, the agents and the
orchestrator on SQLite. A target listed before its process listens is held at weight 0 on
both nodes by admission gating; its table weight stays at HAPROXY_BACKEND_SERVER_MIN_WEIGHT
for as long (before: the ramp ran on unseen, and a slow boot entered at a high weight at
once), and ramps once it listens."""
import json
import time

from conftest import wait_until
from lifecycle_fixtures import (LifecycleNode, SlowBackend, lab_of, serving,  # noqa: F401
                                write_targets)

INTERVAL = 0.3
RAMP = {"HAPROXY_BACKEND_SERVER_MIN_WEIGHT": 1, "HAPROXY_BACKEND_SERVER_MAX_WEIGHT": 10,
        "HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT": 1,
        "HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL": 1}


def table_weight(lab, name):
    return next(s["weight"] for s in lab.status()["slots"] if s.get("name") == name)


def lab_with_a_late_target(lab_of, procs):  # noqa: F811
    """Two nodes whose targets are at full weight, and `late` added to the targets while nothing
    listens at its address: (lab, late, its slot), once both nodes hold it at weight 0."""
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
    return lab, late, slot


def test_a_target_not_yet_listening_keeps_its_first_weight_until_its_check_passes(
        lab_of, procs, tmp_path):  # noqa: F811
    lab, late, slot = lab_with_a_late_target(lab_of, procs)
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



def test_nodes_that_join_meanwhile_keep_the_ramp_waiting(lab_of, procs, tmp_path):  # noqa: F811
    """Review (fleet scale): nodes that join the fleet (a fresh HAProxy each) give every slot its
    weight at once, nothing serving yet to gate on. They listed no slot as waiting, so once they
    were half of the live nodes, a target that had never answered a check ramped to its full
    weight. Now they list the slots whose check has not passed there, and the ramp waits."""
    lab, late, slot = lab_with_a_late_target(lab_of, procs)
    for name in ("c", "d", "e"):  # three of five: more than half
        node = LifecycleNode(procs, name, check=lab.check,
                             check_inter_ms=lab.check_inter_ms).start()
        lab.nodes.append(node)
        lab.start_agent(node)

    def waiting_nodes():
        fleet = json.loads(lab.hsdo("status", "--fleet", "--json").stdout)
        return {n["name"] for n in fleet["nodes"] if slot in (n.get("pending_admission") or [])}
    wait_until(lambda: waiting_nodes() >= {f"node-{n}" for n in "abcde"}, timeout=10,
               what="every node, the new ones too, saying late waits for its first check")
    deadline = time.monotonic() + 6  # six increase intervals
    weights = set()
    while time.monotonic() < deadline:
        weights.add(table_weight(lab, "late"))
        time.sleep(0.2)
    assert weights == {1}, f"the ramp ran while no node had seen late pass a check: {weights}"
    late.start()
    wait_until(lambda: table_weight(lab, "late") == 10, timeout=30, what="late at full weight")
    assert not waiting_nodes()
