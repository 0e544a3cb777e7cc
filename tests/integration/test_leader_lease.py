"""Issue 9.4 on SQLite, on DynamoDB (the emulator) and on etcd (3 members on loopback): two
`hsdo --server` share one store; one leads, the other stands by.

- kill -9 of the leader: the standby writes the next change within LEADER_LEASE_SECONDS +
  2 x INTERVAL;
- SIGSTOP of the leader past its lease: the standby takes over; after SIGCONT nothing the old
  leader plans ever lands (each server reads its own targets file, so its writes would show),
  it stands by, and no slot ever moves or holds two targets.
"""
import json
import os
import signal
import time
import urllib.request

import pytest

from aws_fixtures import moto  # noqa: F401 (fixture, used by the dynamodb case)
from conftest import BASE_ENV, HSDO, free_port, run_hsdo, wait_until
from etcd_fixtures import EtcdCluster

LEASE = 2.0
INTERVAL = 0.2


def write_targets(path, ips):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write("targets:\n" + "".join(f"  - ip: \"{ip}\"\n    name: t{ip.split('.')[-1]}\n"
                                       for ip in ips))
    os.replace(tmp, path)


def metric(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    return None


class Fleet:
    def __init__(self, request, tmp_path, procs, store):
        self.procs = procs
        self.tmp = tmp_path
        self.env = {"STORE": store, "INTERVAL": str(INTERVAL),
                    "LEADER_LEASE_SECONDS": str(int(LEASE)), "SERVER_MODE": "file",
                    "HAPROXY_BACKEND_SERVERS_LIST_SIZE": "8", "EXPORTER_ADDRESS": "127.0.0.1"}
        if store == "sqlite":
            base = dict(BASE_ENV)
            self.env["SQLITE_PATH"] = str(tmp_path / "hsdo.db")
        elif store == "etcd":
            base = dict(BASE_ENV)
            cluster = EtcdCluster(procs, tmp_path).start()
            self.env.update(ETCD_ENDPOINTS=cluster.endpoints, ETCD_PREFIX="/hsdo/leader")
        else:
            moto = request.getfixturevalue("moto")
            base = dict(moto.env)
            self.env["DYNAMODB_TABLE_NAME"] = "hsdo-leader"
        self.env = dict(base, **self.env)
        if store == "dynamodb":
            run_hsdo(["init-table"], self.env)
        self.servers = {}
        self.history = []  # every table seen: {slot: address}

    def start(self, name, ips):
        path = self.tmp / f"targets-{name}.yaml"
        write_targets(path, ips)
        port = free_port()
        env = dict(self.env, SERVER_FILE_PATH=str(path), EXPORTER_PORT=str(port),
                   HSDO_NODE_NAME=f"node-{name}")
        proc = self.procs.start(f"server-{name}", [str(HSDO), "--server"], env=env)
        self.servers[name] = (proc, port, path)
        wait_until(lambda: metric(port, "hsdo_orchestrator_leader") is not None, timeout=15,
                   what=f"server {name} serving metrics")
        return proc

    def leader(self, name):
        return metric(self.servers[name][1], "hsdo_orchestrator_leader")

    def table(self):
        doc = json.loads(run_hsdo(["status", "--json"], self.env).stdout)
        table = {s["id"]: s["address"] for s in doc["slots"] if s["state"] == "enabled"}
        self.history.append(table)
        return table, doc.get("leader")

    def addresses(self):
        return sorted(self.table()[0].values())

    def check_invariants(self):
        """No slot ever holds two targets; a target that stays never changes slot."""
        for table in self.history:
            assert len(set(table.values())) == len(table), f"a target in two slots: {table}"
        for before, after in zip(self.history, self.history[1:]):
            where = {ip: slot for slot, ip in after.items()}
            for slot, ip in before.items():
                assert where.get(ip, slot) == slot, f"{ip} moved: {before} -> {after}"


@pytest.fixture(params=["sqlite", "dynamodb", "etcd"])
def fleet(request, tmp_path, procs):
    return Fleet(request, tmp_path, procs, request.param)


T1 = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
T2 = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"]
T3 = ["127.0.0.11", "127.0.0.13", "127.0.0.14", "127.0.0.15"]


def test_kill_9_of_the_leader_the_standby_writes_within_the_lease(fleet):
    a = fleet.start("a", T1)
    wait_until(lambda: fleet.addresses() == T1 and fleet.leader("a") == 1, timeout=15,
               what="a leads and wrote T1")
    fleet.start("b", T1)
    wait_until(lambda: fleet.leader("b") == 0 and "stands by" in fleet.procs.log_of(
        fleet.servers["b"][0]), timeout=10, what="b standing by")
    for name in ("a", "b"):
        write_targets(fleet.servers[name][2], T2)
    wait_until(lambda: fleet.addresses() == T2, timeout=10, what="a writes T2")
    _, leader = fleet.table()
    assert leader and leader["holder"].startswith("node-a/"), leader

    a.send_signal(signal.SIGKILL)
    a.wait(5)
    killed = time.monotonic()
    for name in ("a", "b"):
        write_targets(fleet.servers[name][2], T3)
    wait_until(lambda: fleet.addresses() == T3, timeout=LEASE + 10, interval=0.05,
               what="the standby writes T3")
    took = time.monotonic() - killed
    print(f"{fleet.env['STORE']}: kill -9 of the leader -> standby wrote the next change in "
          f"{took:.2f} s (LEADER_LEASE_SECONDS {LEASE}, INTERVAL {INTERVAL})")
    # The lease, a cycle to see it lapse and one to write. On DynamoDB a second more: each
    # poll's `hsdo status` through moto took hundreds of ms on a loaded 2-core machine
    # (flakiness review: 2.47 and 2.62 s against 2.4 with four busy loops; SQLite and etcd at
    # most 1.92 s).
    slack = 1.0 if fleet.env["STORE"] == "dynamodb" else 0.0
    assert took <= LEASE + 2 * INTERVAL + slack, took
    _, leader = fleet.table()
    assert leader["holder"].startswith("node-b/") and leader["epoch"] == 2, leader
    assert fleet.leader("b") == 1
    log_b = fleet.procs.log_of(fleet.servers["b"][0])
    assert log_b.count("stands by") == 1, log_b  # once, not per cycle
    assert "conflict" not in log_b.lower()
    fleet.check_invariants()


def test_a_leader_paused_past_its_lease_never_writes_again(fleet):
    a = fleet.start("a", T1)
    wait_until(lambda: fleet.addresses() == T1 and fleet.leader("a") == 1, timeout=15,
               what="a leads and wrote T1")
    fleet.start("b", T1)
    wait_until(lambda: fleet.leader("b") == 0, timeout=10, what="b standing by")

    a.send_signal(signal.SIGSTOP)
    try:
        # The paused leader's own list changes too: anything it wrote would show.
        write_targets(fleet.servers["a"][2], T2)
        wait_until(lambda: fleet.leader("b") == 1, timeout=LEASE + 5, what="b takes over")
        write_targets(fleet.servers["b"][2], T3)
        wait_until(lambda: fleet.addresses() == T3, timeout=5, what="b writes T3")
    finally:
        a.send_signal(signal.SIGCONT)
    # The old leader wakes: it must stand by, and nothing it plans may land.
    wait_until(lambda: fleet.leader("a") == 0, timeout=10, what="a stands by after SIGCONT")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert fleet.addresses() == T3
        time.sleep(INTERVAL)
    log_a = fleet.procs.log_of(a)
    fenced = metric(fleet.servers["a"][1], "hsdo_orchestrator_fenced_writes_total")
    print(f"{fleet.env['STORE']}: old leader after SIGCONT: fenced writes refused by the store "
          f"{fenced:.0f}; stands-by lines {log_a.count('stands by')}")
    assert "stands by" in log_a
    _, leader = fleet.table()
    assert leader["holder"].startswith("node-b/"), leader
    fleet.check_invariants()


def test_a_leader_stopped_cleanly_hands_over_at_once(fleet):
    """A deploy or an upgrade stops the leader with SIGTERM: it releases its lease, and the
    standby writes the next change at its next cycles, not a whole lease later."""
    fleet.env["LEADER_LEASE_SECONDS"] = "10"  # far longer than a hand-over may take
    a = fleet.start("a", T1)
    wait_until(lambda: fleet.addresses() == T1 and fleet.leader("a") == 1, timeout=15,
               what="a leads and wrote T1")
    fleet.start("b", T1)
    wait_until(lambda: fleet.leader("b") == 0, timeout=10, what="b standing by")

    stopped = time.monotonic()
    assert fleet.procs.stop(a) == 0
    for name in ("a", "b"):
        write_targets(fleet.servers[name][2], T2)
    wait_until(lambda: fleet.addresses() == T2, timeout=15, what="b writes T2")
    took = time.monotonic() - stopped
    print(f"{fleet.env['STORE']}: SIGTERM to the leader -> standby wrote the next change in "
          f"{took:.2f} s (LEADER_LEASE_SECONDS 10, INTERVAL {INTERVAL})")
    assert took < 5, took
    assert "lease released" in fleet.procs.log_of(a)
    _, leader = fleet.table()
    assert leader["holder"].startswith("node-b/") and leader["epoch"] == 2, leader
    fleet.check_invariants()


def test_status_says_when_nobody_renews_the_lease(fleet):
    """Found in review: `hsdo status` showed the holder as the leader after that orchestrator
    was killed (the lease stored no renewal time), in the hour nobody led."""
    a = fleet.start("a", T1)
    wait_until(lambda: fleet.leader("a") == 1, timeout=15, what="a leads")
    _, leader = fleet.table()
    assert leader["holder"].startswith("node-a/") and leader["renewed_seconds_ago"] <= LEASE
    a.send_signal(signal.SIGKILL)
    a.wait(5)

    def lapsed():
        doc = json.loads(run_hsdo(["status", "--json"], fleet.env).stdout)
        return doc["leader"] is None and doc.get("lease", {}).get("state") == "lapsed"
    wait_until(lapsed, timeout=LEASE + 5, what="status: the lease lapsed")
    text = run_hsdo(["status"], fleet.env).stdout
    assert "leader: none renewing: node-a/" in text, text
