"""The lifecycle lab of issue 10: two HAProxy nodes, one orchestrator (file source, SQLite),
one agent per node, five slow loopback backends and a steady hashed load through both nodes
that counts every request and every failure.

- `SlowBackend` is a separate process (this file run as a script), so that stopping it drops
  its in-flight connections as a terminated instance would. It listens on 127.0.0.x and answers
  every request after `delay` seconds (header `X-Delay` overrides it) with its name, through
  haproxy_fixtures' HTTP handler.
- `LifecycleNode` is a HaproxyNode with the documented reload-proof template (server-state
  file, FQDN placeholder with `init-addr last`), `check` with a short `inter`, and listeners
  handed to the new process on reload (`expose-fd listeners` + `-x`), so a reload drops no
  connection by itself.
- `Load` sends hashed GETs through both nodes from several threads, one connection per request,
  and records each outcome.
- `Lab` wires it all together; every process goes through conftest's `Processes` and is
  stopped by its PID.

Run as a script it is the backend: `python lifecycle_fixtures.py serve IP PORT NAME DELAY`.
"""
import sys

if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "serve":
    # The backend process: the suite's loopback HTTP server, answering after a delay.
    import time

    from haproxy_fixtures import _Handler, _QuietServer

    _, _, IP, PORT, NAME, DELAY = sys.argv

    class SlowHandler(_Handler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):  # noqa: N802 (http.server's naming)
            time.sleep(float(self.headers.get("X-Delay", DELAY)))
            super().do_GET()

    class SlowServer(_QuietServer):
        request_queue_size = 128  # the load's bursts, not 5

    server = SlowServer((IP, int(PORT)), SlowHandler)
    server.hsdo_name = NAME
    server.serve_forever(poll_interval=0.05)
    sys.exit(0)

import http.client  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from conftest import BASE_ENV, HSDO, free_port, metrics, run_hsdo, wait_until  # noqa: E402
from file_server_fixtures import write_targets  # noqa: E402,F401 (a target may carry `state`)
from haproxy_fixtures import (HAPROXY, Backend, HaproxyNode, agent_env, runtime,  # noqa: E402
                              start_agent)

SLOTS = 10
BACKEND = "app"
WEIGHT = 10
CHECK_INTER_MS = 200
INTERVAL = "1"
RESPONSE_SECONDS = 1.0


# --------------------------------------------------------------------------------------------
# Slow backends, each its own process
# --------------------------------------------------------------------------------------------
def accepts(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


class SlowBackend:
    def __init__(self, procs, name: str, ip: str, delay=RESPONSE_SECONDS):
        self.procs, self.name, self.ip, self.delay = procs, name, ip, delay
        self.port = free_port(ip)
        self.proc = None

    def start(self):
        self.proc = self.procs.start(
            f"backend-{self.name}",
            [sys.executable, str(Path(__file__).resolve()), "serve", self.ip, str(self.port),
             self.name, str(self.delay)])
        wait_until(lambda: self.proc.poll() is not None or accepts(self.ip, self.port),
                   timeout=10, what=f"backend {self.name} listening")
        assert self.proc.poll() is None, self.procs.log_of(self.proc)
        return self

    def stop(self):
        """Terminates the process: its in-flight connections close under their requests."""
        if self.proc is not None:
            self.procs.stop(self.proc)

    def target(self) -> dict:
        return {"ip": self.ip, "port": self.port, "name": self.name}


# --------------------------------------------------------------------------------------------
# HAProxy nodes as documented for production (docs/deploying.md)
# --------------------------------------------------------------------------------------------
class LifecycleNode(HaproxyNode):
    def __init__(self, procs, name, check=True, check_inter_ms=CHECK_INTER_MS):
        super().__init__(procs, name, [Backend(BACKEND, "srv", slots=SLOTS, check=check)],
                         balance="uri", check_inter_ms=check_inter_ms)

    def write_config(self):
        self.state_file = self.dir / "state"
        self.state_file.write_text("")
        super().write_config()
        text = self.config.read_text()
        text = text.replace(f"  stats socket {self.socket} level admin\n",
                            f"  stats socket {self.socket} level admin expose-fd listeners\n"
                            f"  server-state-file {self.state_file}\n", 1)
        text = text.replace("defaults\n", "defaults\n  load-server-state-from-file global\n", 1)
        text = text.replace(" 127.0.0.2:", " slot.invalid:")
        text = text.replace(" disabled\n", " disabled init-addr last,127.0.0.2\n")
        self.config.write_text(text)
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(self.config)], check=True)

    def reload(self, save_state=True):
        """The documented reload: save the servers' state, then a new process takes the
        listeners over (-x) and the old one finishes its connections (-sf). Without
        `save_state` the new process starts from an empty state file: every slot back to the
        placeholder in maint, as after a reload by a script that does not save the state."""
        self.state_file.write_text(
            runtime(self.socket, "show servers state") + "\n" if save_state else "")
        old = self.proc
        self.generation += 1
        self.proc = self.procs.start(
            f"haproxy-{self.name}-{self.generation}",
            [HAPROXY, "-f", str(self.config), "-db", "-x", self.socket, "-sf", str(old.pid)])
        pid = self.proc.pid
        wait_until(lambda: self._pid_on_socket() == pid, timeout=10,
                   what=f"reloaded haproxy {self.name} answering on its socket")
        return old

    def slot(self, slot: int):
        return self.state(BACKEND)[slot]

    def sessions(self, slot: int) -> int:
        """`scur` of one server (`show stat` CSV)."""
        lines = self.cmd(f"show stat {BACKEND} 4 {slot}").splitlines()
        header = lines[0].lstrip("# ").split(",")
        row = dict(zip(header, lines[1].split(",")))
        return int(row["scur"] or 0)

    def check_status(self, slot: int) -> str:
        lines = self.cmd(f"show stat {BACKEND} 4 {slot}").splitlines()
        header = lines[0].lstrip("# ").split(",")
        return dict(zip(header, lines[1].split(",")))["check_status"]


def draining(server) -> bool:
    """srv_admin_state has a drain bit (forced or inherited) and no maint bit."""
    return bool(server.admin_bits & 0x18) and not server.admin_bits & 0x23


def in_maint(server) -> bool:
    return bool(server.admin_bits & 0x23)


def serving(server, backend: SlowBackend, weight=WEIGHT) -> bool:
    """In rotation with this backend's address and the table weight, and checked UP."""
    return (server.admin == "ready" and server.addr == backend.ip and server.port == backend.port
            and server.weight == weight and server.op_state == 2)


# --------------------------------------------------------------------------------------------
# The load
# --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    node: str
    key: str
    start: float
    end: float
    status: int  # 0: no HTTP answer
    body: str

    @property
    def ok(self) -> bool:
        return self.status == 200


def get(port: int, path: str, timeout=10.0, headers=None):
    """(status, body) of one GET through a fresh connection; (0, error) without an answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return 0, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


class Load:
    """`threads` clients, each sending GET /obj/<random key> through the nodes in turn (one
    connection per request, so a reload's closing of idle keep-alive connections plays no
    part); every outcome is recorded."""

    def __init__(self, nodes, threads=8, keys=5000, seed=10):
        self.nodes = nodes
        self.threads_n = threads
        self.keys = keys
        self.outcomes = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.rng = random.Random(seed)
        self.threads = []
        self.paused = set()  # names of nodes taken out of the load (as out of DNS)

    def _run(self, index: int):
        rng = random.Random(self.rng.random() + index)
        while not self.stopping.is_set():
            turn = [self.nodes[(index + i) % len(self.nodes)] for i in range(len(self.nodes))]
            node = next((n for n in turn if n.name not in self.paused), turn[0])
            key = f"/obj/{rng.randrange(self.keys)}"
            start = time.monotonic()
            status, body = get(node.frontend_ports[BACKEND], key)
            with self.lock:
                self.outcomes.append(Outcome(node.name, key, start, time.monotonic(), status,
                                             body[:200]))

    def start(self):
        for i in range(self.threads_n):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def snapshot(self):
        with self.lock:
            return list(self.outcomes)

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)

    def failures(self):
        return [o for o in self.snapshot() if not o.ok]

    def wait_requests(self, n: int, timeout=30.0):
        start = self.count()
        wait_until(lambda: self.count() >= start + n, timeout=timeout,
                   what=f"{n} more requests through the load")

    def summary(self) -> str:
        outcomes = self.snapshot()
        failed = [o for o in outcomes if not o.ok]
        by = {}
        for o in outcomes:
            by[o.body if o.ok else "failed"] = by.get(o.body if o.ok else "failed", 0) + 1
        lines = [f"{len(outcomes)} requests, {len(failed)} failed; answered by {by}"]
        lines += [f"  failed: node {o.node} {o.key} at {o.start:.2f}s status {o.status} {o.body}"
                  for o in failed[:20]]
        return "\n".join(lines)


def key_served_by(node, name: str, limit=2000) -> str:
    """A URI that `node` sends to the backend called `name` (asked with X-Delay: 0)."""
    for i in range(limit):
        path = f"/probe/{i}"
        status, body = get(node.frontend_ports[BACKEND], path, headers={"X-Delay": "0"})
        if status == 200 and body == name:
            return path
    raise AssertionError(f"no key of {limit} reaches {name} through {node.name}")


# --------------------------------------------------------------------------------------------
# The lab: orchestrator, store, nodes, agents, backends
# --------------------------------------------------------------------------------------------
class Lab:
    """Backends web-1..web-5 on 127.0.0.2-6, the orchestrator, two nodes, two agents."""

    def __init__(self, procs, tmp_path: Path, drain_timeout=10, check=True, backends=5,
                 agent_extra=None, server_extra=None, load_threads=8,
                 check_inter_ms=CHECK_INTER_MS, interval=INTERVAL):
        self.procs = procs
        self.tmp = tmp_path
        self.db = tmp_path / "hsdo.db"
        self.targets_file = tmp_path / "targets.yaml"
        self.backends = [SlowBackend(procs, f"web-{i + 1}", f"127.0.0.{i + 2}")
                         for i in range(backends)]
        self.targets = [b.target() for b in self.backends]
        self.server_env = dict(BASE_ENV)
        self.server_env.update({
            "SERVER_MODE": "file", "SERVER_FILE_PATH": str(self.targets_file),
            "STORE": "sqlite", "SQLITE_PATH": str(self.db), "INTERVAL": str(interval),
            "HAPROXY_BACKEND_SERVERS_LIST_SIZE": str(SLOTS),
            "HAPROXY_BACKEND_SERVER_MIN_WEIGHT": str(WEIGHT),
            "HAPROXY_BACKEND_SERVER_MAX_WEIGHT": str(WEIGHT),
            "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT": str(drain_timeout),
            "EXPORTER_ADDRESS": "127.0.0.1", "EXPORTER_PORT": str(free_port()),
        })
        self.server_env.update({k: str(v) for k, v in (server_extra or {}).items()})
        self.interval = str(interval)
        self.agent_extra = dict(agent_extra or {})
        self.check = check
        self.check_inter_ms = check_inter_ms
        self.load_threads = load_threads
        self.nodes = []
        self.agents = {}
        self.server = None
        self.load = None

    def start(self):
        for backend in self.backends:
            backend.start()
        write_targets(self.targets_file, self.targets)
        self.server = self.procs.start("hsdo-server", [str(HSDO), "--server"],
                                       env=self.server_env, cwd=str(self.tmp))
        wait_until(lambda: self.server.poll() is not None or self.generation() > 0,
                   timeout=15, what="the orchestrator's first write")
        assert self.server.poll() is None, self.procs.log_of(self.server)
        for name in ("a", "b"):
            node = LifecycleNode(self.procs, name, check=self.check,
                                 check_inter_ms=self.check_inter_ms).start()
            self.nodes.append(node)
            self.start_agent(node)
        self.wait_serving(self.backends, timeout=20)
        return self

    def start_agent(self, node):
        store = SimpleNamespace(path=self.db, size=SLOTS)
        env = agent_env(node, store, interval=self.interval, HSDO_NODE_NAME=f"node-{node.name}",
                        **self.agent_extra)
        self.agents[node.name] = start_agent(self.procs, f"agent-{node.name}", env, self.tmp)
        return self.agents[node.name]

    def close(self):
        if self.load is not None:
            self.load.stop()
        self.procs.stop_all()
        for node in self.nodes:
            node.stop()

    # The store, through the binary
    def status(self) -> dict:
        return json.loads(run_hsdo(["status", "--json"], self.server_env).stdout)

    def generation(self) -> int:
        try:
            return int(self.status()["generation"])
        except (AssertionError, ValueError, KeyError):
            return 0

    def slot_of(self, name: str) -> int:
        for slot in self.status()["slots"]:
            if slot.get("name") == name:
                return int(slot["id"])
        raise AssertionError(f"{name} holds no slot: {self.status()}")

    def hsdo(self, *args, check=True):
        return run_hsdo(list(args), self.server_env, check=check)

    def server_metrics(self) -> dict:
        return metrics(int(self.server_env["EXPORTER_PORT"]))

    # HAProxy, on every node
    def slots(self, slot: int) -> list:
        return [node.slot(slot) for node in self.nodes]

    def wait_serving(self, backends, timeout=20.0):
        """Every backend in its slot on both nodes: ready, its address, the table weight, UP."""
        def check():
            for node in self.nodes:
                servers = node.state(BACKEND)
                for backend in backends:
                    if not any(serving(s, backend) for s in servers.values()):
                        return False
            return True
        wait_until(check, timeout=timeout, interval=0.1,
                   what=f"{[b.name for b in backends]} serving on both nodes")

    def start_load(self):
        self.load = Load(self.nodes, threads=self.load_threads).start()
        return self.load

    def stop_load(self):
        self.load.stop()
        return self.load


@pytest.fixture
def lab_of(procs, tmp_path):
    """Makes and starts a Lab (keyword arguments: Lab's); closes every lab it made."""
    labs = []

    def make(**kwargs):
        lab = Lab(procs, tmp_path, **kwargs)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.close()


def poll(predicate, timeout, interval=0.05):
    """Like wait_until, but returns (monotonic time it became true, value) or (None, last)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return time.monotonic(), last
        time.sleep(interval)
    return None, last


# --------------------------------------------------------------------------------------------
# The scenarios, as observations (the tests assert on them; bench/lifecycle.py counts them)
# --------------------------------------------------------------------------------------------
def long_request(node, key, seconds, results):
    """A request that holds a session for `seconds`, in its own thread; appends
    (node, status, body, monotonic end) to `results`."""
    def run():
        status, body = get(node.frontend_ports[BACKEND], key, timeout=seconds + 10,
                           headers={"X-Delay": str(seconds)})
        results.append((node.name, status, body, time.monotonic()))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def remove_target(lab, leaving: SlowBackend, hold_seconds=3, freed_timeout=15):
    """Scenario (a): with the load running and one request of `hold_seconds` in flight to
    `leaving` through each node, `leaving` is taken out of the targets file. Waits until its
    slot is draining on both nodes (if it ever is) and then freed (maint) on both nodes, and
    only then stops its process, as an ASG would terminate the instance."""
    slot = lab.slot_of(leaving.name)
    keys = {node.name: key_served_by(node, leaving.name) for node in lab.nodes}
    load = lab.start_load()
    load.wait_requests(8)
    held = []
    threads = [long_request(node, keys[node.name], hold_seconds, held) for node in lab.nodes]
    wait_until(lambda: all(node.sessions(slot) >= 1 for node in lab.nodes), timeout=5,
               what="the long requests in flight on both nodes")

    seen = SimpleNamespace(slot=slot, held=held, drained_at=None, drained=None, store_state=None,
                           draining_gauges=None, freed_at=None, freed=None)
    seen.removed_at = time.monotonic()
    write_targets(lab.targets_file, [t for t in lab.targets if t["name"] != leaving.name])

    deadline = time.monotonic() + freed_timeout
    while time.monotonic() < deadline:
        servers = lab.slots(slot)
        now = time.monotonic()
        if seen.drained_at is None and all(draining(s) for s in servers):
            seen.drained_at, seen.drained = now, servers
            seen.store_state = lab.status()["slots"][slot - 1]
        if seen.drained_at is not None and seen.draining_gauges != [1, 1, 1]:
            # Sampled while it drains (a gauge may follow its HAProxy change by a moment).
            seen.draining_gauges = [lab.server_metrics().get("hsdo_slots_draining")] + [
                agent.metrics().get("hsdo_slots_draining") for agent in lab.agents.values()]
        if all(in_maint(s) for s in servers):
            seen.freed_at, seen.freed = now, servers
            break
        time.sleep(0.05)
    leaving.stop()
    for thread in threads:
        thread.join(hold_seconds + 15)
    seen.store_after = lab.status()["slots"][slot - 1]
    load.wait_requests(8)
    lab.stop_load()
    seen.load = load
    return seen


def add_late_target(lab, late: SlowBackend, listen_after=3.0):
    """Scenario (b): with the load running, `late` joins the targets file and its process
    starts listening `listen_after` seconds later. Samples the slot on both nodes until then,
    and waits until it serves with the table weight on both nodes."""
    load = lab.start_load()
    load.wait_requests(8)
    seen = SimpleNamespace(staged_at=None, samples=[], admitted_at=None)
    seen.added_at = time.monotonic()
    write_targets(lab.targets_file, lab.targets + [late.target()])
    seen.slot = wait_until(lambda: next((s["id"] for s in lab.status()["slots"]
                                         if s.get("name") == late.name), None),
                           timeout=5, what=f"{late.name} in the table")
    while time.monotonic() < seen.added_at + listen_after:
        servers = lab.slots(seen.slot)
        if all(s.addr == late.ip and s.port == late.port and s.admin == "ready"
               for s in servers):
            seen.staged_at = seen.staged_at or time.monotonic()
            seen.samples.append(servers)
        time.sleep(0.1)
    late.start()
    seen.listening_at = time.monotonic()
    lab.wait_serving([late], timeout=10)
    seen.admitted_at = time.monotonic()
    wait_until(lambda: any(o.ok and o.body == late.name for o in load.snapshot()), timeout=15,
               what=f"{late.name} answering load requests")
    load.wait_requests(8)
    lab.stop_load()
    seen.load = load
    return seen
