"""Scenario: Consul (the double) -> one orchestrator -> SQLite -> two agents -> two real HAProxy
nodes, with loopback HTTP backends registered as Consul service instances.

Checks end to end that health and registration changes in Consul reach both HAProxy nodes
promptly, that both nodes put every instance in the same slot, and that they send every hashed
key to the same backend.
"""
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import HSDO, free_port, wait_until
from haproxy_fixtures import (Backend, HaproxyNode, HttpBackends, agent_env, backend_of_keys,
                              start_agent)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "consul_double"))
from double_client import ConsulDouble  # noqa: E402


SLOTS = 10
AGENT_INTERVAL = "0.5"


@pytest.fixture
def lab(procs, tmp_path):
    state = SimpleNamespace(nodes=[], http=[])
    yield state
    procs.stop_all()
    for node in state.nodes:
        node.stop()
    for http in state.http:
        http.close()


def ready_servers(node, backend="app"):
    """{slot: (addr, port)} of the servers in `backend` that are not in maintenance."""
    return {slot: (s.addr, s.port) for slot, s in node.state(backend).items()
            if s.admin == "ready"}


def test_consul_changes_reach_two_haproxy_nodes_identically(procs, tmp_path, hsdo_env, lab):
    http = HttpBackends(5, prefix="web")
    lab.http.append(http)
    double = ConsulDouble(procs)
    ports = [server.server_address[1] for server in http.servers]
    # Four instances to begin with; web-5 joins later.
    for i in range(4):
        double.register("web", f"web-{i + 1}", address="127.0.0.1", port=ports[i],
                        node=f"node-{i + 1}", node_meta={"zone": f"zone-{i % 2}"})

    db = tmp_path / "hsdo.db"
    server_env = dict(hsdo_env)
    server_env.update({
        "SERVER_MODE": "consul", "STORE": "sqlite", "SQLITE_PATH": str(db),
        "CONSUL_API_URL": double.url, "CONSUL_SERVICE_NAME": "web",
        "CONSUL_AZ_META_KEY": "zone", "INTERVAL": "30",
        "HAPROXY_BACKEND_SERVERS_LIST_SIZE": str(SLOTS),
        "HAPROXY_BACKEND_SERVER_MIN_WEIGHT": "10", "HAPROXY_BACKEND_SERVER_MAX_WEIGHT": "10",
        "EXPORTER_PORT": str(free_port()), "EXPORTER_ADDRESS": "127.0.0.1",
    })
    server = procs.start("hsdo-server", [str(HSDO), "--server"], env=server_env,
                         cwd=str(tmp_path))
    wait_until(lambda: db.exists(), timeout=10, what="the orchestrator's store")

    backend = Backend("app", "srv", slots=SLOTS, check=True)
    nodes = []
    store = SimpleNamespace(path=db, size=SLOTS)
    for name in ("a", "b"):
        node = HaproxyNode(procs, name, [backend]).start()
        lab.nodes.append(node)
        nodes.append(node)
        start_agent(procs, f"agent-{name}", agent_env(node, store, interval=AGENT_INTERVAL),
                    tmp_path)

    def both_hold(expected_ports):
        views = [ready_servers(node) for node in nodes]
        return (views[0] == views[1]
                and sorted(port for _, port in views[0].values()) == sorted(expected_ports))

    wait_until(lambda: both_hold(ports[:4]), timeout=15, what="4 instances on both nodes")
    assert server.poll() is None, procs.log_of(server)
    first = ready_servers(nodes[0])
    assert sorted(first) == [1, 2, 3, 4]  # the oldest registrations take the lowest slots
    for node in nodes:
        wait_until(lambda node=node: all(node.state("app")[s].op_state == 2 for s in first),
                   timeout=10, what=f"servers up on {node.name}")

    keys = [f"/object/{i}" for i in range(1000)]
    a = backend_of_keys(nodes[0], "app", keys)
    b = backend_of_keys(nodes[1], "app", keys)
    assert a == b
    assert set(a.values()) == {f"web-{i}" for i in range(1, 5)}

    # web-2's check turns critical: it leaves both nodes; no other server moves.
    start = time.monotonic()
    double.set_check("web", "web-2", "critical")
    wait_until(lambda: both_hold([ports[0], ports[2], ports[3]]), timeout=10, interval=0.02,
               what="web-2 gone from both nodes")
    leave_latency = time.monotonic() - start
    after_leave = ready_servers(nodes[0])
    assert {s: v for s, v in first.items() if v[1] != ports[1]} == after_leave
    a2 = backend_of_keys(nodes[0], "app", keys)
    assert a2 == backend_of_keys(nodes[1], "app", keys)
    # Consistent hashing: only the keys that web-2 served moved.
    assert all(a2[k] == a[k] for k in keys if a[k] != "web-2")

    # web-5 registers: it takes a free slot on both nodes, not the one web-2 left a moment ago
    # (kept for web-2's return within MASS_REMOVAL_DELAY).
    start = time.monotonic()
    double.register("web", "web-5", address="127.0.0.1", port=ports[4], node="node-5")
    wait_until(lambda: both_hold([ports[0], ports[2], ports[3], ports[4]]), timeout=10,
               interval=0.02, what="web-5 on both nodes")
    join_latency = time.monotonic() - start
    freed = next(s for s, v in first.items() if v[1] == ports[1])
    assert ready_servers(nodes[0])[5] == ("127.0.0.1", ports[4])
    assert freed not in ready_servers(nodes[0])
    print(f"Consul change -> both HAProxy nodes: leave {leave_latency:.2f}s, "
          f"join {join_latency:.2f}s (agent INTERVAL {AGENT_INTERVAL}s, server INTERVAL 30s)")
    # An agent cycle is at most 0.5 s; the orchestrator's part is the blocking query.
    assert leave_latency < 2.0 and join_latency < 2.0
