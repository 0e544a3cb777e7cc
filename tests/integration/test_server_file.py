"""The orchestrator through the real binary: SERVER_MODE=file, STORE=sqlite."""
import json
import subprocess
import urllib.request

import pytest

from conftest import HSDO, run_hsdo, wait_until
from file_server_fixtures import server_env, slots_by_id, status, write_targets  # noqa: F401

TARGETS = [
    {"ip": "127.0.0.1", "port": 9001, "name": "web-1", "asg": "asg-a", "az": "eu-west-1a"},
    {"ip": "127.0.0.1", "port": 9002, "name": "web-2", "asg": "asg-a", "az": "eu-west-1a"},
    {"ip": "127.0.0.2", "port": 9001, "name": "web-3", "asg": "asg-b", "az": "eu-west-1b"},
    {"ip": "::1", "port": 9004, "name": "web-4", "asg": "asg-b", "az": "eu-west-1b"},
    {"ip": "127.0.0.5", "name": "web-5"},
]


def test_fills_table_then_only_the_dropped_slot_changes(tmp_path, procs, server_env):
    write_targets(tmp_path / "targets.yaml", TARGETS)
    server = procs.start("server", [str(HSDO), "--server"], env=server_env)

    doc = wait_until(lambda: (d := status(server_env))["enabled"] == 5 and d,
                     what="5 slots enabled")
    before = slots_by_id(doc)
    assert [before[i]["name"] for i in range(1, 6)] == [t["name"] for t in TARGETS]
    assert before[4]["address"] == "::1" and before[4]["port"] == 9004
    assert before[5]["port"] is None
    assert all(before[i]["state"] == "free" for i in range(6, 11))
    assert all(before[i]["weight"] == 1 for i in range(1, 6))

    # Drop web-3 (slot 3): only slot 3 changes, nothing else moves.
    write_targets(tmp_path / "targets.yaml", [t for t in TARGETS if t["name"] != "web-3"])
    doc = wait_until(lambda: (d := status(server_env))["enabled"] == 4 and d,
                     what="slot 3 freed")
    after = slots_by_id(doc)
    assert after[3] == {"id": 3, "state": "free"}
    for i in (1, 2, 4, 5):
        assert after[i] == before[i], f"slot {i} changed"
    assert doc["generation"] == 2  # one write to fill, one for the drop

    # The text form shows it too.
    text = run_hsdo(["status"], server_env).stdout
    assert "4 of 10 slots enabled" in text
    assert "3     free" in text
    assert "127.0.0.2" not in text

    # A new target takes the lowest free slot, except the one freed a moment ago, which is kept
    # for web-3 should it come back within MASS_REMOVAL_DELAY (ARCHITECTURE.md invariant 2).
    write_targets(tmp_path / "targets.yaml",
                  [t for t in TARGETS if t["name"] != "web-3"] + [{"ip": "127.0.0.9", "name": "web-9"}])
    doc = wait_until(lambda: (d := status(server_env))["enabled"] == 5 and d, what="slot taken")
    assert slots_by_id(doc)[6]["name"] == "web-9"
    assert slots_by_id(doc)[3] == {"id": 3, "state": "free"}

    assert procs.stop(server) == 0


def test_the_orchestrator_never_makes_a_store_init_table_did_not(tmp_path, procs, server_env):
    """A mistyped or deleted SQLITE_PATH used to be a new, empty store on which every target
    was placed again (every key moved): the orchestrator now exits 2 there, making nothing."""
    write_targets(tmp_path / "targets.yaml", TARGETS[:2])
    server_env["SQLITE_PATH"] = str(tmp_path / "typo" / "hsdo.db")
    result = subprocess.run([str(HSDO), "--server"], env=server_env, capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.splitlines() if "error" in l]
    assert len(lines) == 1 and "hsdo init-table" in lines[0] and "typo" in lines[0], result.stderr
    assert not (tmp_path / "typo").exists()

    made = run_hsdo(["init-table"], server_env)
    assert "made" in made.stderr
    assert "is there" in run_hsdo(["init-table"], server_env).stderr  # idempotent
    server = procs.start("server", [str(HSDO), "--server"], env=server_env, init_store=False)
    wait_until(lambda: status(server_env)["enabled"] == 2, what="2 slots enabled")
    # Run again on a store in use (after an upgrade, or by a second fleet): it says so.
    again = run_hsdo(["init-table"], server_env).stderr
    assert "already holds a table: generation" in again, again
    assert "2 filled slots of groups asg-a;" in again, again

    # Deleted while it ran and the orchestrator restarted: not made again either.
    assert procs.stop(server) == 0
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "typo" / f"hsdo.db{suffix}").unlink(missing_ok=True)
    result = subprocess.run([str(HSDO), "--server"], env=server_env, capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "typo" / "hsdo.db").exists()


def test_invalid_file_keeps_the_last_good_list(tmp_path, procs, server_env):
    write_targets(tmp_path / "targets.yaml", TARGETS[:3])
    server = procs.start("server", [str(HSDO), "--server"], env=server_env)
    wait_until(lambda: status(server_env)["enabled"] == 3, what="3 slots")
    (tmp_path / "targets.yaml").write_text("targets:\n  - ip: 127.0.0.1\n  broken: [\n")
    metrics_url = f"http://127.0.0.1:{server_env['EXPORTER_PORT']}/metrics"

    def source_errors():
        body = urllib.request.urlopen(metrics_url, timeout=2).read().decode()
        for line in body.splitlines():
            if line.startswith("hsdo_orchestrator_source_errors_total"):
                return float(line.split()[-1])
        return 0.0

    wait_until(lambda: source_errors() >= 2, what="source errors counted")
    assert status(server_env)["enabled"] == 3
    log = procs.log_of(server)
    assert "line 3" in log and "keeping the last good target list" in log
    procs.stop(server)


def test_overflow_is_reported(tmp_path, procs, server_env):
    server_env["HAPROXY_BACKEND_SERVERS_LIST_SIZE"] = "3"
    write_targets(tmp_path / "targets.yaml", TARGETS)
    server = procs.start("server", [str(HSDO), "--server"], env=server_env)
    doc = wait_until(lambda: (d := status(server_env))["enabled"] == 3 and d, what="3 slots")
    assert doc["overflow"] == 2
    assert "2 targets left out" in run_hsdo(["status"], server_env).stdout
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{server_env['EXPORTER_PORT']}/metrics", timeout=2).read().decode()
    assert "hsdo_slots_overflow 2" in metrics
    assert "2 targets left out" in procs.log_of(server)
    procs.stop(server)


def test_healthz_and_weight_metric(tmp_path, procs, server_env):
    write_targets(tmp_path / "targets.yaml", TARGETS[:2])
    procs.start("server", [str(HSDO), "--server"], env=server_env)
    base = f"http://127.0.0.1:{server_env['EXPORTER_PORT']}"
    wait_until(lambda: status(server_env)["enabled"] == 2, what="2 slots")
    assert urllib.request.urlopen(base + "/healthz", timeout=2).status == 200
    metrics = urllib.request.urlopen(base + "/metrics", timeout=2).read().decode()
    assert 'hsdo_server_weight{asg="asg-a",id="1",ip="127.0.0.1",name="web-1"} 1' in metrics


def test_an_ipv6_exporter_is_logged_and_answers_at_a_bracketed_url(tmp_path, procs, server_env):
    # IPv6 review: the log said http://::1:PORT/metrics, a URL nothing can open.
    server_env["EXPORTER_ADDRESS"] = "::1"
    write_targets(tmp_path / "targets.yaml", TARGETS[:1])
    server = procs.start("server", [str(HSDO), "--server"], env=server_env)
    url = f"http://[::1]:{server_env['EXPORTER_PORT']}/metrics"
    wait_until(lambda: f"metrics on {url}" in procs.log_of(server), what="the exporter's URL")
    assert urllib.request.urlopen(url, timeout=2).status == 200


def test_sigterm_stops_within_one_interval(tmp_path, procs, server_env):
    server_env["INTERVAL"] = "30"
    write_targets(tmp_path / "targets.yaml", TARGETS[:1])
    server = procs.start("server", [str(HSDO), "--server"], env=server_env)
    wait_until(lambda: status(server_env)["enabled"] == 1, what="1 slot")
    server.terminate()
    assert server.wait(timeout=5) == 0


@pytest.mark.parametrize("variable,value", [
    ("INTERVAL", "0"),
    ("HAPROXY_BACKEND_SERVER_MIN_WEIGHT", "20"),
    ("HAPROXY_BACKEND_SERVER_MAX_WEIGHT", "257"),
    ("SERVER_MODE", "k8s"),
    ("HAPROXY_BACKEND_SERVERS_LIST_SIZE", "0"),
    ("EXPORTER_PORT", "70000"),
    ("CONSUL_PASSING_ONLY", "maybe"),  # (AZ_LIMITER, the agent's, is only a warning here)
])
def test_bad_config_exits_2_naming_the_variable(server_env, variable, value):
    server_env[variable] = value
    result = subprocess.run([str(HSDO), "--server"], env=server_env, capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and f'"{value}"' in lines[0]


def test_missing_role_setting_exits_2(server_env):
    del server_env["SERVER_FILE_PATH"]
    result = subprocess.run([str(HSDO), "--server"], env=server_env, capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 2
    assert "SERVER_FILE_PATH" in result.stderr


def test_config_file_and_environment_override(tmp_path, server_env):
    config = tmp_path / "env.yaml"
    config.write_text(f"SQLITE_PATH: {tmp_path / 'from-file.db'}\n"
                      "HAPROXY_BACKEND_SERVERS_LIST_SIZE: 4\n")
    env = {k: v for k, v in server_env.items() if k != "SQLITE_PATH"}
    run_hsdo(["--config", str(config), "init-table"], env)
    assert (tmp_path / "from-file.db").exists()  # SQLITE_PATH from the file
    result = run_hsdo(["--config", str(config), "status", "--json"], env)
    assert json.loads(result.stdout)["list_size"] == 4
    env["HAPROXY_BACKEND_SERVERS_LIST_SIZE"] = "6"
    assert json.loads(run_hsdo(["--config", str(config), "status", "--json"], env).stdout)[
        "list_size"] == 6
    missing = subprocess.run([str(HSDO), "--config", str(tmp_path / "none.yaml"), "status"],
                             env=env, capture_output=True, text=True, timeout=10)
    assert missing.returncode == 2 and "none.yaml" in missing.stderr


def test_status_on_a_missing_store_fails_and_does_not_create_it(tmp_path, server_env):
    """Docs review: `hsdo status` on a store that does not exist (a shell without the unit's
    SQLITE_PATH) printed an all-free table and exited 0: an empty fleet, and success."""
    server_env["SQLITE_PATH"] = str(tmp_path / "missing" / "hsdo.db")
    for args in (["status"], ["status", "--json"]):
        result = subprocess.run([str(HSDO), *args], env=server_env, capture_output=True,
                                text=True, timeout=10)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stdout == ""
        assert "no SQLite store" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_help_and_version(hsdo_env):
    help_text = run_hsdo(["--help"], hsdo_env).stdout
    for word in ("--server", "--client", "--config", "--debug", "--dry-run", "status"):
        assert word in help_text
    assert run_hsdo(["--version"], hsdo_env).stdout.startswith("hsdo ")
    assert subprocess.run([str(HSDO)], env=hsdo_env, capture_output=True,
                          timeout=10).returncode == 2
