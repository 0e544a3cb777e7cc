"""The mass-removal guard and deployments that replace targets: two real HAProxy nodes, the
agents and the orchestrator on SQLite (lifecycle_fixtures' lab), MAX_REMOVED_FRACTION=0.5 and
MASS_REMOVAL_DELAY=60 s, so that a hold lasts the whole test.

The fault: the guard counts every slot freed in the last MASS_REMOVAL_DELAY against the
fraction of the most slots enabled in it, and joins never offset removals. A rolling
replacement faster than the guard allows was held as if the fleet were being emptied (10
targets replaced one at a time every 5 s: held from the sixth step; here 6 targets, 7 slots
enabled at most, held from the fourth, 4 > 0.5 x 7): the old targets kept their slots, and a
terminated instance took its share of requests, for up to a minute after it was gone.

The fix: each agent says in its node report whether every slot it serves is gated by a health
check (admission gating on, `check` on every server). A removal the fraction rule would hold
goes through when the slots that stay enabled and that most live nodes' checks have passed are
at least (1 - MAX_REMOVED_FRACTION) of the base ("... not held: N slots that most nodes' health
checks passed stay enabled ..."). What the guard is for stays guarded: an answer that frees
every enabled slot is always held; addresses where nothing listens never pass a check, so a typo
that swaps the fleet for wrong addresses over two answers is held; and without checks nothing
proves that the new targets serve, so a fast replacement is held as before.
"""
import json
import time
from types import SimpleNamespace

import lifecycle_fixtures
import pytest
from conftest import free_port, wait_until
from lifecycle_fixtures import (SlowBackend, in_maint, lab_of, serving,  # noqa: F401
                                write_targets)

INTERVAL = 0.3
DELAY = 60
GUARD = {"MAX_REMOVED_FRACTION": 0.5, "MASS_REMOVAL_DELAY": DELAY}
TARGETS = 6
HELD = "holding the removal of"
NOT_HELD = "not held"
FREED_TIMEOUT = 10.0  # a drain of the load's 1 s requests ends in about 2 s


def log_of(lab) -> str:
    return lab.procs.log_of(lab.server)


def lines_with(lab, words) -> list:
    return [line for line in log_of(lab).splitlines() if words in line]


def held_metric(lab):
    return lab.server_metrics().get("hsdo_orchestrator_removal_held")


def table(lab) -> dict:
    """{name: slot record} of the filled slots, from `hsdo status --json`."""
    return {s["name"]: s for s in lab.status()["slots"] if s.get("name")}


def fleet_gates(lab) -> dict:
    """{node name: gates_every_slot} from `hsdo status --fleet --json`."""
    return {n["name"]: n.get("gates_every_slot") for n in fleet_nodes(lab)}


def fleet_nodes(lab) -> list:
    return json.loads(lab.hsdo("status", "--fleet", "--json").stdout)["nodes"]


def replace_one_at_a_time(lab, procs, load=False, freed_timeout=FREED_TIMEOUT):
    """A rolling replacement as fast as the nodes allow: for each old target, its successor
    (already booted, on a fresh 127.0.0.x) joins the targets file; once it serves on both
    nodes (check passed, table weight) the old one leaves the file, and once its slot is freed
    on both nodes and in the table its process stops, as an instance refresh terminates it.
    Stops at the first removal the orchestrator holds (hsdo_orchestrator_removal_held 1) or
    that is not freed within `freed_timeout`: `held_at` is that step (1-based), else None."""
    news = [SlowBackend(procs, f"new-{i + 1}", f"127.0.0.{20 + i}")
            for i in range(len(lab.backends))]
    for new in news:
        new.start()
    seen = SimpleNamespace(steps=[], held_at=None, held_metric=set(), load=None)
    if load:
        seen.load = lab.start_load()
        seen.load.wait_requests(8)
    current = list(lab.targets)
    started = time.monotonic()
    for step, (old, new) in enumerate(zip(lab.backends, news), 1):
        begun = time.monotonic()
        current.append(new.target())
        write_targets(lab.targets_file, current)
        lab.wait_serving([new], timeout=15)
        serving_after = time.monotonic() - begun
        slot = lab.slot_of(old.name)
        current = [t for t in current if t["name"] != old.name]
        removed_at = time.monotonic()
        write_targets(lab.targets_file, current)
        freed_at = None
        while time.monotonic() < removed_at + freed_timeout:
            held = held_metric(lab)
            if held is not None:
                seen.held_metric.add(held)
            if held == 1:
                break
            if old.name not in table(lab) and all(in_maint(s) for s in lab.slots(slot)):
                freed_at = time.monotonic()
                break
            time.sleep(0.1)
        seen.steps.append(SimpleNamespace(
            step=step, old=old, new=new, slot=slot, serving_after=serving_after,
            removed_at=removed_at - started,
            freed_after=None if freed_at is None else freed_at - removed_at))
        print(f"step {step}: {new.name} serving on both nodes {serving_after:.2f}s after it "
              f"joined; {old.name} (slot {slot}) removed at {removed_at - started:.2f}s, "
              + (f"freed {freed_at - removed_at:.2f}s after" if freed_at else "NOT freed"))
        if freed_at is None:
            seen.held_at = step
            break
        old.stop()
    if seen.load is not None:
        seen.load.wait_requests(8)
        lab.stop_load()
        print(seen.load.summary())
    return seen


def test_a_rolling_replacement_proven_by_the_checks_is_not_held(lab_of, procs):  # noqa: F811
    """Six targets replaced one at a time, each new one serving (its check passed on both
    nodes) before an old one leaves, all within MASS_REMOVAL_DELAY: the fourth removal makes 4
    of at most 7 enabled slots, more than the fraction, but the 6 that stay enabled have passed
    their checks on every node. Every old slot is freed as soon as it drained, and the load
    through both nodes sees no failed request (before: held from the fourth step for 60 s)."""
    lab = lab_of(backends=TARGETS, interval=INTERVAL, server_extra=GUARD)
    # Both nodes gate every slot by a check at its address (read from real HAProxy), and vouch
    # for every slot they were given at their start, when nothing else served (review of
    # 851ae37: each such slot was reported unvouched, and only new targets proved anything).
    wait_until(lambda: fleet_gates(lab) == {"node-a": True, "node-b": True}, timeout=10,
               what="both nodes vouching")
    wait_until(lambda: all(n["pending_admission"] == [] for n in fleet_nodes(lab)), timeout=10,
               what="every first check passed on both nodes")
    assert all(n["unvouched"] == [] for n in fleet_nodes(lab)), fleet_nodes(lab)
    seen = replace_one_at_a_time(lab, procs, load=True)

    held_at = seen.held_at
    assert held_at is None, (
        f"step {held_at}'s removal of {seen.steps[-1].old.name} was not freed within "
        f"{FREED_TIMEOUT:.0f} s: {lines_with(lab, HELD) or 'no hold logged'}")
    assert len(seen.steps) == TARGETS
    # Faster than the guard allows: every removal within one MASS_REMOVAL_DELAY.
    assert seen.steps[-1].removed_at - seen.steps[0].removed_at < DELAY
    assert not lines_with(lab, HELD)
    assert seen.held_metric == {0}, seen.held_metric
    # The new rule is what let the removals from the fourth on through, and it says so.
    assert lines_with(lab, NOT_HELD), "no removal said let through by the health checks"
    print("\n".join(lines_with(lab, NOT_HELD)))
    names = table(lab)
    assert set(names) == {b.name for b in (s.new for s in seen.steps)}, names
    assert all(names[s.new.name]["state"] == "enabled" for s in seen.steps), names
    lab.wait_serving([s.new for s in seen.steps], timeout=10)
    assert not seen.load.failures(), seen.load.summary()
    assert seen.load.count() > 0


def test_a_fleet_swapped_for_addresses_that_fail_their_checks_is_still_held(
        lab_of, procs):  # noqa: F811
    """A typo over two answers: the first swaps 3 of the 6 targets for addresses where nothing
    listens (3 of 6: within the fraction, let through), the second the other 3 too (6 freed in
    the window: held). The wrong addresses never pass a check, so the new rule cannot let the
    second removal through: the 3 right targets keep serving on both nodes."""
    lab = lab_of(backends=TARGETS, interval=INTERVAL, server_extra=GUARD)
    right = lab.backends
    wrong = [SlowBackend(procs, f"typo-{i + 1}", f"127.0.0.{40 + i}")  # never started
             for i in range(TARGETS)]
    kept = right[3:]
    kept_slots = {b.name: lab.slot_of(b.name) for b in kept}

    write_targets(lab.targets_file, [b.target() for b in kept + wrong[:3]])
    first = {b.name for b in kept + wrong[:3]}
    wait_until(lambda: set(table(lab)) == first, timeout=15,
               what="the first answer written (3 right targets freed, 3 wrong ones joined)")
    assert not lines_with(lab, HELD), "3 of 6 is within MAX_REMOVED_FRACTION"
    assert held_metric(lab) == 0
    time.sleep(1)

    write_targets(lab.targets_file, [b.target() for b in wrong])
    wait_until(lambda: lines_with(lab, HELD), timeout=10, what="the second removal held")
    print("\n".join(lines_with(lab, HELD)))
    wait_until(lambda: held_metric(lab) == 1, timeout=5, what="hsdo_orchestrator_removal_held 1")
    # Joins are never held: the other wrong addresses take free slots meanwhile.
    wait_until(lambda: set(table(lab)) == first | {b.name for b in wrong[3:]}, timeout=10,
               what="the second answer's joins written")
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        names = table(lab)
        for backend in kept:
            slot = kept_slots[backend.name]
            assert names[backend.name]["id"] == slot, names[backend.name]
            assert names[backend.name]["state"] == "enabled", names[backend.name]
            servers = lab.slots(slot)
            assert all(serving(s, backend) for s in servers), (backend.name, servers)
        assert held_metric(lab) == 1
        time.sleep(0.3)
    assert not lines_with(lab, NOT_HELD), lines_with(lab, NOT_HELD)


@pytest.mark.parametrize("unproven", ["no check", "REPLACEMENTS_PROVEN_BY_CHECKS=false"])
def test_without_checks_a_fast_replacement_is_held_as_before(lab_of, procs,  # noqa: F811
                                                            unproven):
    """Without `check` on the servers nothing proves that a new target serves (HAProxy calls it
    UP at once), and with REPLACEMENTS_PROVEN_BY_CHECKS=false (checks sent elsewhere in ways
    HAProxy's state does not show) nothing is taken as proof: the same fast rolling replacement
    is held from the fourth removal, 4 of at most 7 enabled slots, as documented ("Deployments
    that replace targets"), and the old target keeps serving in its slot on both nodes."""
    if unproven == "no check":
        lab = lab_of(backends=TARGETS, interval=INTERVAL, server_extra=GUARD, check=False)
    else:
        lab = lab_of(backends=TARGETS, interval=INTERVAL,
                     server_extra=dict(GUARD, REPLACEMENTS_PROVEN_BY_CHECKS="false"))
    seen = replace_one_at_a_time(lab, procs)

    held_at = seen.held_at
    assert held_at == 4, (
        f"held at step {held_at} (4 > 0.5 x 7 first at the fourth): "
        f"{lines_with(lab, HELD)}")
    assert seen.held_metric == {0, 1}, seen.held_metric
    assert lines_with(lab, HELD)
    print("\n".join(lines_with(lab, HELD)))
    assert not lines_with(lab, NOT_HELD), lines_with(lab, NOT_HELD)
    step = seen.steps[-1]
    time.sleep(2)
    names = table(lab)
    assert names[step.old.name]["id"] == step.slot and names[step.old.name]["state"] == "enabled"
    assert all(serving(s, step.old) for s in lab.slots(step.slot)), lab.slots(step.slot)
    assert held_metric(lab) == 1


def test_one_answer_swapping_the_fleet_for_live_targets_is_held_its_whole_delay(
        lab_of, procs):  # noqa: F811
    """Review of ef8f711: one answer that swapped every target for 5 others that answer their
    checks (another real service: a service name, tag or datacenter typo) was held once, then
    let through within 2.4 s as a replacement, the new targets having joined and passed their
    checks during the hold. An answer that alone frees more than the fraction is never a
    replacement: held, with the right targets serving, for MASS_REMOVAL_DELAY."""
    lab = lab_of(backends=5, interval=INTERVAL, server_extra=GUARD)
    other = [SlowBackend(procs, f"other-{i + 1}", f"127.0.0.{40 + i}") for i in range(5)]
    for backend in other:
        backend.start()
    write_targets(lab.targets_file, [b.target() for b in other])
    wait_until(lambda: lines_with(lab, HELD), timeout=10, what="the swap held")
    lab.wait_serving(other, timeout=15)  # joined, and passed their checks on both nodes
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        names = table(lab)
        assert all(names.get(b.name, {}).get("state") == "enabled" for b in lab.backends), names
        assert held_metric(lab) == 1
        time.sleep(0.5)
    lab.wait_serving(lab.backends, timeout=5)
    assert not lines_with(lab, NOT_HELD), lines_with(lab, NOT_HELD)


def test_a_check_of_a_port_of_its_own_proves_nothing(lab_of, procs, monkeypatch):  # noqa: F811
    """Review of ef8f711: with `check port P` (health on a management port) every check passes
    whatever listens at the server's own port, so a port typo was "proven". Such a node says it
    cannot vouch (`gates_every_slot` false, read from srv_check_port on real HAProxy)."""
    health = free_port("127.0.0.2")  # this worker's: free on .3 and .4 too
    write_config = lifecycle_fixtures.LifecycleNode.write_config

    def with_check_port(node):
        write_config(node)
        node.config.write_text(node.config.read_text().replace(
            " check disabled", f" check port {health} disabled"))

    monkeypatch.setattr(lifecycle_fixtures.LifecycleNode, "write_config", with_check_port)
    for i in range(3):  # the health endpoints the checks go to
        endpoint = SlowBackend(procs, f"health-{i + 1}", f"127.0.0.{i + 2}")
        endpoint.port = health
        endpoint.start()
    lab = lab_of(backends=3, interval=INTERVAL, server_extra=GUARD)
    assert all(f"check port {health}" in n.config.read_text() for n in lab.nodes)
    wait_until(lambda: fleet_gates(lab) == {"node-a": False, "node-b": False}, timeout=10,
               what="neither node vouching")


def served_then_freed(lab, procs, name) -> list:
    """Four more targets (127.0.0.30-33) that serve in slots 5-8, their checks passing, then
    leave (4 of 8: within the fraction): their servers wait in maint with that passing result
    (checks pause there). Their processes still run."""
    others = [SlowBackend(procs, f"{name}-{i + 1}", f"127.0.0.{30 + i}") for i in range(4)]
    for backend in others:
        backend.start()
    write_targets(lab.targets_file, [b.target() for b in lab.backends + others])
    lab.wait_serving(others, timeout=30)
    write_targets(lab.targets_file, [b.target() for b in lab.backends])
    wait_until(lambda: set(table(lab)) == {b.name for b in lab.backends}, timeout=20,
               what=f"the {name} targets freed")
    return others


def test_wrong_addresses_weighted_during_an_outage_prove_nothing(lab_of, procs):  # noqa: F811
    """Review of ef8f711: every target down (an outage), a typo that swaps them for addresses
    where nothing listens, in two answers each within the fraction. With nothing serving, the
    joins get their weight at once (gating never empties a backend) and HAProxy keeps the last
    check result of the slot's former target across `set server addr`: a passing one read as
    theirs, and the second removal was let through as a replacement. Now a slot once weighted
    before any check passed there, and one DOWN, is `unvouched`: the removal is held."""
    delay = 10  # the freed slots' reservation must pass first: kept short
    # Checks 2 s apart: the former target's passing result outlives the agent's next reads. No
    # drain: the extra targets are freed at once.
    lab = lab_of(backends=4, interval=INTERVAL, check_inter_ms=2000, drain_timeout=0,
                 server_extra={"MAX_REMOVED_FRACTION": 0.5, "MASS_REMOVAL_DELAY": delay})
    right = lab.backends
    extra = served_then_freed(lab, procs, "extra")
    for backend in extra:
        backend.stop()
    time.sleep(delay + 1)  # past MASS_REMOVAL_DELAY: the removals and the reservation
    for backend in right:
        backend.stop()
    wait_until(lambda: all(s.op_state == 0 for n in lab.nodes for s in n.state("app").values()
                           if s.admin == "ready"), timeout=30, what="every target DOWN")
    wrong = [SlowBackend(procs, f"typo-{i + 1}", f"127.0.0.{50 + i}") for i in range(4)]
    answer = [b.target() for b in right[2:] + wrong[:2]]  # 2 of 4: within the fraction
    write_targets(lab.targets_file, answer)
    wait_until(lambda: {b.name for b in wrong[:2]} <= set(table(lab)), timeout=10,
               what="the first answer's joins")
    time.sleep(0.5)  # the nodes weight them, on their slots' former passing result
    write_targets(lab.targets_file, [b.target() for b in wrong])  # 4 of 4 in the window
    wait_until(lambda: lines_with(lab, HELD), timeout=10, what="the second removal held")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        names = table(lab)
        assert all(b.name in names for b in right[2:]), names
        time.sleep(0.3)
    assert not lines_with(lab, NOT_HELD), lines_with(lab, NOT_HELD)


def test_dead_targets_back_in_their_slots_during_an_outage_prove_nothing(
        lab_of, procs):  # noqa: F811
    """Review of 527622e: every target down, and the answer brings back 4 that left a moment
    before (to the slots they left) while taking the others out in two steps each within the
    fraction. Their servers had waited in maint, where checks pause and the last, passing,
    result stays; `state ready` makes them UP on it at once, so they were vouched for and the
    removals were let through as a replacement: the fleet on 4 dead addresses in 2.6 s. Now a
    server put in service on a result from before maint is not vouched for a while: the first
    step is held already."""
    lab = lab_of(backends=4, interval=INTERVAL, check_inter_ms=2000, drain_timeout=0,
                 server_extra=GUARD)
    right = lab.backends
    back = served_then_freed(lab, procs, "back")
    for backend in back + right:
        backend.stop()
    wait_until(lambda: all(s.op_state == 0 for n in lab.nodes for s in n.state("app").values()
                           if s.admin == "ready"), timeout=30, what="every target DOWN")
    # 2 of 4 out, with the 4 freed before them in the window: more than the fraction, held
    # only for those, so a replacement if the kept slots answered: they do not.
    write_targets(lab.targets_file, [b.target() for b in right[2:] + back])
    wait_until(lambda: lines_with(lab, HELD), timeout=10, what="the removal held")
    wait_until(lambda: {b.name for b in back} <= set(table(lab)), timeout=10,
               what="the others back in their slots (joins are never held)")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        names = table(lab)
        assert all(b.name in names for b in right), names
        assert held_metric(lab) == 1
        time.sleep(0.3)
    assert not lines_with(lab, NOT_HELD), lines_with(lab, NOT_HELD)
