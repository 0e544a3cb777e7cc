"""hsdo --server with SERVER_MODE=consul against the Consul double (tests/consul_double).

Each test starts the double and one orchestrator on SQLite, changes the catalog through the
double's control API and watches the slot table, through `hsdo status --json` and, where a
latency is measured, through the SQLite file itself (a read-only query costs a millisecond
where a process costs tens).
"""
import json
import signal
import sqlite3
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import HSDO, free_port, run_hsdo, wait_until
from haproxy_fixtures import SlotDb, sqlite_connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "consul_double"))
from double_client import ConsulDouble, make_self_signed_cert  # noqa: E402


# A long interval: only a blocking query that returns on change (and wakes the orchestrator)
# can bring a change to the table quickly.
SLOW_INTERVAL = "30"


@pytest.fixture
def double(procs):
    return ConsulDouble(procs)


class Orchestrator:
    def __init__(self, procs, tmp_path, hsdo_env, double, services="web", **extra):
        self.db = tmp_path / "hsdo.db"
        self.env = dict(hsdo_env)
        self.env.update({
            "SERVER_MODE": "consul",
            "STORE": "sqlite",
            "SQLITE_PATH": str(self.db),
            "CONSUL_API_URL": double.url,
            "CONSUL_SERVICE_NAME": services,
            "INTERVAL": SLOW_INTERVAL,
            "EXPORTER_PORT": str(free_port()),
            "EXPORTER_ADDRESS": "127.0.0.1",
            "HAPROXY_BACKEND_SERVERS_LIST_SIZE": "10",
            "DEBUG": "true",
        })
        self.env.update({k: str(v) for k, v in extra.items()})
        self.procs = procs
        self.cwd = tmp_path  # no conf/env.yaml there: the environment is the whole config
        self.proc = procs.start("hsdo-server", [str(HSDO), "--server"], env=self.env,
                                cwd=str(tmp_path))

    def log(self):
        return self.procs.log_of(self.proc)

    def alive(self):
        return self.proc.poll() is None

    def db_targets(self):
        """{name: (address, port, group)} of enabled slots, read from SQLite; None before
        the first write."""
        if not self.db.exists():
            return None
        try:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1.0)
            try:
                rows = conn.execute(
                    "SELECT ServerName, IPAddress, Port, ASG FROM slots "
                    "WHERE IPAddress != 'none' AND BackendServerStatus = 'enabled'").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return None
        return {name: (address, port, group) for name, address, port, group in rows}

    def held(self):
        """{name: BackendServerStatus} of the slots that hold a target: enabled, or draining
        (written "disabled" with the target's address kept)."""
        if not self.db.exists():
            return {}
        try:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1.0)
            try:
                rows = conn.execute("SELECT ServerName, BackendServerStatus FROM slots "
                                    "WHERE IPAddress != 'none'").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return {}
        return dict(rows)

    def metric(self, name, service):
        """A per-service gauge from the orchestrator's /metrics, or None."""
        url = f"http://127.0.0.1:{self.env['EXPORTER_PORT']}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        prefix = f'{name}{{service="{service}"}} '
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix):])
        return None

    def status(self):
        """The slot table as `hsdo status --json` prints it: a list of slot objects."""
        result = run_hsdo(["status", "--json"], self.env)
        data = json.loads(result.stdout)
        return data["slots"] if isinstance(data, dict) else data

    def status_names(self):
        """Names of the targets in occupied, enabled slots according to `hsdo status`."""
        names = set()
        for slot in self.status():
            name = slot.get("name") or slot.get("ServerName")
            address = slot.get("address") or slot.get("ip") or slot.get("IPAddress")
            state = str(slot.get("state") or slot.get("status") or "").lower()
            if name and address and address != "none" and state in ("enabled", "active"):
                names.add(name)
        return names

    def wait_for(self, expected, timeout=10.0, what="slot table"):
        expected = set(expected)
        wait_until(lambda: self.alive() and set(self.db_targets() or {}) == expected,
                   timeout=timeout, what=f"{what} == {sorted(expected)}")

    def wait_status(self, expected, timeout=10.0):
        wait_until(lambda: self.status_names() == set(expected), timeout=timeout,
                   what=f"hsdo status == {sorted(expected)}")


def measure(orchestrator, expected, action, timeout=5.0):
    """Runs `action` and returns the seconds until the SQLite table holds `expected`."""
    expected = set(expected)
    start = time.monotonic()
    action()
    while time.monotonic() - start < timeout:
        if set(orchestrator.db_targets() or {}) == expected:
            return time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError(f"table never became {sorted(expected)}: {orchestrator.db_targets()}"
                         f"\n{orchestrator.log()[-3000:]}")


def test_passing_instances_only_and_a_critical_check_removes_one(procs, tmp_path, hsdo_env,
                                                                 double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    double.register("web", "web-2", address="127.0.0.12", port=8082, node="n2")
    double.register("web", "web-3", address="127.0.0.13", port=8083, node="n3",
                    status="critical")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double)
    hsdo.wait_for({"n1/web-1", "n2/web-2"})
    assert hsdo.db_targets()["n1/web-1"] == ("127.0.0.11", 8081, "web")
    hsdo.wait_status({"n1/web-1", "n2/web-2"})
    # hsdo filters on the checks itself: Consul's ?passing would hide instances in maintenance.
    assert not any(r["passing"] for r in double.requests("web"))

    double.set_check("web", "web-2", "critical")
    hsdo.wait_for({"n1/web-1"}, timeout=2)
    double.set_check("web", "web-3", "passing")
    hsdo.wait_for({"n1/web-1", "n3/web-3"}, timeout=2)
    hsdo.wait_status({"n1/web-1", "n3/web-3"})


def test_an_instance_in_maintenance_drains_instead_of_vanishing(procs, tmp_path, hsdo_env,
                                                                double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    double.register("web", "web-2", address="127.0.0.12", port=8082, node="n2")
    double.register("web", "web-3", address="127.0.0.13", port=8083, node="n3")
    # A drain timeout, so that the orchestrator keeps a draining slot rather than freeing it.
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double,
                        HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT="300")
    hsdo.wait_for({"n1/web-1", "n2/web-2", "n3/web-3"})
    wait_until(lambda: hsdo.metric("hsdo_consul_draining_instances", "web") == 0, timeout=5,
               what="the draining gauge")

    double.maintenance("web", "web-2", reason="deploying")  # consul maint -service web-2
    wait_until(lambda: hsdo.metric("hsdo_consul_draining_instances", "web") == 1, timeout=5,
               what="web-2 discovered in maintenance")
    double.maintenance(node="n3")  # consul maint on node n3
    wait_until(lambda: hsdo.metric("hsdo_consul_draining_instances", "web") == 2, timeout=5,
               what="web-3 discovered in maintenance")
    # Neither vanished: their slots still hold them (draining where the orchestrator drains).
    time.sleep(0.3)  # give a wrong removal the time to show; the gauge is already set
    assert {"n1/web-1", "n2/web-2", "n3/web-3"} <= set(hsdo.held()), hsdo.log()[-3000:]
    assert hsdo.metric("hsdo_consul_not_passing_instances", "web") == 0

    double.maintenance("web", "web-2", enable=False)
    double.maintenance(node="n3", enable=False)
    wait_until(lambda: hsdo.metric("hsdo_consul_draining_instances", "web") == 0, timeout=5,
               what="maintenance over")
    hsdo.wait_for({"n1/web-1", "n2/web-2", "n3/web-3"})

    # In maintenance and failing its own check: it leaves, as an unhealthy instance does.
    double.maintenance("web", "web-2")
    double.set_check("web", "web-2", "critical")
    wait_until(lambda: hsdo.metric("hsdo_consul_not_passing_instances", "web") == 1,
               timeout=5, what="web-2 left out")
    assert hsdo.metric("hsdo_consul_draining_instances", "web") == 0
    assert hsdo.alive(), hsdo.log()[-3000:]


def test_critical_instances_too_when_passing_only_is_off(procs, tmp_path, hsdo_env, double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    double.register("web", "web-2", address="127.0.0.12", port=8082, node="n2",
                    status="critical")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_PASSING_ONLY="false")
    hsdo.wait_for({"n1/web-1", "n2/web-2"})
    assert not any(r["passing"] for r in double.requests("web"))


def test_several_services_are_united_with_their_groups(procs, tmp_path, hsdo_env, double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    double.register("api", "api-1", address="127.0.0.21", port=9001, node="n1")
    double.register("api", "api-2", address="", port=9002, node="n2",
                    node_address="127.0.0.22")  # no service address: the node's
    double.register("other", "x", address="127.0.0.99", port=1, node="n9")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, services="web,api")
    hsdo.wait_for({"n1/web-1", "n1/api-1", "n2/api-2"})
    targets = hsdo.db_targets()
    assert targets["n1/api-1"] == ("127.0.0.21", 9001, "api")
    assert targets["n2/api-2"] == ("127.0.0.22", 9002, "api")
    assert targets["n1/web-1"][2] == "web"
    # Both services are watched with blocking queries of their own.
    wait_until(lambda: {r["service"] for r in double.requests() if r["index"] > 0}
               >= {"web", "api"}, what="blocking queries on both services")
    # A change in either service arrives promptly.
    double.deregister("api", "api-2")
    hsdo.wait_for({"n1/web-1", "n1/api-1"}, timeout=2)


def test_a_registration_reaches_the_table_within_one_second(procs, tmp_path, hsdo_env,
                                                            double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double)
    hsdo.wait_for({"n1/web-1"})
    # Let the watch settle into a blocking query on the current index.
    wait_until(lambda: any(r["index"] > 0 for r in double.requests("web")),
               what="a blocking query")
    latencies = []
    expected = {"n1/web-1"}
    for i in range(2, 6):
        name = f"n{i}/web-{i}"
        expected = expected | {name}
        latencies.append(measure(hsdo, expected, lambda i=i: double.register(
            "web", f"web-{i}", address=f"127.0.0.{10 + i}", port=8080 + i, node=f"n{i}")))
    expected = expected - {"n3/web-3"}
    latencies.append(measure(hsdo, expected, lambda: double.deregister("web", "web-3")))
    print(f"change-to-table latencies (s): {[round(x, 3) for x in latencies]}")
    assert max(latencies) < 1.0, latencies
    hsdo.wait_status(expected, timeout=2)
    # It was the blocking query that returned on the change (INTERVAL is 30 s).
    assert any(r["ended_by"] == "change" for r in double.requests("web"))


def test_an_index_going_backwards_restarts_the_watch(procs, tmp_path, hsdo_env, double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double)
    hsdo.wait_for({"n1/web-1"})
    wait_until(lambda: any(r["index"] > 0 for r in double.requests("web")),
               what="a blocking query")
    double.reset_requests()
    double.set_index("web", 2)  # e.g. a snapshot restore on the servers
    # hsdo starts over with a plain read (index 0), then blocks on the new, lower index.
    def restarted():
        indexes = [r["index"] for r in double.requests("web")]
        return any(a == 0 and b == 2 for a, b in zip(indexes, indexes[1:]))
    wait_until(restarted, timeout=5, what="a request with index 0, then one with index 2")
    assert "went backwards" in hsdo.log()
    # And changes still arrive promptly.
    latency = measure(hsdo, {"n1/web-1", "n2/web-2"}, lambda: double.register(
        "web", "web-2", address="127.0.0.12", port=8082, node="n2"))
    assert latency < 1.0
    assert hsdo.db_targets()["n1/web-1"] == ("127.0.0.11", 8081, "web")


def test_the_token_is_sent_and_never_logged(procs, tmp_path, hsdo_env):
    secret = "3f1b9c2e-token-never-logged"
    double = ConsulDouble(procs, token=secret)
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_HTTP_TOKEN=secret)
    hsdo.wait_for({"n1/web-1"})
    assert all(r["token_present"] for r in double.requests("web"))
    assert secret not in hsdo.log()


def test_a_token_file_rotated_is_used_without_a_restart(procs, tmp_path, hsdo_env):
    """Review (secrets that rotate): CONSUL_HTTP_TOKEN is read at start, so a token rotated by
    a Vault or Consul agent's template needed a restart (every query a 403 meanwhile, joins and
    removals stalled). CONSUL_HTTP_TOKEN_FILE is read at each request; one that a template has
    not rendered yet when hsdo starts is an error until it is, not an exit (review: an exit 2
    was final, the units do not restart on it)."""
    first, second = "3f1b9c2e-first-token-0001", "7d2a6b1f-second-token-0002"
    double = ConsulDouble(procs, token=first)
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    token_file = tmp_path / "consul-token"
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_HTTP_TOKEN_FILE=token_file)
    wait_until(lambda: f'CONSUL_HTTP_TOKEN_FILE="{token_file}": cannot open it' in hsdo.log(),
               what="the missing token file said")
    assert hsdo.alive()
    token_file.write_text(first + "\n")
    hsdo.wait_for({"n1/web-1"})
    # Rotated as a template renders it: the new token allowed, written in place by a rename,
    # then the old one revoked.
    double.acl({first: "*", second: "*"})
    rendered = tmp_path / "consul-token.new"
    rendered.write_text(second + "\n")
    rendered.replace(token_file)
    double.acl({second: "*"})
    # The query in flight, sent with the first token, is refused when web-2 wakes it: asked again
    # at once with the second, which alone Consul accepts now, it is no failure.
    before = hsdo.log()
    double.register("web", "web-2", address="127.0.0.12", port=8082, node="n2")
    hsdo.wait_for({"n1/web-1", "n2/web-2"})
    double.register("web", "web-3", address="127.0.0.13", port=8083, node="n3")
    hsdo.wait_for({"n1/web-1", "n2/web-2", "n3/web-3"})
    log = hsdo.log()
    after_rotation = log[len(before):]
    assert "HTTP 403" not in after_rotation and "filtered by ACLs" not in after_rotation, log
    assert first not in log and second not in log


def test_a_wrong_token_is_an_error_and_fills_nothing(procs, tmp_path, hsdo_env):
    double = ConsulDouble(procs, token="the-right-one")
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_HTTP_TOKEN="a-wrong-one")
    # "HTTP 403", not "403": the configuration line names Consul's port, which may hold "403".
    wait_until(lambda: "HTTP 403" in hsdo.log(), what="the 403 in the log")
    assert "ACL not found" in hsdo.log()
    assert "a-wrong-one" not in hsdo.log()
    assert not hsdo.db_targets()


def test_a_server_error_keeps_the_last_list(procs, tmp_path, hsdo_env, double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    double.register("web", "web-2", address="127.0.0.12", port=8082, node="n2")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, INTERVAL="0.2")
    hsdo.wait_for({"n1/web-1", "n2/web-2"})
    before = hsdo.db_targets()
    double.fail(500, seconds=3)
    wait_until(lambda: "HTTP 500" in hsdo.log(), what="the 500 in the log")
    # While Consul fails, many orchestrator cycles pass (INTERVAL=0.2): the table holds.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert hsdo.db_targets() == before
        time.sleep(0.1)
    assert hsdo.alive()
    # After recovery the watch picks up what changed meanwhile.
    double.deregister("web", "web-2")
    hsdo.wait_for({"n1/web-1"}, timeout=10)


def test_tag_filter_and_datacenter(procs, tmp_path, hsdo_env, double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1", tags=["blue"])
    double.register("web", "web-2", address="127.0.0.12", port=8082, node="n2", tags=["green"])
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_SERVICE_TAG="green",
                        CONSUL_DATACENTER="dc1")
    hsdo.wait_for({"n2/web-2"})
    request = double.requests("web")[0]
    assert request["dc"] == "dc1"
    assert request["filter"] == '"green" in Service.Tags'


def test_a_consul_that_ignores_the_tag_filter_fills_no_slot_with_another_tag(
        procs, tmp_path, hsdo_env, double):
    """Review (Consul semantics): the tag was filtered by Consul alone. A Consul older than 1.5
    does not know `filter` and answers every instance of the service: the blue instance took a
    slot of the green backend. Now an instance without the tag is skipped, and said."""
    double.ignore_filter()
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1", tags=["blue"])
    double.register("web", "web-2", address="127.0.0.12", port=8082, node="n2", tags=["green"])
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_SERVICE_TAG="green")
    hsdo.wait_for({"n2/web-2"})
    wait_until(lambda: 'without the tag "green"' in hsdo.log(), what="the skipped instance said")
    double.register("web", "web-3", address="127.0.0.13", port=8083, node="n3", tags=["green"])
    hsdo.wait_for({"n2/web-2", "n3/web-3"})


def test_az_from_service_or_node_meta(procs, tmp_path, hsdo_env, double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1",
                    meta={"zone": "zone-a"})
    double.register("web", "web-2", address="127.0.0.12", port=8082, node="n2",
                    node_meta={"zone": "zone-b"})
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_AZ_META_KEY="zone")
    hsdo.wait_for({"n1/web-1", "n2/web-2"})
    conn = sqlite3.connect(f"file:{hsdo.db}?mode=ro", uri=True)
    azs = dict(conn.execute("SELECT ServerName, AZ FROM slots WHERE IPAddress != 'none'"))
    conn.close()
    assert azs == {"n1/web-1": "zone-a", "n2/web-2": "zone-b"}


def test_https_with_a_ca_file(procs, tmp_path, hsdo_env):
    cert, key = make_self_signed_cert(tmp_path)
    double = ConsulDouble(procs, tls_cert=cert, tls_key=key)
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_CACERT=str(cert))
    hsdo.wait_for({"n1/web-1"})


def test_mutual_tls_with_a_client_certificate(procs, tmp_path, hsdo_env):
    cert, key = make_self_signed_cert(tmp_path, "consul")
    client_cert, client_key = make_self_signed_cert(tmp_path, "hsdo")
    double = ConsulDouble(procs, tls_cert=cert, tls_key=key, tls_client_ca=client_cert)
    double.use_client_cert(client_cert, client_key)
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, CONSUL_CACERT=str(cert),
                        CONSUL_CLIENT_CERT=str(client_cert), CONSUL_CLIENT_KEY=str(client_key))
    hsdo.wait_for({"n1/web-1"})


def test_sigterm_stops_promptly_while_a_query_blocks(procs, tmp_path, hsdo_env, double):
    double.register("web", "web-1", address="127.0.0.11", port=8081, node="n1")
    double.register("api", "api-1", address="127.0.0.12", port=8082, node="n2")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double, services="web,api")
    hsdo.wait_for({"n1/web-1", "n2/api-1"})
    wait_until(lambda: any(r["index"] > 0 for r in double.requests("web")),
               what="a blocking query")
    start = time.monotonic()
    hsdo.proc.send_signal(signal.SIGTERM)
    hsdo.proc.wait(timeout=10)
    elapsed = time.monotonic() - start
    print(f"stopped {elapsed:.2f}s after SIGTERM")
    assert hsdo.proc.returncode == 0
    # The Consul watches stop within one blocking wait (1 s); the rest is the exporter's and
    # the signal watcher's own shutdown.
    assert elapsed < 4.0


def test_records_without_a_port_keep_their_slots_when_consul_gives_ports(procs, tmp_path,
                                                                          hsdo_env, double):
    """Switching the orchestrator from the Python HSDO (records without a port: one
    HAPROXY_BACKEND_SERVER_PORT for all) to hsdo in Consul mode (each instance with its
    service's port): every record read as gone and every instance as new, each took another
    slot, and every key moved on every node. Each record now takes its instance's port in
    place."""
    seed = SlotDb(tmp_path / "hsdo.db", 10)  # as the Python server left it: no port
    seed.put(2, "127.0.0.12", name="n2/web-2", asg="web")
    seed.put(5, "127.0.0.11", name="n1/web-1", asg="web")
    seed.put(7, "127.0.0.13", name="n3/web-3", asg="web")
    for i in (1, 2, 3):
        double.register("web", f"web-{i}", address=f"127.0.0.1{i}", port=8080 + i, node=f"n{i}")
    hsdo = Orchestrator(procs, tmp_path, hsdo_env, double)
    def ported():
        targets = hsdo.db_targets() or {}
        return len(targets) == 3 and all(port for _, port, _ in targets.values())
    wait_until(ported, timeout=10, what="the three records written with their ports")
    with sqlite_connection(f"file:{hsdo.db}?mode=ro", uri=True) as db:
        slots = dict((name, (slot, port)) for slot, name, port in db.execute(
            "SELECT BackendServerID, ServerName, Port FROM slots WHERE IPAddress != 'none'"))
    print(f"\nslots after the switch: {slots}")
    assert slots == {"n1/web-1": (5, 8081), "n2/web-2": (2, 8082), "n3/web-3": (7, 8083)}
