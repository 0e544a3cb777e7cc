"""`hsdo set-state` and draining through the real binary: SERVER_MODE=file, STORE=sqlite.

The orchestrator runs; set-state writes an override into the slot table (exit codes, messages,
the stored AdminState column), and the orchestrator carries it through its later writes.
"""
import json
import subprocess

import pytest

from conftest import HSDO, run_hsdo, wait_until
from file_server_fixtures import server_env, slots_by_id, status, write_targets  # noqa: F401
from haproxy_fixtures import sqlite_connection

TARGETS = [
    {"ip": "127.0.0.1", "port": 9001, "name": "web-1"},
    {"ip": "127.0.0.1", "port": 9002, "name": "web-2"},
    {"ip": "127.0.0.3", "name": "twin"},
    {"ip": "127.0.0.4", "name": "twin"},
]


def admin_column(env, slot_id):
    with sqlite_connection(f"file:{env['SQLITE_PATH']}?mode=ro", uri=True) as db:
        return db.execute("SELECT AdminState FROM slots WHERE BackendServerID = ?",
                          (slot_id,)).fetchone()[0]


def set_state(env, *args):
    return run_hsdo(["set-state", *args], env, check=False)


def test_set_state_writes_the_override_and_the_orchestrator_keeps_it(tmp_path, procs,
                                                                     server_env):
    write_targets(tmp_path / "targets.yaml", TARGETS)
    procs.start("server", [str(HSDO), "--server"], env=server_env)
    wait_until(lambda: status(server_env)["enabled"] == 4, what="4 slots enabled")
    generation = status(server_env)["generation"]

    result = set_state(server_env, "web-2", "drain")
    assert result.returncode == 0, result.stderr
    assert "slot 2 (127.0.0.1:9002, web-2): drain (was ready)" in result.stdout
    assert admin_column(server_env, 2) == "drain"
    doc = status(server_env)
    assert doc["generation"] > generation
    assert slots_by_id(doc)[2]["override"] == "drain"
    assert slots_by_id(doc)[1]["override"] is None
    text = run_hsdo(["status"], server_env).stdout
    assert "1 with an operator override" in text

    # The same again: nothing to write.
    result = set_state(server_env, "2", "drain")
    assert result.returncode == 0
    assert "already drain; nothing written" in result.stdout

    # By address:port, on another slot.
    assert set_state(server_env, "127.0.0.1:9001", "maint").returncode == 0
    assert admin_column(server_env, 1) == "maint"

    # The orchestrator's next write (a new target) re-reads the table and keeps both.
    write_targets(tmp_path / "targets.yaml", TARGETS + [{"ip": "127.0.0.5", "name": "web-5"}])
    doc = wait_until(lambda: (d := status(server_env))["enabled"] == 5 and d, what="5 enabled")
    slots = slots_by_id(doc)
    assert slots[1]["override"] == "maint" and slots[2]["override"] == "drain"
    assert slots[5]["name"] == "web-5"

    # ready clears it: the column is empty again.
    result = set_state(server_env, "web-2", "ready")
    assert result.returncode == 0
    assert "ready (was drain)" in result.stdout
    assert admin_column(server_env, 2) is None
    assert slots_by_id(status(server_env))[2]["override"] is None


@pytest.mark.parametrize("target,state,message", [
    ("127.0.0.1", "maint", "127.0.0.1 names 2 slots (1, 2): give the slot number or address:port"),
    ("twin", "drain", "twin names 2 slots (3, 4): give the slot number"),
    ("nobody", "drain", "nobody names no filled slot (by name)"),
    ("10.9.9.9", "drain", "10.9.9.9 names no filled slot (by address)"),
    ("7", "drain", "slot 7 is free"),
    ("11", "drain", "there is no slot 11 (slots 1-10)"),
    ("web-1", "up", "STATE: up not in {ready,drain,maint}"),
])
def test_set_state_exits_2_when_the_target_is_not_one_filled_slot(tmp_path, procs, server_env,
                                                                  target, state, message):
    write_targets(tmp_path / "targets.yaml", TARGETS)
    procs.start("server", [str(HSDO), "--server"], env=server_env)
    wait_until(lambda: status(server_env)["enabled"] == 4, what="4 slots enabled")
    generation = status(server_env)["generation"]
    result = set_state(server_env, target, state)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert result.stdout == ""
    assert status(server_env)["generation"] == generation  # nothing written


def test_set_state_without_a_store_fails_and_creates_nothing(tmp_path, server_env):
    server_env["SQLITE_PATH"] = str(tmp_path / "missing" / "hsdo.db")
    result = set_state(server_env, "1", "drain")
    assert result.returncode == 1
    assert "no SQLite store" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_file_state_drain_drains_then_frees_at_the_timeout(tmp_path, procs, server_env):
    server_env["HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT"] = "2"
    write_targets(tmp_path / "targets.yaml", TARGETS)
    procs.start("server", [str(HSDO), "--server"], env=server_env)
    wait_until(lambda: status(server_env)["enabled"] == 4, what="4 slots enabled")
    assert set_state(server_env, "web-2", "maint").returncode == 0

    # web-2 asks to drain: its slot drains with its override, and keeps its address.
    drained = [dict(t, state="drain") if t["name"] == "web-2" else t for t in TARGETS]
    write_targets(tmp_path / "targets.yaml", drained)
    doc = wait_until(lambda: (d := status(server_env))["draining"] == 1 and d, what="draining")
    slot = slots_by_id(doc)[2]
    assert slot["state"] == "draining" and slot["address"] == "127.0.0.1"
    assert slot["port"] == 9002 and slot["override"] == "maint" and slot["draining_since"]
    # Written as the seed's "disabled" (a Python agent takes it out), with DrainingSince.
    with sqlite_connection(f"file:{server_env['SQLITE_PATH']}?mode=ro", uri=True) as db:
        row = db.execute("SELECT BackendServerStatus, IPAddress, DrainingSince FROM slots"
                         " WHERE BackendServerID = 2").fetchone()
    assert row[0] == "disabled" and row[1] == "127.0.0.1" and row[2]

    # Freed at the timeout (no node reports here), and the override goes with it.
    doc = wait_until(lambda: (d := status(server_env))["draining"] == 0 and d, timeout=10,
                     what="freed at the timeout")
    assert slots_by_id(doc)[2] == {"id": 2, "state": "free"}
    assert admin_column(server_env, 2) is None

    # A state that is neither ready nor drain: the file is refused, the table stays.
    write_targets(tmp_path / "targets.yaml", [dict(TARGETS[0], state="drian")] + TARGETS[2:])
    log = tmp_path / "server.log"
    wait_until(lambda: 'state "drian" must be ready or drain' in log.read_text(),
               what="the file error")
    assert status(server_env)["enabled"] == 3


def test_help_documents_set_state(hsdo_env):
    text = run_hsdo(["set-state", "--help"], hsdo_env).stdout
    assert "TARGET" in text and "{ready,drain,maint}" in text
    assert "set-state" in run_hsdo(["--help"], hsdo_env).stdout
    assert subprocess.run([str(HSDO), "set-state", "1"], env=hsdo_env, capture_output=True,
                          timeout=10).returncode == 2


def write_report(env, name, applied, sessions, reported_ms=None):
    """A node record as an agent writes it (src/store/node_report_codec.h)."""
    import time
    now_ms = int(time.time() * 1000) if reported_ms is None else reported_ms
    record = json.dumps({"name": name, "applied_generation": applied, "applied_at_ms": now_ms,
                         "reported_at_ms": now_ms,
                         "draining_sessions": {str(k): v for k, v in sessions.items()}})
    with sqlite_connection(env["SQLITE_PATH"], timeout=2) as db:
        db.execute("INSERT OR REPLACE INTO nodes (name, report) VALUES (?, ?)", (name, record))


def metric(env, name):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{env['EXPORTER_PORT']}/metrics",
                                  timeout=2).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_cycles(env, count):
    """Returns once the orchestrator has completed `count` more cycles (its histogram)."""
    start = metric(env, "hsdo_orchestrator_cycle_duration_seconds_count")
    wait_until(lambda: metric(env, "hsdo_orchestrator_cycle_duration_seconds_count")
               >= start + count, what=f"{count} cycles")


def test_a_drained_slot_is_freed_by_the_node_reports_before_the_timeout(tmp_path, procs,
                                                                        server_env):
    """The orchestrator reads the agents' node records (written here by hand): a slot whose
    target left drains; it is freed once every live node has applied that generation and
    reports 0 sessions for it, long before HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT."""
    server_env["HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT"] = "120"
    write_targets(tmp_path / "targets.yaml", TARGETS)
    procs.start("server", [str(HSDO), "--server"], env=server_env)
    wait_until(lambda: status(server_env)["enabled"] == 4, what="4 slots enabled")
    write_targets(tmp_path / "targets.yaml", [t for t in TARGETS if t["name"] != "web-2"])
    doc = wait_until(lambda: (d := status(server_env))["draining"] == 1 and d, what="draining")
    generation = doc["generation"]
    assert wait_until(lambda: metric(server_env, "hsdo_slots_draining") == 1, what="gauge")

    # Node a has drained it, node b still has sessions, node c is dead (its report is older
    # than the drain timeout: a node silent for less, first read, might be paused, and holds
    # the drain).
    old_ms = int((__import__("time").time() - 300) * 1000)
    write_report(server_env, "a", generation, {2: 0})
    write_report(server_env, "b", generation, {2: 3})
    write_report(server_env, "c", generation - 1, {2: 9}, reported_ms=old_ms)
    # c is behind (stale); a and b are not.
    wait_until(lambda: metric(server_env, "hsdo_fleet_nodes_behind") == 1, what="1 behind")
    wait_cycles(server_env, 3)
    assert status(server_env)["draining"] == 1
    # b has not applied the draining generation yet (a late node): its 0 does not count.
    write_report(server_env, "b", generation - 1, {2: 0})
    wait_cycles(server_env, 3)
    assert status(server_env)["draining"] == 1
    # b drained too: freed within a few cycles, far before 120 s.
    write_report(server_env, "a", generation, {2: 0})
    write_report(server_env, "b", generation, {2: 0})
    doc = wait_until(lambda: (d := status(server_env))["draining"] == 0 and d, timeout=5,
                     what="freed by the reports")
    assert slots_by_id(doc)[2] == {"id": 2, "state": "free"}
    log = (tmp_path / "server.log").read_text()
    assert "web-2) drained on every live node, slot freed" in log
