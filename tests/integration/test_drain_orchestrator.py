"""The orchestrator's side of draining with real agents and HAProxy: a target that leaves
drains (HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT=60) and is freed as soon as both agents report 0
sessions for it, not at the timeout; with one agent stopped, the live one alone decides.
(The load tests with failed-request counts are tests/integration/test_lifecycle*.py.)"""
import json
import time

from conftest import BASE_ENV, HSDO, free_port, run_hsdo, wait_until
from haproxy_fixtures import Backend, HaproxyNode, HttpBackends, SlotDb, agent_env, start_agent
from test_agent_end_to_end import write_targets

INTERVAL = 0.3


def status(env):
    return json.loads(run_hsdo(["status", "--json"], env).stdout)


def test_a_leaving_target_drains_and_is_freed_by_the_agents_reports(procs, tmp_path):
    nodes = {n: HaproxyNode(procs, n, [Backend("app", "srv", slots=10, check=True)]).start()
             for n in ("a", "b")}
    http = HttpBackends(4)
    try:
        targets = [http.target(i) for i in range(4)]
        write_targets(tmp_path / "targets.yaml", targets)
        db = SlotDb(tmp_path / "hsdo.db", 10)
        env = dict(BASE_ENV)
        env.update({
            "SERVER_MODE": "file", "SERVER_FILE_PATH": str(tmp_path / "targets.yaml"),
            "STORE": "sqlite", "SQLITE_PATH": str(db.path), "INTERVAL": str(INTERVAL),
            "HAPROXY_BACKEND_SERVERS_LIST_SIZE": "10",
            "HAPROXY_BACKEND_SERVER_MIN_WEIGHT": "10", "HAPROXY_BACKEND_SERVER_MAX_WEIGHT": "10",
            "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT": "60",
            "EXPORTER_ADDRESS": "127.0.0.1", "EXPORTER_PORT": str(free_port()),
        })
        procs.start("server", [str(HSDO), "--server"], env=env)
        agents = {n: start_agent(procs, f"agent-{n}",
                                 agent_env(nodes[n], db, interval=str(INTERVAL), HSDO_NODE_NAME=n),
                                 tmp_path)
                  for n in ("a", "b")}

        def fleet_up_to_date():
            doc = json.loads(run_hsdo(["status", "--fleet", "--json"], env).stdout)
            return doc["generation"] > 0 and len(doc["nodes"]) == 2 and doc["nodes_behind"] == 0
        wait_until(fleet_up_to_date, timeout=20, what="both agents up to date")

        # Target 2 (slot 2) leaves: its slot drains on both nodes, then is freed by the
        # reports (no traffic: 0 sessions) long before the 60 s timeout.
        write_targets(tmp_path / "targets.yaml", [targets[0]] + targets[2:])
        left = time.monotonic()
        doc = wait_until(lambda: (d := status(env))["draining"] == 1 and d, what="draining")
        assert {s["id"]: s["state"] for s in doc["slots"]}[2] == "draining"
        wait_until(lambda: nodes["a"].state("app")[2].admin == "drain"
                   and nodes["b"].state("app")[2].admin == "drain", timeout=10,
                   what="slot 2 in drain on both nodes")
        doc = wait_until(lambda: (d := status(env))["draining"] == 0 and d, timeout=15,
                         what="freed by the reports")
        freed_after = time.monotonic() - left
        assert {s["id"]: s["state"] for s in doc["slots"]}[2] == "free"
        assert freed_after < 15, freed_after
        print(f"slot freed {freed_after:.2f} s after the target left (INTERVAL {INTERVAL} s)")

        # Agent b stopped: once its report is older than 3 x INTERVAL, a alone decides.
        procs.stop(agents["b"].proc)
        write_targets(tmp_path / "targets.yaml", [targets[0], targets[3]])
        left = time.monotonic()
        doc = wait_until(lambda: (d := status(env))["draining"] == 1 and d, what="draining")
        doc = wait_until(lambda: (d := status(env))["draining"] == 0 and d, timeout=15,
                         what="freed with agent b stopped")
        assert {s["id"]: s["state"] for s in doc["slots"]}[3] == "free"
        print(f"with b stopped: freed {time.monotonic() - left:.2f} s after the target left")
    finally:
        procs.stop_all()
        for node in nodes.values():
            node.stop()
        http.close()
