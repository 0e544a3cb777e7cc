"""Configuration through the real binary: the Python HSDO's names (issue 11.1), where the file
is found (11.3), JSON logs (11.6), strict validation (8.9) and the `level admin` check with a
real HAProxy."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import HSDO, ROOT, free_port, wait_until
from haproxy_fixtures import HAPROXY, SlotDb, runtime

TESTDATA = ROOT / "tests" / "testdata"


def run(args, env, cwd=None):
    return subprocess.run([str(HSDO), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=20, stdin=subprocess.DEVNULL)


def effective(result):
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_python_hsdo_file_gives_the_same_effective_settings(hsdo_env, tmp_path):
    python = effective(run(["--config", str(TESTDATA / "python-hsdo-env.yaml"), "config"],
                           hsdo_env, cwd=tmp_path))
    hsdo = effective(run(["--config", str(TESTDATA / "hsdo-names-env.yaml"), "config"],
                         hsdo_env, cwd=tmp_path))
    assert python == hsdo
    assert python["CONSUL_API_URL"] == "http://127.0.0.1:8500"
    assert python["HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL"] == "15"
    assert python["AZ_LIMITER"] == "true"
    assert python["EXPORTER_PORT"] == "9000"
    assert python["HAPROXY_BACKEND_LIST"] == "http-back:web:8080,api-back:api:9090"
    # No "unknown variable" warning for any of the Python names.
    result = run(["--config", str(TESTDATA / "python-hsdo-env.yaml"), "config"], hsdo_env)
    assert "unknown" not in result.stderr and "warning" not in result.stderr, result.stderr


def test_python_file_runs_the_agent(hsdo_env, tmp_path, haproxies):
    """The Python-shaped file drives a real agent dry run against a real HAProxy, started with
    the Python HSDO's short flag (-c). Its backends listen on different ports (8080, 9090): each
    serves the target at its own, though the record carries a port (a Consul service's), as
    the Python agents did (before, both were sent to the record's port)."""
    haproxy = haproxies("admin", (("http-back", "web"), ("api-back", "api"),
                                  ("http-fallback", "fb")))
    db = SlotDb(tmp_path / "hsdo.db", 20)
    db.put(1, "127.0.0.1", weight=5, name="web-1", asg="asg-a", port=7000)
    env = dict(hsdo_env, CLIENT_HAPROXY_SOCKET_PATH=haproxy.socket, STORE="sqlite",
               SQLITE_PATH=str(db.path))
    result = run(["--config", str(TESTDATA / "python-hsdo-env.yaml"), "-c", "--dry-run"],
                 env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    commands = result.stdout
    for backend, base, port in (("http-back", "web", 8080), ("api-back", "api", 9090)):
        assert f"set server {backend}/{base}1 addr 127.0.0.1 port {port}" in commands, commands


def test_both_spellings_with_different_values_exit_2_naming_both(hsdo_env):
    env = dict(hsdo_env, HAPROXY_BACKEND_NAME="a", CLIENT_HAPROXY_BACKEND_NAME="b")
    result = run(["config"], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'HAPROXY_BACKEND_NAME="a"' in lines[0] and 'CLIENT_HAPROXY_BACKEND_NAME="b"' in lines[0]


def test_config_file_lookup_order_and_first_log_line(hsdo_env, tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "env.yaml").write_text("INTERVAL: 3\n")
    named = tmp_path / "named.yaml"
    named.write_text("INTERVAL: 4\n")
    flag = tmp_path / "flag.yaml"
    flag.write_text("INTERVAL: 5\n")

    cwd = run(["config"], hsdo_env, cwd=tmp_path)
    assert effective(cwd)["INTERVAL"] == "3"
    assert "configuration: read conf/env.yaml" in cwd.stderr.splitlines()[0]

    env = dict(hsdo_env, HSDO_CONFIG=str(named))
    via_env = run(["config"], env, cwd=tmp_path)
    assert effective(via_env)["INTERVAL"] == "4"
    assert f"read {named} (from HSDO_CONFIG)" in via_env.stderr.splitlines()[0]

    via_flag = run(["--config", str(flag), "config"], env, cwd=tmp_path)
    assert effective(via_flag)["INTERVAL"] == "5"
    assert f"read {flag} (from --config)" in via_flag.stderr.splitlines()[0]
    # The common options go after the subcommand too (they were refused there: exit 2).
    after = run(["config", "--config", str(flag)], env, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert effective(after)["INTERVAL"] == "5"

    empty = tmp_path / "empty"
    empty.mkdir()
    none = run(["config"], hsdo_env, cwd=empty)
    assert effective(none)["INTERVAL"] == "1"
    first = none.stderr.splitlines()[0]
    assert "no config file" in first or "/etc/hsdo/env.yaml" in first, first

    missing = run(["config"], dict(hsdo_env, HSDO_CONFIG=str(tmp_path / "none.yaml")))
    assert missing.returncode == 2 and "none.yaml" in missing.stderr
    # Found in review: the error did not say where the path came from.
    assert "(given by HSDO_CONFIG)" in missing.stderr, missing.stderr


def test_a_directory_as_config_exits_2_with_one_line(hsdo_env, tmp_path):
    result = run(["--config", str(tmp_path), "status"], hsdo_env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0], result.stderr


def test_print_config_masks_secrets(hsdo_env):
    env = dict(hsdo_env, CONSUL_HTTP_TOKEN="tok-5ecret", ETCD_PASSWORD="pw-5ecret",
               AWS_SECRET_ACCESS_KEY="sk-5ecret")
    result = run(["config"], env)
    settings = effective(result)
    assert settings["CONSUL_HTTP_TOKEN"] == "<hidden>"
    assert "5ecret" not in result.stdout + result.stderr


def one_error_line(result, variable):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0], lines[0]
    return lines[0]


def test_strict_validation_exits_2_naming_the_variable(hsdo_env, tmp_path):
    cases = [
        ("CONSUL_HTTP_TOKEN", "abc\r\nX-Injected: 1"),
        ("AWS_REGION", "x@127.0.0.1:5000/#"),
        ("AWS_DEFAULT_REGION", "x@127.0.0.1:5000/#"),
        ("DYNAMODB_TABLE_NAME", "t"),
        ("CONSUL_API_URL", "http://"),
        ("AWS_ENDPOINT_URL", "http:///"),
        ("AWS_ENDPOINT_URL_DYNAMODB", "http://:5000"),
        ("ETCD_ENDPOINTS", "http://"),
        ("ETCD_KEY", str(tmp_path / "missing.key")),
        ("HAPROXY_SOCKET_PATH", "/tmp/" + "s" * 120),
    ]
    for variable, value in cases:
        line = one_error_line(run(["status"], dict(hsdo_env, **{variable: value})), variable)
        if variable == "CONSUL_HTTP_TOKEN":
            assert "abc" not in line and "Injected" not in line, line
    # Consul's files, by the orchestrator of the Consul source, the one role that reads them.
    consul = dict(hsdo_env, SERVER_MODE="consul", CONSUL_API_URL="http://127.0.0.1:1",
                  CONSUL_SERVICE_NAME="web", CONSUL_CACERT=str(tmp_path / "missing-ca.pem"),
                  SQLITE_PATH=str(tmp_path / "none.db"))  # not the host's /var/lib/hsdo
    one_error_line(run(["--server"], consul), "CONSUL_CACERT")
    assert run(["status"], consul).returncode != 2
    # A credential in a URL is refused, and not printed.
    for value in ("http://127.0.0.1:8500/?token=tok-5ecret", "http://u:tok-5ecret@127.0.0.1:8500"):
        line = one_error_line(run(["config"], dict(hsdo_env, CONSUL_API_URL=value)),
                              "CONSUL_API_URL")
        assert "tok-5ecret" not in line and "=<hidden: it has user info" in line, line


def test_an_invalid_setting_of_the_other_role_is_a_warning(hsdo_env, tmp_path):
    """Found in review (rolling upgrades): a value an older hsdo accepted (MASS_REMOVAL_DELAY:
    0) stopped every upgraded agent sharing the fleet's env.yaml, though only the orchestrator
    reads it. The agent warns and goes on; the orchestrator and `hsdo config` refuse it."""
    env = dict(hsdo_env, MASS_REMOVAL_DELAY="0", SQLITE_PATH=str(tmp_path / "hsdo.db"),
               HAPROXY_SOCKET_PATH=str(tmp_path / "no-haproxy.sock"),
               HAPROXY_BACKEND_NAME="app", HAPROXY_BACKEND_BASE_NAME="srv",
               SERVER_MODE="file", SERVER_FILE_PATH=str(tmp_path / "targets.yaml"))
    agent = run(["--client", "--dry-run"], env)
    assert agent.returncode == 1, agent.stderr  # the dry run finds no HAProxy, past the config
    assert 'MASS_REMOVAL_DELAY="0"' in agent.stderr and "only the orchestrator reads it" in \
        agent.stderr, agent.stderr
    one_error_line(run(["--server"], env), "MASS_REMOVAL_DELAY")
    one_error_line(run(["config"], env), "MASS_REMOVAL_DELAY")


def test_the_version_names_the_commit_built(hsdo_env):
    """Review of rolling upgrades: every build said 0.1.0, so `hsdo status --fleet` could not
    tell which nodes an upgrade had left. A build from a git checkout names its commit."""
    version = run(["--version"], hsdo_env)
    assert version.returncode == 0, version.stderr
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode == 0:
        assert version.stdout.startswith(f"hsdo 0.1.0+g{head.stdout.strip()}"), version.stdout
    else:  # no git, or a tree git will not read: the project's version alone
        assert version.stdout.strip() == "hsdo 0.1.0", version.stdout


def test_a_misspelt_variable_in_the_environment_is_a_warning(hsdo_env):
    result = run(["config"], dict(hsdo_env, HAPROXY_BACKEND_SERVER_DRAIN_TIMOUT="300"))
    assert effective(result)["HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT"] == "0"
    assert ("environment variable HAPROXY_BACKEND_SERVER_DRAIN_TIMOUT is not a setting of hsdo "
            "(ignored): did you mean HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT?") in result.stderr, \
        result.stderr


def test_missing_targets_file_at_start_exits_2(hsdo_env, tmp_path):
    env = dict(hsdo_env, SERVER_MODE="file", SERVER_FILE_PATH=str(tmp_path / "targets.yaml"),
               STORE="sqlite", SQLITE_PATH=str(tmp_path / "hsdo.db"))
    one_error_line(run(["--server"], env), "SERVER_FILE_PATH")


def test_a_consul_token_file_that_cannot_hold_a_token_exits_2(hsdo_env, tmp_path):
    token_file = tmp_path / "consul-token"
    token_file.write_text("3f1b9c2e-token\nX-Injected: 1\n")
    env = dict(hsdo_env, SERVER_MODE="consul", CONSUL_API_URL="http://127.0.0.1:1",
               CONSUL_SERVICE_NAME="web", CONSUL_HTTP_TOKEN_FILE=str(token_file),
               STORE="sqlite", SQLITE_PATH=str(tmp_path / "hsdo.db"))
    result = run(["--server"], env)
    one_error_line(result, "CONSUL_HTTP_TOKEN_FILE")
    assert "holds a control character" in result.stderr and "3f1b9c2e" not in result.stderr
    # Both set (a host that exports both for Consul's CLI): CONSUL_HTTP_TOKEN, as before the file
    # setting existed, and a warning (review: an exit 2 stopped such hosts at the upgrade).
    token_file.write_text("3f1b9c2e-token\n")
    both = run(["config"], dict(env, CONSUL_HTTP_TOKEN="another"))
    assert both.returncode == 0, both.stderr
    assert ("CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE are both set: CONSUL_HTTP_TOKEN is used, "
            "and the file is not read") in both.stderr, both.stderr


def test_json_logs_are_one_object_per_line(hsdo_env, tmp_path):
    env = dict(hsdo_env, LOG_FORMAT="json", SQLITE_PATH=str(tmp_path / "none.db"))
    result = run(["status"], env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # no store there
    lines = result.stderr.splitlines()
    assert len(lines) >= 2
    objects = [json.loads(line) for line in lines]
    assert all({"time", "level", "message"} <= set(o) for o in objects)
    assert objects[0]["message"].startswith("configuration:")
    bad = run(["status"], dict(env, INTERVAL="0"), cwd=tmp_path)
    assert bad.returncode == 2
    assert json.loads(bad.stderr.strip())["level"] == "error"
    # Found in review: spelt as the setting accepts it, but not in lower case, it was text here.
    bad = run(["status"], dict(env, INTERVAL="0", LOG_FORMAT=" JSON"), cwd=tmp_path)
    assert bad.returncode == 2
    assert json.loads(bad.stderr.strip())["level"] == "error"


def test_journald_priorities_when_stderr_is_the_journal(hsdo_env, tmp_path):
    """systemd sets JOURNAL_STREAM to stderr's device:inode; lines then start with <N>."""
    log = tmp_path / "stderr.log"
    env = dict(hsdo_env, SQLITE_PATH=str(tmp_path / "none.db"))
    with open(log, "w") as err:
        st = os.fstat(err.fileno())
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        result = subprocess.run([str(HSDO), "status"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=err, timeout=20)
    assert result.returncode == 1
    lines = log.read_text().splitlines()
    assert lines[0].startswith("<6>") and "configuration:" in lines[0], lines
    assert any(line.startswith("<3>") for line in lines), lines  # "no SQLite store" error
    # Another file's JOURNAL_STREAM (stderr is not the journal): no prefix.
    env["JOURNAL_STREAM"] = "1:1"
    plain = run(["status"], env, cwd=tmp_path)
    assert not plain.stderr.startswith("<"), plain.stderr


# --------------------------------------------------------------------------------------------
# The stats socket level (issue 8.9): a real HAProxy with `level operator` vs `level admin`.
# --------------------------------------------------------------------------------------------
class LeveledHaproxy:
    """An HAProxy whose only stats socket is at `level`, with server-template backends."""

    def __init__(self, procs, level, backends=(("app", "srv"),), master=False):
        self.dir = Path(tempfile.mkdtemp(prefix="hl", dir="/tmp"))  # short: sun_path
        self.socket = str(self.dir / "s.sock")
        self.master_socket = str(self.dir / "m.sock")  # `-W -S`: the master CLI
        lines = ["global", f"  stats socket {self.socket} level {level}", "defaults",
                 "  mode http", "  timeout connect 1s", "  timeout client 5s",
                 "  timeout server 5s"]
        for name, base in backends:
            lines += [f"backend {name}", f"  server-template {base} 1-20 127.0.0.2:80 disabled"]
        config = self.dir / "haproxy.cfg"
        config.write_text("\n".join(lines) + "\n")
        master_args = ["-W", "-S", self.master_socket] if master else []
        self.proc = procs.start(f"haproxy-{level}",
                                [HAPROXY, *master_args, "-f", str(config), "-db"])

        def answers():
            try:
                return "Uptime" in runtime(self.socket, "show info", timeout=1) or None
            except OSError:
                return None
        wait_until(answers, timeout=10, what=f"haproxy at level {level} answering")


@pytest.fixture
def haproxies(procs):
    made = []

    def make(level, backends=(("app", "srv"),), master=False):
        made.append(LeveledHaproxy(procs, level, backends, master))
        return made[-1]
    yield make
    for h in made:
        procs.stop(h.proc)
        shutil.rmtree(h.dir, ignore_errors=True)


def agent_env(hsdo_env, socket, db):
    return dict(hsdo_env, HAPROXY_SOCKET_PATH=socket, HAPROXY_BACKEND_LIST="app:srv:80",
                HAPROXY_BACKEND_SERVERS_LIST_SIZE="20", STORE="sqlite", SQLITE_PATH=str(db.path),
                INTERVAL="0.2", EXPORTER_ADDRESS="127.0.0.1", EXPORTER_PORT=str(free_port()))


def test_agent_refuses_a_socket_below_level_admin(hsdo_env, tmp_path, haproxies):
    db = SlotDb(tmp_path / "hsdo.db", 20)
    db.put(1, "127.0.0.1", weight=5)
    for level in ("operator", "user"):
        haproxy = haproxies(level)
        result = run(["--client"], agent_env(hsdo_env, haproxy.socket, db))
        line = [l for l in result.stderr.splitlines() if "error" in l]
        assert result.returncode == 2, result.stderr
        assert line and "HAPROXY_SOCKET_PATH" in line[0] and "level admin" in line[0], result.stderr


def test_agent_pointed_at_the_master_cli_exits_2_naming_it(hsdo_env, tmp_path, haproxies):
    """Found in review: the master CLI (`haproxy -W -S`, common in containers) prompts
    "master> " and knows no `show servers state`; the agent waited for ever, logging "timed out"."""
    db = SlotDb(tmp_path / "hsdo.db", 20)
    db.put(1, "127.0.0.1", weight=5)
    haproxy = haproxies("admin", master=True)
    result = run(["--client"], agent_env(hsdo_env, haproxy.master_socket, db))
    assert result.returncode == 2, result.stderr
    assert "master CLI" in result.stderr and "HAPROXY_SOCKET_PATH" in result.stderr, result.stderr


def test_agent_starts_on_a_socket_at_level_admin(hsdo_env, tmp_path, procs, haproxies):
    db = SlotDb(tmp_path / "hsdo.db", 20)
    db.put(1, "127.0.0.1", weight=5)
    haproxy = haproxies("admin")
    agent = procs.start("agent", [str(HSDO), "--client"],
                        env=agent_env(hsdo_env, haproxy.socket, db), cwd=str(tmp_path))
    wait_until(lambda: "127.0.0.1" in runtime(haproxy.socket, "show servers state app"),
               timeout=10, what="slot 1 applied")
    assert agent.poll() is None, procs.log_of(agent)
    assert "Permission denied" not in procs.log_of(agent)
