"""`hsdo status --fleet` (issue 10, item 3) through the real binary: an orchestrator (file
source, SQLite), two real HAProxy nodes and two agents named node-a and node-b
(HSDO_NODE_NAME). Both are listed as up to date; agent b is stopped (by its PID) and the table
changes: b shows as behind. The node records are the agents' own reports. The set-up is the
lifecycle lab's (lifecycle_fixtures.py), without load.
"""
import json
import time

from conftest import BASE_ENV, run_hsdo, wait_until
from lifecycle_fixtures import SlowBackend, lab_of, write_targets  # noqa: F401 (lab_of: fixture)

INTERVAL = 0.3


def table(lab):
    doc = lab.status()
    return doc["generation"], {s["id"]: s for s in doc["slots"] if s["state"] == "enabled"}


def fleet(lab):
    return json.loads(lab.hsdo("status", "--fleet", "--json").stdout)


def test_fleet_status_lists_both_agents_then_the_stopped_one_is_behind(lab_of, procs):  # noqa: F811
    lab = lab_of(backends=3, interval=INTERVAL)

    def both_up_to_date():
        doc = fleet(lab)
        states = {n["name"]: (n["live"], n["behind"], n["generations_behind"],
                              n["applied_generation"] == doc["generation"])
                  for n in doc["nodes"]}
        return doc["generation"] > 0 and states == {"node-a": (True, False, 0, True),
                                                    "node-b": (True, False, 0, True)} and doc
    doc = wait_until(both_up_to_date, timeout=20, what="a and b listed as up to date")
    assert doc["nodes_behind"] == 0
    # Each agent's hsdo version, as `hsdo --version` and hsdo_build_info say it.
    version = run_hsdo(["--version"], BASE_ENV).stdout.split()[-1]
    assert [n["version"] for n in doc["nodes"]] == [version, version], doc
    assert lab.server_metrics().get(f'hsdo_build_info{{version="{version}"}}') == 1
    wait_until(lambda: lab.server_metrics().get("hsdo_fleet_nodes_behind") == 0, timeout=10,
               what="hsdo_fleet_nodes_behind 0")
    text = lab.hsdo("status", "--fleet").stdout
    assert "2 nodes reported, 0 behind" in text, text
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["node-a", "node-b"], text

    # Both gate every slot on its health check and have seen each pass: they vouch for all
    # (the removal guard's proof of a replacement), in the JSON and in the text's column.
    def vouching():
        doc = fleet(lab)
        return all(n["gates_every_slot"] and n["unvouched"] == [] and n["pending_admission"] == []
                   for n in doc["nodes"]) and len(doc["nodes"]) == 2
    wait_until(vouching, timeout=20, what="both nodes vouching for every slot")
    text = lab.hsdo("status", "--fleet").stdout
    header = text.splitlines()[1]
    column = header.index("CHECKS VOUCH")
    assert [line[column:].split()[0] for line in text.splitlines()[2:]] == ["all", "all"], text

    # Stop agent b by its PID and change the table: b falls behind, a follows.
    procs.stop(lab.agents["b"].proc)
    before, _ = table(lab)
    fourth = SlowBackend(procs, "web-4", "127.0.0.5").start()
    write_targets(lab.targets_file, lab.targets + [fourth.target()])
    wait_until(lambda: table(lab)[0] > before, timeout=15, what="a new generation")

    def b_behind():
        doc = fleet(lab)
        by_name = {n["name"]: n for n in doc["nodes"]}
        a, b = by_name.get("node-a"), by_name.get("node-b")
        return (a and b and not a["behind"] and a["live"]
                and a["applied_generation"] == doc["generation"] and b["behind"]
                and not b["live"] and b["generations_behind"] >= 1 and (doc, b))
    doc, b = wait_until(b_behind, timeout=20, what="b behind, a up to date")
    assert doc["nodes_behind"] == 1
    assert b["applied_generation"] < doc["generation"], doc
    assert b["generations_behind"] == doc["generation"] - b["applied_generation"], doc
    wait_until(lambda: lab.server_metrics().get("hsdo_fleet_nodes_behind") == 1, timeout=15,
               what="hsdo_fleet_nodes_behind 1")
    text = lab.hsdo("status", "--fleet").stdout
    assert "2 nodes reported, 1 behind" in text, text
    b_line = next(line for line in text.splitlines() if line.startswith("node-b "))
    assert " behind " in b_line and " no " in b_line, text
    a_line = next(line for line in text.splitlines() if line.startswith("node-a "))
    assert "up to date" in a_line, text


def test_fleet_status_without_a_store_fails(tmp_path):
    """Docs review: it said "no node has reported yet", exit 0, of a store that does not exist
    (a shell without the unit's SQLITE_PATH)."""
    env = dict(BASE_ENV)
    env.update({"STORE": "sqlite", "SQLITE_PATH": str(tmp_path / "none" / "hsdo.db")})
    result = run_hsdo(["status", "--fleet"], env, check=False)
    assert result.returncode == 1
    assert result.stdout == "" and "no SQLite store" in result.stderr
    assert not (tmp_path / "none").exists()  # reading never creates the store


def test_fleet_status_of_an_unreadable_store_exits_1(tmp_path):
    (tmp_path / "hsdo.db").write_bytes(b"not a database" * 100)
    env = dict(BASE_ENV)
    env.update({"STORE": "sqlite", "SQLITE_PATH": str(tmp_path / "hsdo.db")})
    # Found in review: `hsdo status` printed an all-free table, exit 0, for a file it could not
    # read as a store.
    for args in (["status"], ["status", "--json"], ["status", "--fleet"]):
        result = run_hsdo(args, env, check=False)
        assert result.returncode == 1, result
        assert "cannot be read as an hsdo SQLite store: sqlite prepare: file is not a database" \
            in result.stderr, result
        assert result.stdout == "", result


def test_fleet_status_on_etcd_reads_node_keys_and_skips_bad_ones(procs, tmp_path):
    from etcd_fixtures import EtcdCluster, EtcdSlotTable, b64, etcd_env, seed_record

    cluster = EtcdCluster(procs, tmp_path).start()
    table = EtcdSlotTable(cluster, "/hsdo/fleet")
    table.write({2: seed_record(2, "127.0.0.1", 8080)})
    table.write({3: seed_record(3, "127.0.0.1", 8081)})  # generation 2
    now_ms = int(time.time() * 1000)

    def put(name, value):
        cluster.call("/v3/kv/put", {"key": b64(f"{table.prefix}/nodes/{name}"), "value": b64(value)})

    def record(name, generation, age_ms, sessions=None):
        return json.dumps({"name": name, "applied_generation": generation,
                           "applied_at_ms": now_ms - age_ms - 1000,
                           "reported_at_ms": now_ms - age_ms,
                           "draining_sessions": sessions or {}})

    put("a", record("a", 2, 0, {"3": 4}))
    put("b", record("b", 1, 0))
    put("c", record("c", 2, 60_000))
    put("junk", "{not json")
    put("liar", record("a", 2, 0))
    env = etcd_env(cluster, table.prefix, 10, INTERVAL="5")
    doc = json.loads(run_hsdo(["status", "--fleet", "--json"], env).stdout)
    assert doc["generation"] == 2
    by_name = {n["name"]: n for n in doc["nodes"]}
    assert sorted(by_name) == ["a", "b", "c"]
    assert (by_name["a"]["live"], by_name["a"]["behind"]) == (True, False)
    assert by_name["a"]["draining_sessions"] == {"3": 4}
    assert (by_name["b"]["live"], by_name["b"]["behind"], by_name["b"]["generations_behind"]) == \
        (True, True, 1)
    assert (by_name["c"]["live"], by_name["c"]["behind"]) == (False, True)
    assert doc["nodes_behind"] == 2
    result = run_hsdo(["status", "--fleet"], env)
    assert "3 nodes reported, 2 behind" in result.stdout
    assert "a     2        0       " in result.stdout, result.stdout
    assert "skipped" in result.stderr  # the two bad records, logged


def test_a_node_silent_for_the_expiry_has_its_record_deleted(lab_of, procs):  # noqa: F811
    """NODE_RECORD_EXPIRY: a node gone (a HAProxy node of an auto-scaled fleet replaced) is
    counted behind until then, and its record is then deleted by the leader; a live node's
    record stays. Without the expiry, b stayed listed and behind for ever."""
    lab = lab_of(backends=3, interval=INTERVAL, drain_timeout=1,
                 server_extra={"NODE_RECORD_EXPIRY": 4})
    wait_until(lambda: {n["name"] for n in fleet(lab)["nodes"]} == {"node-a", "node-b"},
               timeout=20, what="a and b listed")
    procs.stop(lab.agents["b"].proc)
    stopped = time.monotonic()
    wait_until(lambda: lab.server_metrics().get("hsdo_fleet_nodes_behind") == 1, timeout=10,
               what="b behind once silent")
    wait_until(lambda: [n["name"] for n in fleet(lab)["nodes"]] == ["node-a"], timeout=15,
               what="b's record deleted")
    deleted_after = time.monotonic() - stopped
    assert deleted_after >= 4 - 2 * INTERVAL, deleted_after  # not before its expiry
    metrics = lab.server_metrics()
    assert metrics.get("hsdo_fleet_node_records_expired_total") == 1, metrics
    assert metrics.get("hsdo_fleet_nodes_behind") == 0, metrics
    log = procs.log_of(lab.server)
    assert "node node-b has not reported for" in log, log
    time.sleep(4 + 2 * INTERVAL)  # a's record, written all along, stays
    assert [n["name"] for n in fleet(lab)["nodes"]] == ["node-a"]
    assert lab.server_metrics().get("hsdo_fleet_node_records_expired_total") == 1
