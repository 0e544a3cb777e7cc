"""Fencing on etcd with a write in flight across a partition: the leader's table write is held
by a proxy (as a network would) while the leader is cut off; the standby takes the lease over;
then the held txn reaches etcd, and etcd refuses it, on the fence alone (the standby has not
written since, so the generation condition would have let it through).
"""
import json
import queue
import socket
import threading
import time
import urllib.request

from conftest import HSDO, STOP_BUDGET_S, free_port, wait_until
from etcd_fixtures import EtcdCluster, EtcdSlotTable, etcd_env, unb64
from haproxy_fixtures import AgentRun
from test_leader_lease import T1, T2, write_targets

LEASE_SECONDS = 2
INTERVAL = 0.2


def is_table_write(body: bytes) -> bool:
    """A table write puts the generation key; a lease write puts the lease and fence keys."""
    try:
        puts = [op["request_put"] for op in json.loads(body).get("success", [])
                if "request_put" in op]
        return any(unb64(p["key"]).endswith("/generation") for p in puts)
    except (ValueError, KeyError):
        return False


class Relay:
    """TCP relay to one etcd member; `_relay(client, upstream)` moves the bytes of each
    connection."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._relay(client, upstream)

    def _relay(self, client, upstream):
        raise NotImplementedError

    def close(self):
        self.listener.close()


class PartitionProxy(Relay):
    """Once armed, the next txn request is kept (not sent) and from then on nothing passes
    either way, until heal()."""

    def __init__(self, upstream_port: int):
        self.lock = threading.Lock()
        self.armed = False
        self.partitioned = False
        self.held = []  # bodies of txn requests kept during the partition
        super().__init__(upstream_port)

    def _relay(self, client, upstream):
        threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()

    def _up(self, client, upstream):
        pending = b""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                with self.lock:
                    if self.armed and b"POST /v3/kv/txn" in pending + data:
                        pending += data
                        head, _, body = pending.partition(b"\r\n\r\n")
                        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                       if line.lower().startswith(b"content-length:")), None)
                        if length is None or len(body) < length:
                            continue  # the rest of the request is on its way
                        data, pending = pending, b""
                        if is_table_write(body[:length]):
                            self.held.append(body[:length])
                            self.armed, self.partitioned = False, True
                            continue
                        # A lease renewal (also a txn): let it through.
                    if self.partitioned:
                        continue  # lost in the partition
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                s.close()

    def _down(self, upstream, client):
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                with self.lock:
                    if self.partitioned:
                        continue
                client.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                s.close()

    def arm(self):
        with self.lock:
            self.armed = True

    def heal(self):
        with self.lock:
            self.partitioned = False


def test_a_write_held_across_a_partition_is_refused_by_the_fence(procs, tmp_path):
    cluster = EtcdCluster(procs, tmp_path).start()
    table = EtcdSlotTable(cluster, "/hsdo/fenced")
    member = cluster.members[0]
    proxy = PartitionProxy(member.client_port)

    def start(name, endpoints):
        path = tmp_path / f"targets-{name}.yaml"
        write_targets(path, T1)
        env = etcd_env(cluster, table.prefix, 8, endpoints=endpoints, SERVER_MODE="file",
                       SERVER_FILE_PATH=path, INTERVAL=INTERVAL,
                       LEADER_LEASE_SECONDS=LEASE_SECONDS, HSDO_NODE_NAME=f"node-{name}")
        proc = procs.start(f"server-{name}", [str(HSDO), "--server"], env=env)
        run = AgentRun(proc=proc, metrics_port=int(env["EXPORTER_PORT"]), env=env)
        wait_until(lambda: run.metrics(), timeout=15, what=f"server {name} serving metrics")
        return run, path

    def addresses():
        return sorted(r["IPAddress"] for r in table.enabled().values())

    try:
        a, a_targets = start("a", proxy.endpoint)
        wait_until(lambda: addresses() == T1 and a.metric("hsdo_orchestrator_leader") == 1,
                   timeout=15, what="a leads and wrote T1")
        b, _ = start("b", cluster.endpoints)
        wait_until(lambda: "stands by" in procs.log_of(b.proc), timeout=10, what="b standing by")

        # a's next write is caught in the partition, with everything after it.
        proxy.arm()
        write_targets(a_targets, T2)
        wait_until(lambda: proxy.held, timeout=10, what="a's write held by the partition")
        wait_until(lambda: b.metric("hsdo_orchestrator_leader") == 1, timeout=LEASE_SECONDS + 10,
                   what="b taking the lease over")
        assert addresses() == T1  # b has nothing to change, so it writes no table

        # The held write reaches etcd after all: refused.
        fence_key = table.prefix + "/fence"
        request = urllib.request.Request(member.endpoint + "/v3/kv/txn",
                                         data=proxy.held[0],
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.loads(response.read())
        print(f"\nthe old leader's held write reached etcd after the takeover: "
              f"succeeded={answer.get('succeeded', False)} (fence key {fence_key})")
        assert not answer.get("succeeded", False), answer
        assert addresses() == T1

        proxy.heal()
        wait_until(lambda: a.metric("hsdo_orchestrator_leader", default=-1) == 0, timeout=10,
                   what="a standing by after the partition")
        assert addresses() == T1
    finally:
        procs.stop_all()
        proxy.close()


class SlowRelay(Relay):
    """Hands each answer on `delay` seconds late (a store far away, or under load)."""

    def __init__(self, upstream_port: int, delay: float):
        self.delay = delay
        super().__init__(upstream_port)

    def _relay(self, client, upstream):
        threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, self.delay),
                         daemon=True).start()

    @staticmethod
    def _pipe(source, sink, delay):
        """Each chunk goes on `delay` after it arrived (not after the one before it: an answer
        in several chunks is late by `delay`, not by a multiple of it)."""
        chunks = queue.Queue()

        def send():
            try:
                while (item := chunks.get()) is not None:
                    due, data = item
                    time.sleep(max(0.0, due - time.monotonic()))
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for s in (source, sink):
                    s.close()

        threading.Thread(target=send, daemon=True).start()
        try:
            while data := source.recv(65536):
                chunks.put((time.monotonic() + delay, data))
        except OSError:
            pass
        chunks.put(None)


def test_a_leader_stopped_while_its_store_answers_slowly_still_releases_its_lease(procs, tmp_path):
    """Found in review: a SIGTERM cancelled every store request 300 ms after it arrived, the
    lease's release included, which came after the rest of the cycle's requests: with a store
    answering in more than about 150 ms (etcd's release is two requests), the leader never
    released its lease and the standby waited a whole lease. Now the cycle starts no request
    once stopping, and the request in flight and the release have 800 ms."""
    cluster = EtcdCluster(procs, tmp_path).start()
    table = EtcdSlotTable(cluster, "/hsdo/slow")
    relay = SlowRelay(cluster.members[0].client_port, delay=0.2)
    lease_seconds = 10

    def start(name, endpoints):
        path = tmp_path / f"targets-{name}.yaml"
        write_targets(path, T1)
        env = etcd_env(cluster, table.prefix, 8, endpoints=endpoints, SERVER_MODE="file",
                       SERVER_FILE_PATH=path, INTERVAL=1, LEADER_LEASE_SECONDS=lease_seconds,
                       HSDO_NODE_NAME=f"node-{name}")
        proc = procs.start(f"server-{name}", [str(HSDO), "--server"], env=env)
        run = AgentRun(proc=proc, metrics_port=int(env["EXPORTER_PORT"]), env=env)
        wait_until(lambda: run.metrics(), timeout=15, what=f"server {name} serving metrics")
        return run

    try:
        a = start("a", relay.endpoint)
        wait_until(lambda: a.metric("hsdo_orchestrator_leader") == 1, timeout=20,
                   what="a leads through the slow relay")
        b = start("b", cluster.endpoints)
        wait_until(lambda: "stands by" in procs.log_of(b.proc), timeout=10, what="b standing by")
        stopped = time.monotonic()
        assert procs.stop(a.proc, timeout=8) == 0
        exited = time.monotonic() - stopped
        wait_until(lambda: b.metric("hsdo_orchestrator_leader") == 1, timeout=lease_seconds + 5,
                   what="b leading")
        took = time.monotonic() - stopped
        print(f"\nSIGTERM to a leader whose store answers 0.2 s late: exited in {exited:.2f} s, "
              f"the standby led {took:.2f} s after it (lease {lease_seconds} s)")
        assert "lease released" in procs.log_of(a.proc), procs.log_of(a.proc)[-2000:]
        assert took < lease_seconds / 2, took
        assert exited < STOP_BUDGET_S, exited  # issue 8: within a second, whatever the store does
    finally:
        procs.stop_all()
        relay.close()
