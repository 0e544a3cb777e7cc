"""Issue 11 item 5: /readyz means something, through the real binary.

- agent: 200 only when it has read the table and HAProxy matched it as of its last cycle;
  503 with a one-line reason before the first sync, when HAProxy differs, when the socket is
  gone. /healthz stays 200 all along.
- orchestrator: 200 only when it wrote (or confirmed nothing to write) after a successful
  discovery within 3 x INTERVAL; 503 before the first successful cycle and once discovery
  keeps failing.
"""
import time

import pytest

from conftest import HSDO, free_port, wait_until
from haproxy_fixtures import Backend, HaproxyNode, SlotDb, agent_env, start_agent
from safety_fixtures import probe, wait_ready
from test_server_file import write_targets

INTERVAL = 0.3


def one_line(reason):
    return reason.endswith("\n") and "\n" not in reason[:-1] and len(reason) > 1


def test_agent_readyz_follows_haproxy(procs, tmp_path):
    backend = Backend("app", "srv", slots=10)
    node = HaproxyNode(procs, "a", [backend])  # not started yet
    db = SlotDb(tmp_path / "hsdo.db", 10)
    for slot in range(1, 6):
        db.put(slot, "127.0.0.1", weight=10, port=9000 + slot)
    try:
        agent = start_agent(procs, "agent", agent_env(node, db, interval=INTERVAL), tmp_path)
        port = agent.metrics_port

        # Before the first sync: HAProxy is not there yet.
        status, reason = wait_ready(port, 503, "HAProxy")
        assert one_line(reason), reason
        assert probe(port, "/healthz")[0] == 200

        node.start()
        wait_ready(port, 200)

        # HAProxy reloaded with a config that lacks slots 4-10: it differs from the table.
        node.backends[0].slots = 3
        node.write_config()
        node.reload()
        status, reason = wait_ready(port, 503, "HAProxy differs")
        assert one_line(reason) and "srv4" in reason, reason
        assert probe(port, "/healthz")[0] == 200

        node.backends[0].slots = 10
        node.write_config()
        node.reload()
        wait_ready(port, 200)

        # The socket goes away.
        procs.stop(node.proc)
        status, reason = wait_ready(port, 503, "socket")
        assert one_line(reason), reason
        assert probe(port, "/healthz")[0] == 200
    finally:
        node.stop()


@pytest.fixture
def server(procs, tmp_path, hsdo_env):
    env = dict(hsdo_env)
    env.update({
        "SERVER_MODE": "file", "SERVER_FILE_PATH": str(tmp_path / "targets.yaml"),
        "STORE": "sqlite", "SQLITE_PATH": str(tmp_path / "hsdo.db"), "INTERVAL": str(INTERVAL),
        "EXPORTER_ADDRESS": "127.0.0.1", "EXPORTER_PORT": str(free_port()),
    })
    return env


def test_orchestrator_readyz_needs_a_recent_successful_cycle(procs, tmp_path, server):
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets: [\n")  # not YAML: every discovery fails
    proc = procs.start("server", [str(HSDO), "--server"], env=server)
    port = int(server["EXPORTER_PORT"])
    wait_until(lambda: probe(port, "/healthz")[0] == 200 or proc.poll() is not None,
               timeout=10, what="exporter up")
    assert proc.poll() is None, procs.log_of(proc)

    # Cycles run, discovery fails: not ready.
    status, reason = wait_ready(port, 503)
    assert one_line(reason), reason
    wait_until(lambda: "source failed" in procs.log_of(proc), timeout=5, what="source error")
    assert probe(port, "/readyz")[0] == 503

    write_targets(targets, [{"ip": "127.0.0.1", "port": 9001, "name": "web-1"}])
    wait_ready(port, 200)
    # Nothing left to write: still ready after 3 x INTERVAL (it confirms every cycle).
    wait_until(lambda: "joined" in procs.log_of(proc), timeout=5, what="slot 1 written")
    time.sleep(3 * INTERVAL + 0.3)  # the readiness window, not a wait for an event
    assert probe(port, "/readyz")[0] == 200

    # Discovery fails again: ready until 3 x INTERVAL have passed, then not.
    targets.write_text("targets: [\n")
    status, reason = wait_ready(port, 503, timeout=3 * INTERVAL + 5)
    assert one_line(reason) and "discovery" in reason, reason
    assert probe(port, "/healthz")[0] == 200


def test_orchestrator_standby_is_not_ready(procs, tmp_path, server):
    write_targets(tmp_path / "targets.yaml", [{"ip": "127.0.0.1", "port": 9001, "name": "web-1"}])
    procs.start("leader", [str(HSDO), "--server"], env=server)
    wait_ready(int(server["EXPORTER_PORT"]), 200)

    standby_env = dict(server, EXPORTER_PORT=str(free_port()))
    standby = procs.start("standby", [str(HSDO), "--server"], env=standby_env)
    status, reason = wait_ready(int(standby_env["EXPORTER_PORT"]), 503, "standing by")
    assert one_line(reason), reason
    assert standby.poll() is None
    assert probe(int(server["EXPORTER_PORT"]), "/readyz")[0] == 200
