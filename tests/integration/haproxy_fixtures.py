"""Real HAProxy nodes, loopback HTTP backends, the SQLite slot store and the agent, for the
agent's integration tests.

- `HaproxyNode` runs Debian's haproxy in the foreground (`-db`) with a generated config on
  127.0.0.1, its own stats socket under a short /tmp path (unix socket paths must stay under
  108 bytes) and its own ports; `reload()` starts a new process with `-sf <old pid>`. Every
  process goes through conftest's `Processes` and is stopped by its PID.
- `HttpBackends` are threaded HTTP servers inside the test process that answer with their name.
- `SlotDb` writes the slot table straight into the SQLite file, with the store's own schema
  (read from src/store/sqlite_store.cc) and a generation bump per write, like the orchestrator.
- `agent_argv()` runs `hsdo --client` (HSDO_AGENT_CMD overrides it).
"""
import contextlib
import functools
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import BASE_ENV, HSDO, ROOT, free_port, metrics, wait_until

HAPROXY = os.environ.get("HAPROXY_BIN", shutil.which("haproxy") or "/usr/sbin/haproxy")
PLACEHOLDER = "127.0.0.2"


# --------------------------------------------------------------------------------------------
# HAProxy
# --------------------------------------------------------------------------------------------
@dataclass
class Backend:
    name: str
    base: str
    slots: int = 10
    port: int = 80
    check: bool = False  # only toward loopback servers the test starts itself


@dataclass
class ServerState:
    id: int
    name: str
    addr: str
    port: int
    op_state: int
    admin_bits: int
    weight: int

    @property
    def admin(self) -> str:
        if self.admin_bits & 0x23:
            return "maint"
        if self.admin_bits & 0x18:
            return "drain"
        return "ready"


def runtime(socket_path: str, command: str, timeout=5.0) -> str:
    """One command on a stats socket; returns the reply without its trailing empty line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode().rstrip("\n")


def parse_servers_state(reply: str) -> dict:
    lines = reply.splitlines()
    assert lines and lines[0] == "1", f"unexpected show servers state reply: {reply[:200]!r}"
    servers = {}
    for line in lines[1:]:
        if not line or line.startswith("#"):
            continue
        f = line.split()
        servers[int(f[2])] = ServerState(id=int(f[2]), name=f[3], addr=f[4], port=int(f[18]),
                                         op_state=int(f[5]), admin_bits=int(f[6]),
                                         weight=int(f[7]))
    return servers


class HaproxyNode:
    def __init__(self, procs, name: str, backends, balance="uri", check_inter_ms=500,
                 hash_type="consistent", placeholder=PLACEHOLDER, template_options="",
                 frontend_prefix="fe_"):
        self.procs = procs
        # "": each frontend has its backend's name (declared first, as configurations often do).
        self.frontend_prefix = frontend_prefix
        self.placeholder = placeholder
        self.template_options = template_options  # appended to each server-template line
        self.name = name
        self.backends = list(backends)
        self.balance = balance
        self.hash_type = hash_type  # None: HAProxy's default (map-based, a static algorithm)
        self.check_inter_ms = check_inter_ms
        self.dir = Path(tempfile.mkdtemp(prefix="hx", dir="/tmp"))
        self.socket = str(self.dir / "s.sock")
        # A second stats socket on TCP, for HAPROXY_SOCKET_PATH=ipv4@127.0.0.1:<port>.
        self.tcp_socket_port = free_port()
        self.frontend_ports = {b.name: free_port() for b in self.backends}
        self.config = self.dir / "haproxy.cfg"
        self.proc = None
        self.generation = 0
        self.write_config()

    def write_config(self):
        lines = [
            "global",
            f"  stats socket {self.socket} level admin",
            f"  stats socket ipv4@127.0.0.1:{self.tcp_socket_port} level admin",
            "  maxconn 2000",
            "defaults",
            "  mode http",
            "  timeout connect 1s",
            "  timeout client 10s",
            "  timeout server 10s",
            "  retries 0",
        ]
        for b in self.backends:
            lines += [
                f"frontend {self.frontend_prefix}{b.name}",
                f"  bind 127.0.0.1:{self.frontend_ports[b.name]}",
                f"  default_backend {b.name}",
                f"backend {b.name}",
                f"  balance {self.balance}",
                f"  hash-type {self.hash_type}" if self.hash_type else "",
                f"  default-server inter {self.check_inter_ms}ms",
                f"  server-template {b.base} 1-{b.slots} {self.placeholder}:{b.port}"
                + (" check" if b.check else "") + " disabled" + self.template_options,
            ]
        self.config.write_text("\n".join(lines) + "\n")
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(self.config)], check=True)

    def _pid_on_socket(self):
        try:
            for line in runtime(self.socket, "show info", timeout=1).splitlines():
                if line.startswith("Pid: "):
                    return int(line[5:])
        except OSError:
            return None
        return None

    def start(self):
        self.generation += 1
        self.proc = self.procs.start(f"haproxy-{self.name}-{self.generation}",
                                     [HAPROXY, "-f", str(self.config), "-db"])
        pid = self.proc.pid
        wait_until(lambda: self._pid_on_socket() == pid, timeout=10,
                   what=f"haproxy {self.name} answering on its socket")
        return self

    def reload(self):
        """Soft reload: a new process takes over with -sf; runtime changes are lost."""
        old = self.proc
        self.generation += 1
        self.proc = self.procs.start(
            f"haproxy-{self.name}-{self.generation}",
            [HAPROXY, "-f", str(self.config), "-db", "-sf", str(old.pid)])
        pid = self.proc.pid
        wait_until(lambda: self._pid_on_socket() == pid, timeout=10,
                   what=f"reloaded haproxy {self.name} answering on its socket")
        wait_until(lambda: old.poll() is not None, timeout=10, what="old haproxy exiting")
        return self

    def stop(self):
        if self.proc is not None:
            self.procs.stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def cmd(self, command: str) -> str:
        return runtime(self.socket, command)

    def state(self, backend: str) -> dict:
        return parse_servers_state(self.cmd(f"show servers state {backend}"))

    def url(self, backend: str, path: str) -> str:
        return f"http://127.0.0.1:{self.frontend_ports[backend]}{path}"


# --------------------------------------------------------------------------------------------
# Loopback HTTP backends
# --------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus delayed ACKs add
    # 40 ms to every request.
    disable_nagle_algorithm = True

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.server.hsdo_name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # health checks close connections abruptly; that is not a test failure


class HttpBackends:
    """`count` HTTP servers on 127.0.0.1, each on its own port (so a target is address + port)
    and answering every request with its name."""

    def __init__(self, count: int, prefix="web"):
        self.servers = []
        self.threads = []
        for i in range(count):
            server = _QuietServer(("127.0.0.1", 0), _Handler)
            server.hsdo_name = f"{prefix}-{i + 1}"
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      daemon=True)
            thread.start()
            self.servers.append(server)
            self.threads.append(thread)

    def target(self, i: int) -> dict:
        server = self.servers[i]
        return {"ip": "127.0.0.1", "port": server.server_address[1], "name": server.hsdo_name,
                "asg": "asg-a", "az": "az-1"}

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


def fetch(url: str, timeout=5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def backend_of_keys(node: HaproxyNode, backend: str, keys) -> dict:
    """Maps every URI key to the name of the server that answered it (one request each)."""
    import http.client
    out = {}
    conn = http.client.HTTPConnection("127.0.0.1", node.frontend_ports[backend], timeout=5)
    for key in keys:
        conn.request("GET", key)
        response = conn.getresponse()
        out[key] = response.read().decode() if response.status == 200 else f"<{response.status}>"
    conn.close()
    return out


# --------------------------------------------------------------------------------------------
# The SQLite slot store, written directly
# --------------------------------------------------------------------------------------------
def store_schema() -> str:
    """The SQLite store's DDL, taken from the store's source so the two never drift apart."""
    source = (ROOT / "src" / "store" / "sqlite_store.cc").read_text()
    match = re.search(r'R"sql\((.*?)\)sql"', source, re.S)
    assert match, "cannot find the schema in src/store/sqlite_store.cc"
    return match.group(1)


@contextlib.contextmanager
def sqlite_connection(target, **kwargs):
    """An SQLite connection for one transaction (committed on success) that is closed at the
    end. `with sqlite3.connect(...)` only commits: the connection stays open until the garbage
    collector closes it, at a moment of its own, which is a write to the database files (the
    WAL's checkpoint) that wakes an agent's watcher (a flaky idle-agent test)."""
    db = sqlite3.connect(target, **kwargs)
    try:
        with db:
            yield db
    finally:
        db.close()


class SlotDb:
    """The slot table in the agent's SQLite file. Each write bumps the generation in the same
    transaction, as the orchestrator does."""

    def __init__(self, path: Path, size: int):
        self.path = Path(path)
        self.size = size
        with self._connect() as db:
            db.executescript(store_schema())

    @contextlib.contextmanager
    def _connect(self):
        with sqlite_connection(self.path, timeout=10) as db:
            db.execute("PRAGMA journal_mode=WAL")
            yield db

    def put(self, slot: int, ip: str, weight=10, name=None, asg="asg-a", port=None, az="az-1",
            status="enabled"):
        self.write({slot: dict(ip=ip, weight=weight, name=name or ip, asg=asg, port=port, az=az,
                               status=status)})

    def free(self, *slots):
        self.write({slot: None for slot in slots})

    def write(self, changes: dict):
        with self._connect() as db:
            for slot, item in changes.items():
                if item is None:
                    db.execute(
                        "INSERT OR REPLACE INTO slots (BackendServerID, IPAddress, ServerName, ASG,"
                        " Weight, BackendServerStatus, LastWeightUpdate, Port, AZ)"
                        " VALUES (?, 'none', 'none', 'none', 0, 'disabled',"
                        " '0-0-0 00:00:00.000000', NULL, NULL)", (slot,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO slots (BackendServerID, IPAddress, ServerName, ASG,"
                        " Weight, BackendServerStatus, LastWeightUpdate, Port, AZ)"
                        " VALUES (?, ?, ?, ?, ?, ?, '2026-01-01 00:00:00.000000', ?, ?)",
                        (slot, item["ip"], item["name"], item["asg"], item["weight"],
                         item["status"], item["port"], item["az"]))
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def generation(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]


# --------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def hsdo_has_client() -> bool:
    if not HSDO.exists():
        return False
    try:
        out = subprocess.run([str(HSDO), "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--client" in out.stdout + out.stderr


def agent_argv(config_file: Path, dry_run=False) -> list:
    """The command that runs the agent with `config_file`: `hsdo --client`, or HSDO_AGENT_CMD."""
    extra = ["--dry-run"] if dry_run else []
    if os.environ.get("HSDO_AGENT_CMD"):
        return shlex.split(os.environ["HSDO_AGENT_CMD"]) + ["--config", str(config_file)] + extra
    assert hsdo_has_client(), f"{HSDO} does not exist or has no --client: build hsdo first"
    return [str(HSDO), "--client", "--config", str(config_file)] + extra


@dataclass
class AgentRun:
    proc: object
    metrics_port: int
    env: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        """The agent's metrics as {'name{labels}': value}; {} while it does not answer."""
        return metrics(self.metrics_port)

    def metric(self, name: str, default=0.0) -> float:
        return self.metrics().get(name, default)


def agent_env(node: HaproxyNode, db: SlotDb, backends=None, interval="0.5", **extra) -> dict:
    backends = backends if backends is not None else node.backends
    env = dict(BASE_ENV)
    env.update({
        "HAPROXY_SOCKET_PATH": node.socket,
        "HAPROXY_BACKEND_LIST": ",".join(f"{b.name}:{b.base}:{b.port}" for b in backends),
        "HAPROXY_BACKEND_SERVERS_LIST_SIZE": str(db.size),
        "STORE": "sqlite",
        "SQLITE_PATH": str(db.path),
        "INTERVAL": str(interval),
        "EXPORTER_PORT": str(free_port()),
        "EXPORTER_ADDRESS": "127.0.0.1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_agent(procs, name: str, env: dict, workdir: Path) -> AgentRun:
    config = workdir / f"{name}.yaml"
    config.write_text("{}\n")
    proc = procs.start(name, agent_argv(config), env=env, cwd=str(workdir))
    run = AgentRun(proc=proc, metrics_port=int(env["EXPORTER_PORT"]), env=env)
    wait_until(lambda: proc.poll() is not None or run.metrics(), timeout=15,
               what=f"{name} serving metrics")
    assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{procs.log_of(proc)}"
    return run


def cycles(run: AgentRun) -> float:
    return run.metric("hsdo_agent_cycle_duration_seconds_count")


def wait_cycles(run: AgentRun, n=2, timeout=15.0):
    """Waits until the agent has completed `n` more cycles."""
    start = cycles(run)
    wait_until(lambda: cycles(run) >= start + n, timeout=timeout, what=f"{n} agent cycles")


def write_commands(run: AgentRun) -> float:
    m = run.metrics()
    return sum(m.get(f'hsdo_agent_runtime_commands_total{{kind="{k}"}}', 0.0)
               for k in ("addr", "weight", "state", "health"))


# --------------------------------------------------------------------------------------------
# A recording relay in front of a stats socket
# --------------------------------------------------------------------------------------------
class SocketRecorder:
    """A unix socket that relays to `target` and records every byte a client sends, so a test
    can assert what reached HAProxy, and how many connections a cycle used."""

    def __init__(self, target: str):
        self.target = target
        self.dir = Path(tempfile.mkdtemp(prefix="hr", dir="/tmp"))
        self.path = str(self.dir / "r.sock")
        self.sent = bytearray()
        self.connections = 0
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.target)
        except OSError:
            client.close()
            return

        def pump(src, dst, record):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if record:
                        with self.lock:
                            self.sent += data
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (dst,):
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass

        up = threading.Thread(target=pump, args=(client, upstream, True), daemon=True)
        up.start()
        pump(upstream, client, False)
        up.join(timeout=5)
        client.close()
        upstream.close()

    def text(self) -> str:
        with self.lock:
            return self.sent.decode(errors="replace")

    def close(self):
        self.closed = True
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)
