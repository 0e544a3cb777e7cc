"""The whole chain through the real binary: a targets file -> `hsdo --server` (file source,
SQLite) -> `hsdo --client` -> a real HAProxy, with real loopback HTTP backends."""
import contextlib
import json
import os
import time

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


def start_server(procs, tmp_path, db_path):
    server_env = dict(BASE_ENV)
    server_env.update({
        "SERVER_MODE": "file", "SERVER_FILE_PATH": str(tmp_path / "targets.yaml"),
        "STORE": "sqlite", "SQLITE_PATH": str(db_path), "INTERVAL": "0.3",
        "HAPROXY_BACKEND_SERVERS_LIST_SIZE": "10",
        "HAPROXY_BACKEND_SERVER_MIN_WEIGHT": "10", "HAPROXY_BACKEND_SERVER_MAX_WEIGHT": "10",
        "EXPORTER_ADDRESS": "127.0.0.1", "EXPORTER_PORT": str(free_port()),
    })
    return procs.start("server", [str(HSDO), "--server"], env=server_env), server_env


def table(server_env):
    doc = json.loads(run_hsdo(["status", "--json"], server_env).stdout)
    return {s["id"]: s for s in doc["slots"] if s["state"] == "enabled"}


def haproxy_matches_table(node, server_env):
    """How many slots HAProxy serves, when it serves exactly the table's; else False."""
    slots = table(server_env)
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


@contextlib.contextmanager
def chain(procs, tmp_path, backends, targets, db_dir=None, **agent_extra):
    """HAProxy, `backends` HTTP backends, the first `targets` of them in the targets file, the
    orchestrator and an agent (`agent_extra`: more of its variables), until HAProxy serves the
    table, whose store is hsdo.db in `db_dir` (default tmp_path). Yields (node, http, server,
    server_env, agent); stops everything at the end."""
    node = HaproxyNode(procs, "a", [Backend("app", "srv", slots=10, check=True)]).start()
    http = HttpBackends(backends)
    try:
        write_targets(tmp_path / "targets.yaml", [http.target(i) for i in range(targets)])
        (db_dir or tmp_path).mkdir(exist_ok=True)
        db = SlotDb((db_dir or tmp_path) / "hsdo.db", 10)
        server, server_env = start_server(procs, tmp_path, db.path)
        agent = start_agent(procs, "agent", agent_env(node, db, interval="0.3", **agent_extra),
                            tmp_path)
        assert wait_until(lambda: haproxy_matches_table(node, server_env), timeout=15,
                          what="HAProxy matching") == targets
        yield node, http, server, server_env, agent
    finally:
        procs.stop_all()
        node.stop()
        http.close()


def test_targets_file_to_haproxy(procs, tmp_path):
    with chain(procs, tmp_path, 6, 5) as (node, http, _, server_env, agent):
        targets = [http.target(i) for i in range(5)]

        def matches():
            return haproxy_matches_table(node, server_env)

        names = set(backend_of_keys(node, "app", [f"/k/{i}" for i in range(300)]).values())
        assert names == {t["name"] for t in targets}

        # One target leaves the file: only its slot changes, then a new one takes it.
        before = table(server_env)
        leaving = next(s for s, v in before.items() if v["name"] == "web-2")
        write_targets(tmp_path / "targets.yaml", [t for t in targets if t["name"] != "web-2"])
        wait_until(lambda: leaving not in table(server_env) and matches() == 4, timeout=15,
                   what="the leaving target's slot in maint")
        state = node.state("app")
        for slot_id, slot in before.items():
            if slot_id != leaving:
                assert (state[slot_id].addr, state[slot_id].port) == (slot["address"], slot["port"])
        write_targets(tmp_path / "targets.yaml",
                      [t for t in targets if t["name"] != "web-2"] + [http.target(5)])
        # In a free slot other than the one web-2 left a moment ago (kept for its return).
        wait_until(lambda: any(v.get("name") == "web-6" for v in table(server_env).values())
                   and matches() == 5, timeout=15, what="the new target in a free slot")
        assert leaving not in table(server_env)
        assert agent.metric("hsdo_agent_runtime_command_errors_total{kind=\"addr\"}") == 0


def test_the_agent_follows_a_store_made_again(procs, tmp_path):
    """The store is deleted (all three files) while the orchestrator is stopped and made again
    by its restart: the running agent reads the new file (docs/stores.md), where before it read
    the deleted one it had opened for ever."""
    with chain(procs, tmp_path, 4, 3) as (node, http, server, server_env, agent):
        assert procs.stop(server) == 0
        db_path = server_env["SQLITE_PATH"]
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db_path + suffix):
                os.remove(db_path + suffix)
        # The new store places these in slots 1 and 2, unlike the old one (web-1 was in 1).
        write_targets(tmp_path / "targets.yaml", [http.target(3), http.target(2)])
        _, server_env = start_server(procs, tmp_path, db_path)
        wait_until(lambda: table(server_env).get(1, {}).get("name") == "web-4", timeout=15,
                   what="the new store's table")
        assert wait_until(lambda: haproxy_matches_table(node, server_env), timeout=15,
                          what="HAProxy matching the new store") == 2
        assert "was replaced (made again or restored): reading the new file" in \
            procs.log_of(agent.proc)


def test_a_store_made_again_under_a_running_orchestrator_gets_its_table_back(procs, tmp_path):
    """The store is deleted (all three files) and made again by `hsdo init-table` while the
    orchestrator runs: it follows the new file, takes the lease there and writes back the table
    it held, so that no target changes slot; the agent follows the new file and HAProxy never
    changes. (Before, the orchestrator wrote nothing to the new file, and the restart its error
    asked for planned from the empty store: every target placed anew.)"""
    with chain(procs, tmp_path, 4, 3) as (node, http, server, server_env, agent):
        before = {slot_id: (s["address"], s["port"]) for slot_id, s in table(server_env).items()}
        # Listed in another order: planned from an empty store, the slots would change.
        write_targets(tmp_path / "targets.yaml", [http.target(2), http.target(1), http.target(0)])
        time.sleep(1)
        db_path = server_env["SQLITE_PATH"]
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db_path + suffix):
                os.remove(db_path + suffix)
        run_hsdo(["init-table"], server_env)

        def written_back():
            slots = table(server_env)
            return slots and {i: (s["address"], s["port"]) for i, s in slots.items()} == before
        wait_until(written_back, timeout=20, what="the held table written into the new store")
        assert wait_until(lambda: haproxy_matches_table(node, server_env), timeout=15,
                          what="HAProxy matching the new store") == 3
        assert server.poll() is None
        log = procs.log_of(server)
        assert "was made again: writing to it from now on" in log, log
        assert "was replaced (made again or restored): reading the new file" in \
            procs.log_of(agent.proc)


def test_the_agent_follows_a_store_made_again_in_a_new_directory(procs, tmp_path):
    """The store's directory is moved away and the restarted orchestrator makes the store again
    in a new directory at the same path, which the agent's inotify watch (on the old directory)
    never sees: the agent says so, reads the store every cycle meanwhile instead of waiting for
    its fallback read every HAPROXY_FULL_SYNC_INTERVAL (60 s here), and watches the new
    directory. (Before, its own node reports, still written into the moved file until a store
    is at the path, happened to wake it within 2 x INTERVAL, and the new directory was never
    watched.)"""
    store_dir = tmp_path / "store"
    with chain(procs, tmp_path, 4, 3, db_dir=store_dir, HAPROXY_FULL_SYNC_INTERVAL=60) as \
            (node, http, server, server_env, agent):
        assert procs.stop(server) == 0
        os.rename(store_dir, tmp_path / "store.old")
        write_targets(tmp_path / "targets.yaml", [http.target(3), http.target(2)])
        _, server_env = start_server(procs, tmp_path, server_env["SQLITE_PATH"])
        wait_until(lambda: table(server_env).get(1, {}).get("name") == "web-4", timeout=15,
                   what="the new store's table")
        assert wait_until(lambda: haproxy_matches_table(node, server_env), timeout=15,
                          what="HAProxy matching the new store") == 2
        assert "was removed or moved away" in procs.log_of(agent.proc)
        wait_until(lambda: "is there again: watching its files again" in procs.log_of(agent.proc),
                   timeout=5, what="the new directory watched")
        # Watched: a change now reaches HAProxy although the fallback read is a minute away.
        # (Past the writes that closing the old file makes in the old directory, and the
        # watcher's confirmations of them, up to 375 ms later: they would wake the agent by
        # chance.)
        time.sleep(3)
        write_targets(tmp_path / "targets.yaml", [http.target(3)])
        assert wait_until(lambda: haproxy_matches_table(node, server_env) == 1, timeout=15,
                          what="HAProxy matching the change") == 1
