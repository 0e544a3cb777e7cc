"""The agent's fast paths (issue 12), untimed: each test proves a mechanism by giving the agent
an INTERVAL far longer than the test's deadline, so only the mechanism can make it pass.

- a reload is repaired without waiting for INTERVAL (the stats socket is re-created: inotify;
  a new Pid in `show info`);
- in steady state the agent reads only `show info`, and a hand edit is still repaired within
  HAPROXY_FULL_SYNC_INTERVAL (the full read);
- an SQLite write wakes the agent before its poll would (inotify on the db and -wal files);
- an idle agent's threads do not wake between cycles;
- an idle SQLite agent's own node reports (written into the file it watches) cost no cycle,
  and its cycles read no generation (the watch sees every write; the poll is a fallback every
  HAPROXY_FULL_SYNC_INTERVAL).
"""
import time
from pathlib import Path

from conftest import wait_until
from haproxy_fixtures import Backend, agent_env
from test_agent_haproxy import lab, matches  # noqa: F401 (lab is a fixture)

LONG_INTERVAL = 30  # seconds: no test here may wait for a poll


def state_reads(agent):
    return agent.metric('hsdo_agent_haproxy_reads_total{kind="state"}')


def info_reads(agent):
    return agent.metric('hsdo_agent_haproxy_reads_total{kind="info"}')


def test_reload_is_repaired_without_waiting_for_interval(lab):  # noqa: F811
    node = lab.node("a", [Backend("app", "srv", slots=10)])
    db = lab.db()
    expected = {slot: (f"10.0.2.{slot}", 80, 4) for slot in (1, 3, 5)}
    for slot, (ip, _, weight) in expected.items():
        db.put(slot, ip, weight=weight)
    agent = lab.agent("agent", agent_env(node, db, interval=LONG_INTERVAL))
    wait_until(lambda: matches(node, "app", expected), timeout=10, what="slots applied")
    for reload in range(3):
        node.reload()
        wait_until(lambda: matches(node, "app", expected), timeout=10, interval=0.02,
                   what=f"slots restored after reload {reload + 1}")
    assert agent.metric("hsdo_agent_haproxy_restarts_total") >= 1
    assert agent.metric("hsdo_agent_drift_repairs_total") >= 3


def test_steady_state_reads_show_info_and_full_sync_repairs_a_hand_edit(lab):  # noqa: F811
    node = lab.node("a", [Backend("app", "srv", slots=10)])
    db = lab.db()
    expected = {slot: (f"10.0.3.{slot}", 80, 6) for slot in (2, 4)}
    for slot, (ip, _, weight) in expected.items():
        db.put(slot, ip, weight=weight)
    agent = lab.agent("agent", agent_env(node, db, interval="0.1",
                                         HAPROXY_FULL_SYNC_INTERVAL="2"))
    wait_until(lambda: matches(node, "app", expected), timeout=10, what="slots applied")
    # Steady state: cycles keep coming, but only as `show info`.
    info_start, state_start, start = info_reads(agent), state_reads(agent), time.monotonic()
    wait_until(lambda: info_reads(agent) >= info_start + 5, timeout=10, what="5 steady cycles")
    # Full reads only at the full sync (every 2 s), however slow the machine made these cycles.
    full_syncs = 1 + int((time.monotonic() - start) / 2)
    assert state_reads(agent) <= state_start + full_syncs

    # A hand edit: nothing tells the agent, the full read every 2 s repairs it.
    node.cmd("set server app/srv2 weight 1")
    assert node.state("app")[2].weight == 1
    wait_until(lambda: matches(node, "app", expected), timeout=10, interval=0.05,
               what="the hand edit repaired by the full sync")
    assert agent.metric("hsdo_agent_drift_repairs_total") >= 1


def test_sqlite_write_wakes_the_agent_before_its_poll(lab):  # noqa: F811
    node = lab.node("a", [Backend("app", "srv", slots=10)])
    db = lab.db()
    db.put(1, "10.0.4.1", weight=2)
    agent = lab.agent("agent", agent_env(node, db, interval=LONG_INTERVAL))
    wait_until(lambda: matches(node, "app", {1: ("10.0.4.1", 80, 2)}), timeout=10,
               what="first slot applied")
    for slot in range(2, 5):
        db.put(slot, f"10.0.4.{slot}", weight=2)
        wait_until(lambda: matches(node, "app", {s: (f"10.0.4.{s}", 80, 2)
                                                 for s in range(1, slot + 1)}),
                   timeout=10, interval=0.02, what=f"slot {slot} applied after the write")
    assert agent.metric('hsdo_agent_store_reads_total{kind="table"}') >= 4


def woken(pid: int, name: str = "") -> dict:
    """Voluntary context switches of each thread of `pid` (how often it woke from a sleep),
    of the threads called `name` when it is given."""
    counts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        if name and (task / "comm").read_text().strip() != name:
            continue
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                counts[int(task.name)] = int(line.split()[1])
    return counts


def test_an_idle_agent_wakes_only_for_its_cycles(lab):  # noqa: F811
    """Between cycles nothing ticks: not the signal watcher (it sleeps on a signalfd), not the
    /metrics exporter without a connection, not the file watchers without a write."""
    node = lab.node("a", [Backend("app", "srv", slots=10)])
    db = lab.db()
    db.put(1, "10.0.5.1", weight=2)
    agent = lab.agent("agent", agent_env(node, db, interval=LONG_INTERVAL))
    wait_until(lambda: matches(node, "app", {1: ("10.0.5.1", 80, 2)}), timeout=10,
               what="slot applied")
    pid = agent.proc.pid
    time.sleep(0.5)  # past the watchers' confirmations of the write above
    before = woken(pid)
    time.sleep(2)  # 10 ticks of the old 200 ms signal watcher, 2 of the old exporter
    after = woken(pid)
    busy = {tid: after[tid] - before[tid] for tid in before if tid != pid and tid in after}
    assert len(busy) >= 3, f"expected the signal, exporter and watcher threads: {busy}"
    assert all(n == 0 for n in busy.values()), f"threads woke while idle: {busy}"


def test_an_idle_agent_s_own_node_reports_cost_no_cycle(lab):  # noqa: F811
    """The agent writes its node report into the SQLite file it watches every 2 x INTERVAL;
    only a new table generation may wake it, so an idle agent runs its timed cycles and no
    more (before: its watcher woke it after each report, and again at each confirmation), and
    its own reports do not wake it at all, nor its watcher's thread (they are written with the
    watch narrowed): no generation read for them (before: one more after each report). And since the watch sees every write to the store, its cycles read no
    generation either: the store is read when the watcher signals a write, and otherwise every
    HAPROXY_FULL_SYNC_INTERVAL (10 s, so at most once in this window of about 2 s)."""
    node = lab.node("a", [Backend("app", "srv", slots=10)])
    db = lab.db()
    db.put(1, "10.0.6.1", weight=2)
    interval = 0.25
    agent = lab.agent("agent", agent_env(node, db, interval=interval, HSDO_NODE_NAME="node-a"))
    wait_until(lambda: matches(node, "app", {1: ("10.0.6.1", 80, 2)}), timeout=10,
               what="slot applied")
    reports = "hsdo_agent_node_reports_total"
    wait_until(lambda: agent.metric(reports) >= 2, timeout=10, what="two node reports")
    start = time.monotonic()
    before = agent.metrics()
    watchers_before = woken(agent.proc.pid, "hsdo-watch")
    wait_until(lambda: agent.metric(reports) >= before[reports] + 4, timeout=15,
               what="four more node reports")
    watchers_after = woken(agent.proc.pid, "hsdo-watch")
    after = agent.metrics()
    elapsed = time.monotonic() - start
    ran = after["hsdo_agent_cycle_duration_seconds_count"] - \
        before["hsdo_agent_cycle_duration_seconds_count"]
    # Cycles start every INTERVAL: at most one more than the intervals in the window, and one
    # for slack (the window is measured around two scrapes).
    timed = int(elapsed / interval) + 2
    assert ran <= timed, (f"{ran} cycles in {elapsed:.2f} s at INTERVAL={interval} s "
                          f"(at most {timed} timed) with {after[reports] - before[reports]:.0f} "
                          "node reports")
    generation = 'hsdo_agent_store_reads_total{kind="generation"}'
    generation_reads = after[generation] - before[generation]
    assert elapsed < 10, f"the window ({elapsed:.1f} s) must be shorter than the fallback's 10 s"
    # The store's and the socket's watchers: the reports are written with the store's watch
    # narrowed, so they wake neither (before: the store's woke at each report).
    assert len(watchers_before) == 2, f"expected two watcher threads: {watchers_before}"
    watcher_wakes = {tid: watchers_after[tid] - watchers_before[tid] for tid in watchers_before}
    assert all(n == 0 for n in watcher_wakes.values()), (
        f"watcher threads woke for {after[reports] - before[reports]:.0f} node reports: "
        f"{watcher_wakes}")
    assert generation_reads <= 1, (
        f"{generation_reads:.0f} generation reads for {ran:.0f} cycles and "
        f"{after[reports] - before[reports]:.0f} node reports")
