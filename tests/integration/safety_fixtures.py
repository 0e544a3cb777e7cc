"""Helpers shared by test_agent_safety.py and test_readyz.py: a HAProxy whose slots are set by
hand (as a node that ran before hsdo, or an agent that ran before a restart, leaves them), a
TCP server that accepts and never answers (a black-holed store), and probes of the exporter's
/healthz and /readyz.
"""
import socket
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

from conftest import wait_until


def enable_slots(node, backend, count, first_port=9001):
    """Puts slots 1..count of `backend` in service by hand: 127.0.0.1:<first_port + i>,
    weight 10, ready. Returns {slot: (addr, port, weight)}."""
    expected = {}
    for slot in range(1, count + 1):
        port = first_port + slot - 1
        server = f"{backend.name}/{backend.base}{slot}"
        node.cmd(f"set server {server} addr 127.0.0.1 port {port}")
        node.cmd(f"set server {server} weight 10")
        node.cmd(f"set server {server} state ready")
        expected[slot] = ("127.0.0.1", port, 10)
    return expected


def enabled_slots(node, backend) -> dict:
    """{slot: (addr, port, weight)} of the servers HAProxy has in service (not in maint)."""
    return {slot: (s.addr, s.port, s.weight) for slot, s in node.state(backend.name).items()
            if s.admin != "maint"}


def store_path(path, size=10):
    """What haproxy_fixtures.agent_env needs from a store: its path and table size."""
    return SimpleNamespace(path=path, size=size)


def probe(port, path, timeout=2.0):
    """(status, body) of GET http://127.0.0.1:<port><path>; (None, error) when it does not
    answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def wait_ready(port, status, contains="", timeout=15.0):
    """Waits until /readyz answers `status` with a body containing `contains`."""
    def check():
        got = probe(port, "/readyz")
        return got if got[0] == status and contains in got[1] else False
    return wait_until(check, timeout=timeout, what=f"/readyz {status} {contains!r}")


class BlackHole:
    """A loopback TCP server that accepts every connection and never sends a byte: a store
    or source endpoint that hangs."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted.append(conn)

    def connections(self) -> int:
        with self.lock:
            return len(self.accepted)

    def close(self):
        self.closed = True
        self.listener.close()
        with self.lock:
            for conn in self.accepted:
                conn.close()


class HangingRelay:
    """A loopback TCP relay to `upstream_port` that, once `hang()` is called, stops forwarding:
    every request sent from then on, on a kept or a new connection, waits for an answer that
    never comes (a store that hangs mid-life). `stalled` counts those requests."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.hanging = threading.Event()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.sockets = []
        self.stalled = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self):
        self.hanging.set()

    def _accept(self):
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, source, sink, from_client):
        while not self.closed.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if self.hanging.is_set():
                if from_client:
                    with self.lock:
                        self.stalled += 1
                self.closed.wait()  # never forwarded: the sender waits
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self):
        self.closed.set()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                sock.close()


def time_to_exit(proc, signal_number, timeout=60.0) -> float:
    """Sends `signal_number` to `proc` and returns the seconds until it exited."""
    start = time.monotonic()
    proc.send_signal(signal_number)
    proc.wait(timeout)
    return time.monotonic() - start
