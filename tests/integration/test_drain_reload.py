"""A draining slot across a HAProxy soft reload, with the agent on a TCP stats socket.

After `haproxy -sf`, the old process goes on serving the connections it accepted, on draining
slots too, and no socket reaches its sessions: the agent asks the new process, which has none.
On a unix socket the agent sees the old process end (its pid on this host); on a TCP socket, or
with HAProxy in another PID namespace, it cannot, and it took the old process for gone: the node
reported the draining slot drained (0 sessions) under a request still in flight, and the
orchestrator could free the slot and complete the instance's termination under it. The agent
now takes such a process to run for its HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT after the reload.
"""
import json
import threading
import time
import urllib.request

from conftest import wait_until
from haproxy_fixtures import (HAPROXY, Backend, HaproxyNode, SlotDb, agent_env, sqlite_connection,
                              start_agent)
from lifecycle_fixtures import SlowBackend

HOLD = 6          # the agent's HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT (s)
REQUEST = 9       # how long the backend takes to answer (s): HAProxy's timeouts are 10 s


def node_report(db_path, name):
    with sqlite_connection(f"file:{db_path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT report FROM nodes WHERE name = ?", (name,)).fetchone()
    return json.loads(row[0]) if row else None


def drain(db_path, slot):
    """Makes `slot` draining, as the orchestrator writes it (the seed's disabled, and
    DrainingSince), in a write that bumps the generation."""
    since = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
    with sqlite_connection(db_path, timeout=10) as db:
        db.execute("UPDATE slots SET BackendServerStatus = 'disabled', DrainingSince = ?"
                   " WHERE BackendServerID = ?", (since, slot))
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")


def test_a_drain_is_not_reported_done_while_a_process_replaced_unseen_may_serve_it(
        procs, tmp_path):
    slow = SlowBackend(procs, "web-1", "127.0.0.9", delay=REQUEST).start()
    node = HaproxyNode(procs, "a", [Backend("app", "srv", slots=4)]).start()
    node.started = time.monotonic()
    try:
        check_drain_across_reload(procs, tmp_path, slow, node)
    finally:
        node.stop()


def check_drain_across_reload(procs, tmp_path, slow, node):
    db = SlotDb(tmp_path / "hsdo.db", 4)
    db.put(1, slow.ip, port=slow.port, weight=10)
    env = agent_env(node, db, interval="0.5", HSDO_NODE_NAME="a",
                    HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT=str(HOLD))
    env["HAPROXY_SOCKET_PATH"] = f"ipv4@127.0.0.1:{node.tcp_socket_port}"
    start_agent(procs, "agent", env, tmp_path)
    wait_until(lambda: node.state("app")[1].admin == "ready" and node.state("app")[1].weight == 10, timeout=15,
               what="slot 1 ready")

    answers = []

    def request():
        with urllib.request.urlopen(node.url("app", "/held"), timeout=30) as reply:
            answers.append((reply.status, time.monotonic()))

    # An agent that cannot see HAProxy's processes takes one that started less than the hold
    # ago for a reload's (its predecessor may serve on): past that, the node reports sessions.
    time.sleep(max(0.0, node.started + HOLD + 0.5 - time.monotonic()))
    client = threading.Thread(target=request)
    client.start()
    drain(db.path, 1)
    wait_until(lambda: (node_report(db.path, "a") or {}).get("draining_sessions") == {"1": 1},
               timeout=5, what="the node reporting the request in flight on draining slot 1")

    # A soft reload; the old process serves the request until it is answered.
    old = node.proc
    node.generation += 1
    node.proc = procs.start(f"haproxy-a-{node.generation}",
                            [HAPROXY, "-f", str(node.config), "-db", "-sf", str(old.pid)])
    reloaded = time.monotonic()
    wait_until(lambda: node._pid_on_socket() == node.proc.pid, timeout=10,
               what="the new process answering")
    assert old.poll() is None, "the old process left before its request was answered"

    # Until the request is answered, and for the hold after the reload, the node never reports
    # the slot drained.
    reports = []
    while time.monotonic() < reloaded + HOLD - 1:
        reports.append((node_report(db.path, "a") or {}).get("draining_sessions"))
        time.sleep(0.1)
    assert {"1": 0} not in reports, (
        f"slot 1 reported drained {reports.index({'1': 0}) * 0.1:.1f}s into the hold, while "
        f"the replaced process served a request on it (old process running: "
        f"{old.poll() is None})")
    assert {} in reports

    client.join(timeout=REQUEST + 5)
    assert answers and answers[0][0] == 200, answers
    # Then the hold ends, and the node reports the slot drained.
    wait_until(lambda: (node_report(db.path, "a") or {}).get("draining_sessions") == {"1": 0},
               timeout=HOLD + 5, what="slot 1 reported drained once the hold is over")
    print(f"request answered {answers[0][1] - reloaded:.1f}s after the reload")


def test_a_frontend_named_as_its_backend_never_hides_the_draining_sessions(procs, tmp_path):
    """`frontend app` declared before `backend app`: HAProxy answers `show stat app` for the
    first proxy of that name, the frontend, which has no servers. The node then never reported
    the draining slot's sessions (with a second backend it reported the other's 0: drained).
    The agent reads them by the backend's id."""
    slow = SlowBackend(procs, "web-1", "127.0.0.9", delay=4).start()
    node = HaproxyNode(procs, "a", [Backend("app", "srv", slots=4)], frontend_prefix="").start()
    try:
        db = SlotDb(tmp_path / "hsdo.db", 4)
        db.put(1, slow.ip, port=slow.port, weight=10)
        env = agent_env(node, db, interval="0.3", HSDO_NODE_NAME="a")
        start_agent(procs, "agent", env, tmp_path)
        wait_until(lambda: node.state("app")[1].admin == "ready", timeout=15, what="slot 1 ready")
        client = threading.Thread(
            target=lambda: urllib.request.urlopen(node.url("app", "/held"), timeout=30).read(),
            daemon=True)
        client.start()
        drain(db.path, 1)
        wait_until(lambda: (node_report(db.path, "a") or {}).get("draining_sessions") == {"1": 1},
                   timeout=3, what="the node reporting the request in flight on draining slot 1")
        client.join(timeout=10)
        wait_until(lambda: (node_report(db.path, "a") or {}).get("draining_sessions") == {"1": 0},
                   timeout=5, what="slot 1 reported drained once the request is answered")
    finally:
        node.stop()


def test_an_agent_restarted_with_a_reload_holds_the_drain_while_the_old_process_serves(
        procs, tmp_path):
    """Configuration management reloads HAProxy and restarts the agent together. The new agent
    never saw the replaced process, which serves a request on a draining slot until it is
    answered; on a unix socket the agent finds it among the host's processes at its start and
    reports the slot drained only once it ended (it reported it drained at once)."""
    slow = SlowBackend(procs, "web-1", "127.0.0.9", delay=6).start()
    node = HaproxyNode(procs, "a", [Backend("app", "srv", slots=4)]).start()
    try:
        db = SlotDb(tmp_path / "hsdo.db", 4)
        db.put(1, slow.ip, port=slow.port, weight=10)
        env = agent_env(node, db, interval="0.3", HSDO_NODE_NAME="a")
        agent = start_agent(procs, "agent", env, tmp_path)
        wait_until(lambda: node.state("app")[1].admin == "ready", timeout=15, what="slot 1 ready")
        answers = []

        def request():
            with urllib.request.urlopen(node.url("app", "/held"), timeout=30) as reply:
                answers.append(reply.status)
        client = threading.Thread(target=request, daemon=True)
        client.start()
        drain(db.path, 1)
        wait_until(lambda: (node_report(db.path, "a") or {}).get("draining_sessions") == {"1": 1},
                   timeout=5, what="the node reporting the request in flight on draining slot 1")

        procs.stop(agent.proc)
        old = node.proc
        node.generation += 1
        node.proc = procs.start(f"haproxy-a-{node.generation}",
                                [HAPROXY, "-f", str(node.config), "-db", "-sf", str(old.pid)])
        wait_until(lambda: node._pid_on_socket() == node.proc.pid, timeout=10,
                   what="the new process answering")
        start_agent(procs, "agent-2", env, tmp_path)
        reports = []
        while client.is_alive():
            assert old.poll() is None or not client.is_alive(), "old process left early"
            reports.append((node_report(db.path, "a") or {}).get("draining_sessions"))
            time.sleep(0.1)
        assert {"1": 0} not in reports[:-3], (
            f"slot 1 reported drained while the replaced process served a request on it: "
            f"{reports}")
        assert answers == [200], answers
        wait_until(lambda: old.poll() is not None, timeout=10, what="the old process ending")
        wait_until(lambda: (node_report(db.path, "a") or {}).get("draining_sessions") == {"1": 0},
                   timeout=5, what="slot 1 reported drained once the old process ended")
    finally:
        node.stop()
