"""The whole chain through the real binary: a targets file -> `hsdo --server` (file source,
SQLite) -> `hsdo --client` -> a real HAProxy, with real loopback HTTP backends."""
import json
import os

from conftest import BASE_ENV, HSDO, free_port, run_hsdo, wait_until
from haproxy_fixtures import (Backend, HaproxyNode, HttpBackends, SlotDb, agent_env,
                              backend_of_keys, start_agent)


def write_targets(path, targets):
    lines = ["targets:"]
    for t in targets:
        lines += [f"  - ip: \"{t['ip']}\"", f"    port: {t['port']}", f"    name: {t['name']}",
                  f"    asg: {t['asg']}"]
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def test_targets_file_to_haproxy(procs, tmp_path):
    node = HaproxyNode(procs, "a", [Backend("app", "srv", slots=10, check=True)]).start()
    http = HttpBackends(6)
    try:
        targets = [http.target(i) for i in range(5)]
        write_targets(tmp_path / "targets.yaml", targets)
        db = SlotDb(tmp_path / "hsdo.db", 10)
        server_env = dict(BASE_ENV)
        server_env.update({
            "SERVER_MODE": "file", "SERVER_FILE_PATH": str(tmp_path / "targets.yaml"),
            "STORE": "sqlite", "SQLITE_PATH": str(db.path), "INTERVAL": "0.3",
            "HAPROXY_BACKEND_SERVERS_LIST_SIZE": "10",
            "HAPROXY_BACKEND_SERVER_MIN_WEIGHT": "10", "HAPROXY_BACKEND_SERVER_MAX_WEIGHT": "10",
            "EXPORTER_ADDRESS": "127.0.0.1", "EXPORTER_PORT": str(free_port()),
        })
        procs.start("server", [str(HSDO), "--server"], env=server_env)
        agent = start_agent(procs, "agent", agent_env(node, db, interval="0.3"), tmp_path)

        def table():
            doc = json.loads(run_hsdo(["status", "--json"], server_env).stdout)
            return {s["id"]: s for s in doc["slots"] if s["state"] == "enabled"}

        def haproxy_matches_table():
            slots = table()
            state = node.state("app")
            for slot_id, server in state.items():
                if slot_id in slots:
                    s = slots[slot_id]
                    if (server.addr, server.port, server.weight, server.admin) != \
                            (s["address"], s["port"], s["weight"], "ready"):
                        return False
                elif server.admin != "maint":
                    return False
            return len(slots)

        assert wait_until(haproxy_matches_table, timeout=15, what="HAProxy matching") == 5
        names = set(backend_of_keys(node, "app", [f"/k/{i}" for i in range(300)]).values())
        assert names == {t["name"] for t in targets}

        # One target leaves the file: only its slot changes, then a new one takes it.
        before = table()
        leaving = next(s for s, v in before.items() if v["name"] == "web-2")
        write_targets(tmp_path / "targets.yaml", [t for t in targets if t["name"] != "web-2"])
        wait_until(lambda: leaving not in table() and haproxy_matches_table() == 4, timeout=15,
                   what="the leaving target's slot in maint")
        state = node.state("app")
        for slot_id, slot in before.items():
            if slot_id != leaving:
                assert (state[slot_id].addr, state[slot_id].port) == (slot["address"], slot["port"])
        write_targets(tmp_path / "targets.yaml",
                      [t for t in targets if t["name"] != "web-2"] + [http.target(5)])
        wait_until(lambda: table().get(leaving, {}).get("name") == "web-6"
                   and haproxy_matches_table() == 5, timeout=15,
                   what="the new target in the freed slot")
        assert agent.metric("hsdo_agent_runtime_command_errors_total{kind=\"addr\"}") == 0
    finally:
        procs.stop_all()
        node.stop()
        http.close()
