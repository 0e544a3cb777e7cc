#!/usr/bin/env python3
"""End-to-end benchmark of the agent (issue 12): real HAProxy, real `hsdo` processes, the SQLite
store and DynamoDB on moto, N = 10 / 100 / 1000 template slots half filled, INTERVAL = 1 s.
It prints issue 12's table, one column per N, "before -> after" when --baseline names the build
of the previous commit (both are measured in the same run, interleaved, because absolute times
on a shared machine vary a lot).

    .venv/bin/python bench/e2e.py --build build --baseline ../base/build

Everything listens on loopback; every process is started through the test suite's `Processes`
and stopped by its PID. --quick shortens every window (for a smoke run, not for numbers).
"""
import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from aws_fixtures import MOTO_KEEPALIVE, TlsRelay  # noqa: E402
from conftest import BASE_ENV, Processes, free_port, wait_until  # noqa: E402
from etcd_fixtures import TlsFiles  # noqa: E402
from haproxy_fixtures import (HAPROXY, Backend, HaproxyNode, HttpBackends, SlotDb,  # noqa: E402
                              agent_env, parse_servers_state, runtime, start_agent)

REGION, KEY_ID, SECRET = "us-east-1", "AKIDHSDOBENCH", "hsdo-bench-secret"


# ------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, in seconds, with nanosecond resolution (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass  # a thread that just ended
    return total / 1e9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_stat(socket_path: str, backend: str, slot: int):
    """(status, 'ip:port') of one server from `show stat <backend> 4 <sid>`: one CSV line, cheap
    for HAProxy whatever the size of the backend (unlike `show servers state`)."""
    lines = runtime(socket_path, f"show stat {backend} 4 {slot}").splitlines()
    header = lines[0].lstrip("# ").split(",")
    row = dict(zip(header, lines[1].split(",")))
    return row["status"], row["addr"]


def ready_count(node, backend, expected: dict) -> int:
    state = parse_servers_state(runtime(node.socket, f"show servers state {backend}"))
    return sum(1 for slot, (ip, port) in expected.items()
               if state[slot].admin == "ready" and (state[slot].addr, state[slot].port) == (ip, port))


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Load:
    """~`rate` HTTP requests per second through a frontend, each a new URI; counts failures."""

    def __init__(self, url_base: str, rate=25.0):
        self.url_base, self.rate = url_base, rate
        self.ok = self.failed = 0
        self.fail_times = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                with urllib.request.urlopen(f"{self.url_base}/k/{i}", timeout=2) as r:
                    r.read()
                    self.ok += 1
            except OSError:
                self.failed += 1
                self.fail_times.append(time.monotonic())
            self.stop.wait(1.0 / self.rate)

    def close(self):
        self.stop.set()
        self.thread.join(5)


# ------------------------------------------------------------------------------------------
# A lab: one HAProxy, one store, one agent
# ------------------------------------------------------------------------------------------
class StateFileNode(HaproxyNode):
    """HaproxyNode with the documented reload-proof template: a server-state-file and the FQDN
    placeholder with `init-addr last,127.0.0.2` (HAPROXY-FACTS.md)."""

    def write_config(self):
        self.state_file = self.dir / "state"
        self.state_file.write_text("")
        super().write_config()
        text = self.config.read_text()
        text = text.replace("global\n", f"global\n  server-state-file {self.state_file}\n", 1)
        text = text.replace("defaults\n", "defaults\n  load-server-state-from-file global\n", 1)
        text = text.replace(" 127.0.0.2:", " slot.invalid:")
        text = text.replace(" disabled\n", " disabled init-addr last,127.0.0.2\n")
        self.config.write_text(text)

    def save_state(self):
        self.state_file.write_text(runtime(self.socket, "show servers state") + "\n")


def reload_node(node, poll=0.002):
    """Soft reload; returns the monotonic time at which the new process answered."""
    old = node.proc
    node.generation += 1
    node.proc = node.procs.start(f"haproxy-{node.name}-{node.generation}",
                                 [HAPROXY, "-f", str(node.config), "-db", "-sf", str(old.pid)])
    pid = node.proc.pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if node._pid_on_socket() == pid:
            answered = time.monotonic()
            wait_until(lambda: old.poll() is not None, timeout=10, what="old haproxy exiting")
            return answered
        time.sleep(poll)
    raise AssertionError("reloaded haproxy did not answer")


# moto's own server (werkzeug) closes every connection after one answer; DynamoDB keeps them
# open, and so does moto's application served by waitress (aws_fixtures.MOTO_KEEPALIVE), which
# the benchmark uses unless --moto-closes: an agent's connect and close each cycle are then not
# counted as its steady cost.


def require_waitress():
    """Exits with the way out when DynamoTable would need waitress and it is missing."""
    if not DynamoTable.keep_alive:
        return
    try:
        import waitress  # noqa: F401
    except ImportError:
        sys.exit("bench: waitress is missing (keeps moto's connections open, as DynamoDB does): "
                 "pip install -r tests/requirements.txt, or --moto-closes")


class DynamoTable:
    keep_alive = True  # False: moto_server, Connection: close after every answer
    # True: hsdo reaches moto over HTTPS, as it reaches DynamoDB, through a TLS relay
    # (aws_fixtures.TlsRelay) whose throwaway CA it trusts from AWS_CA_BUNDLE, in one file
    # with the system's CAs: the ~140 CAs a production agent loads (http::CaFile).
    tls = False

    def __init__(self, procs, size):
        import boto3
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        if self.keep_alive:
            argv = [sys.executable, "-c", MOTO_KEEPALIVE, "127.0.0.1", str(port)]
        else:
            argv = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                    "-p", str(port)]
        self.proc = procs.start("moto", argv, env=dict(BASE_ENV))

        def up():
            try:
                with urllib.request.urlopen(self.url + "/moto-api/data.json", timeout=1):
                    return True
            except OSError:
                return False
        wait_until(up, timeout=30, what="moto_server")
        self.env = dict(BASE_ENV, AWS_ENDPOINT_URL=self.url, AWS_ACCESS_KEY_ID=KEY_ID,
                        AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION=REGION,
                        STORE="dynamodb", DYNAMODB_TABLE_NAME="hsdo-bench")
        self.relay = None
        if self.tls:
            directory = Path(tempfile.mkdtemp(prefix="hsdo-bench-tls-", dir="/tmp"))
            files = TlsFiles(directory)
            system = Path("/etc/ssl/certs/ca-certificates.crt")
            bundle = directory / "bundle.pem"
            bundle.write_bytes((system.read_bytes() if system.exists() else b"") +
                               files.ca.read_bytes())
            self.relay = TlsRelay(port, files.server, files.server_key)
            self.env.update(AWS_ENDPOINT_URL=self.relay.url, AWS_CA_BUNDLE=str(bundle))
        self.client = boto3.client("dynamodb", endpoint_url=self.url, region_name=REGION,
                                   aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
        self.client.create_table(
            TableName="hsdo-bench", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "BackendServerID", "AttributeType": "N"}],
            KeySchema=[{"AttributeName": "BackendServerID", "KeyType": "HASH"}])
        # As `hsdo init-table` does: the agents' node reports go to <table>-nodes.
        self.client.create_table(
            TableName="hsdo-bench-nodes", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "NodeName", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "NodeName", "KeyType": "HASH"}])
        self.size = size
        self.recent = []  # (generation, slots) of the last writes, for RecentChanges
        self.write({slot: None for slot in range(1, size + 1)})

    def write(self, changes: dict):
        def item(slot, v):
            if v is None:
                return {"BackendServerID": {"N": str(slot)}, "IPAddress": {"S": "none"},
                        "ServerName": {"S": "none"}, "ASG": {"S": "none"}, "Weight": {"N": "0"},
                        "BackendServerStatus": {"S": "disabled"},
                        "LastWeightUpdate": {"S": "0-0-0 00:00:00.000000"}}
            it = {"BackendServerID": {"N": str(slot)}, "IPAddress": {"S": v["ip"]},
                  "ServerName": {"S": v["name"]}, "ASG": {"S": "asg-a"},
                  "Weight": {"N": str(v["weight"])}, "BackendServerStatus": {"S": "enabled"},
                  "LastWeightUpdate": {"S": "2026-01-01 00:00:00.000000"}}
            if v.get("port"):
                it["Port"] = {"N": str(v["port"])}
            return it
        items = [{"PutRequest": {"Item": item(s, v)}} for s, v in changes.items() if s != 1]
        for i in range(0, len(items), 25):
            self.client.batch_write_item(RequestItems={"hsdo-bench": items[i:i + 25]})
        # Slot 1 carries the generation: write it last, as the bump.
        current = self.client.get_item(TableName="hsdo-bench",
                                       Key={"BackendServerID": {"N": "1"}}).get("Item")
        one = item(1, changes[1]) if 1 in changes else (current or item(1, None))
        generation = int(current.get("TableGeneration", {"N": "0"})["N"]) if current else 0
        one["TableGeneration"] = {"N": str(generation + 1)}
        # As the orchestrator does: the slots this write changed, for agents that hold the
        # generation before (they then read only those; older agents ignore it).
        ids = ",".join(str(s) for s in sorted(changes))
        one["LastChange"] = {"S": f"{generation + 1}:{ids}"}
        # And the last few writes (at most 8, 99 ids in all, the newest kept), for agents a
        # few generations behind; the previous version's agents ignore it.
        if not self.recent or self.recent[-1][0] != generation:
            self.recent = []
        self.recent.append((generation + 1, sorted(changes)))
        while len(self.recent) > 1 and (len(self.recent) > 8 or
                                        sum(len(i) for _, i in self.recent) > 99):
            self.recent.pop(0)
        one["RecentChanges"] = {"S": ";".join(f"{g}:{','.join(map(str, i))}"
                                              for g, i in self.recent)}
        self.client.put_item(TableName="hsdo-bench", Item=one)


class Lab:
    def __init__(self, workdir: Path, binary: Path, store: str, size: int, node_cls=HaproxyNode,
                 backends=4):
        self.workdir = workdir
        self.procs = Processes(workdir)
        self.binary = binary
        self.size = size
        self.http = HttpBackends(backends)
        self.node = node_cls(self.procs, "a", [Backend("app", "srv", slots=size)]).start()
        self.store = store
        if store == "sqlite":
            self.db = SlotDb(workdir / "hsdo.db", size)
        else:
            self.db = DynamoTable(self.procs, size)
        self.agent = None

    def target(self, slot):
        t = self.http.target(slot % len(self.http.servers))
        return {"ip": t["ip"], "port": t["port"], "weight": 1 + slot % 10,
                "name": f"web-{slot}", "asg": "asg-a", "az": "az-1", "status": "enabled"}

    def fill(self, slots):
        self.db.write({s: self.target(s) for s in slots})
        return {s: (self.target(s)["ip"], self.target(s)["port"]) for s in slots}

    def free(self, slots):
        self.db.write({s: None for s in slots})

    def start_agent(self, **extra):
        os.environ["HSDO_AGENT_CMD"] = f"{self.binary} --client"
        if self.store == "sqlite":
            env = agent_env(self.node, self.db, interval="1", **extra)
        else:
            env = dict(self.db.env)
            env.update({"HAPROXY_SOCKET_PATH": self.node.socket,
                        "HAPROXY_BACKEND_LIST": "app:srv:80",
                        "HAPROXY_BACKEND_SERVERS_LIST_SIZE": str(self.size), "INTERVAL": "1",
                        "EXPORTER_PORT": str(free_port()), "EXPORTER_ADDRESS": "127.0.0.1"})
            env.update({k: str(v) for k, v in extra.items()})
        self.agent = start_agent(self.procs, "agent", env, self.workdir)
        return self.agent

    def close(self):
        self.procs.stop_all()
        self.node.stop()
        self.http.close()
        if getattr(self.db, "relay", None):
            self.db.relay.close()


# ------------------------------------------------------------------------------------------
# The measurements
# ------------------------------------------------------------------------------------------
def steady(lab, window):
    """Agent RSS, agent CPU per cycle, HAProxy CPU per 30 s (minus HAProxy idle)."""
    hpid = lab.node.proc.pid
    h0 = cpu_seconds(hpid)
    idle = min(window / 3, 10.0)
    time.sleep(idle)
    idle_per_s = (cpu_seconds(hpid) - h0) / idle
    filled = lab.fill(range(1, lab.size // 2 + 1))
    agent = lab.start_agent()
    wait_until(lambda: ready_count(lab.node, "app", filled) == len(filled), timeout=60,
               what="half the slots applied")
    time.sleep(2)  # past the first cycles
    apid = agent.proc.pid
    c0 = agent.metric("hsdo_agent_cycle_duration_seconds_count")
    a0, h0, t0 = cpu_seconds(apid), cpu_seconds(hpid), time.monotonic()
    time.sleep(window)
    a1, h1, t1 = cpu_seconds(apid), cpu_seconds(hpid), time.monotonic()
    c1 = agent.metric("hsdo_agent_cycle_duration_seconds_count")
    return {"rss": rss_mb(apid), "agent_ms": (a1 - a0) * 1000 / max(1, c1 - c0),
            "agent_ms_per_s": (a1 - a0) * 1000 / (t1 - t0),
            "haproxy_30s": max(0.0, (h1 - h0) / (t1 - t0) - idle_per_s) * 30}


def latency(lab, changes, one_write=False):
    """Store change -> READY in HAProxy, per change (ms). Slots above the filled half.
    Each slot is freed after it was timed: in a write of its own (two generations per change,
    so an agent is usually two writes behind at its next cycle), or with one_write in the
    next change's write (one generation per change, as the orchestrator writes a cycle)."""
    free_slots = list(range(lab.size // 2 + 1, lab.size + 1))
    out = []
    previous = None
    for i in range(changes):
        slot = free_slots[i % len(free_slots)]
        want = lab.target(slot)
        time.sleep(random.uniform(0.05, 0.3))  # not in phase with the agent's cycle
        write = {slot: want}
        if previous is not None:
            write[previous] = None
            previous = None
        lab.db.write(write)
        t0 = time.monotonic()
        deadline = t0 + 10
        while time.monotonic() < deadline:
            status, addr = server_stat(lab.node.socket, "app", slot)
            if status != "MAINT" and addr == f"{want['ip']}:{want['port']}":
                out.append((time.monotonic() - t0) * 1000)
                break
            time.sleep(0.002)
        else:
            out.append(float("inf"))
        if one_write:
            previous = slot
        else:
            lab.free([slot])
    if previous is not None:
        lab.free([previous])
    return out


def wait_restored(lab, filled, since):
    """The monotonic time at which every slot of `filled` is ready at its address again (or
    since + 15 s). Polls the slot with the highest id (the agent's last) with a one-line
    `show stat`, then confirms with `show servers state`: polling that for N=1000 every few ms
    would take HAProxy's and the machine's time from the restore it measures."""
    last = max(filled)
    ip, port = filled[last]
    while time.monotonic() - since < 15:
        status, addr = server_stat(lab.node.socket, "app", last)
        if status != "MAINT" and addr == f"{ip}:{port}":
            break
        time.sleep(0.002)
    while time.monotonic() - since < 15:
        if ready_count(lab.node, "app", filled) == len(filled):
            return time.monotonic()
        time.sleep(0.005)
    return time.monotonic()


def reloads(lab, count):
    """Soft reloads without a state file: slots restored after the new process answered (ms),
    failed requests per reload at ~25 req/s."""
    filled = {s: (lab.target(s)["ip"], lab.target(s)["port"]) for s in range(1, lab.size // 2 + 1)}
    load = Load(lab.node.url("app", ""))
    restored = []
    failed_before = 0
    try:
        for _ in range(count):
            time.sleep(random.uniform(0.3, 0.8))
            failed_before = load.failed
            answered = reload_node(lab.node)
            restored.append((wait_restored(lab, filled, answered) - answered) * 1000)
            time.sleep(0.3)
    finally:
        load.close()
    return restored, (load.failed - 0) / max(1, count), failed_before


def state_file_reloads(lab, count):
    """The documented template with a state file: failed requests and slots seen at the
    placeholder across `count` reloads under load."""
    filled = {s: (lab.target(s)["ip"], lab.target(s)["port"]) for s in range(1, lab.size // 2 + 1)}
    load = Load(lab.node.url("app", ""), rate=50)
    placeholder = 0
    try:
        for _ in range(count):
            time.sleep(0.2)
            lab.node.save_state()
            reload_node(lab.node)
            state = parse_servers_state(runtime(lab.node.socket, "show servers state app"))
            placeholder += sum(1 for s in filled if state[s].addr == "127.0.0.2")
    finally:
        load.close()
    return load.failed, load.ok, placeholder


def burst(lab, slots=300, rounds=3):
    """`slots` slots written in one transaction -> all READY (ms)."""
    out = []
    for _ in range(rounds):
        time.sleep(random.uniform(0.05, 0.3))
        expected = lab.fill(range(1, slots + 1))
        t0 = time.monotonic()
        while ready_count(lab.node, "app", expected) < slots and time.monotonic() - t0 < 15:
            time.sleep(0.005)
        out.append((time.monotonic() - t0) * 1000)
        lab.free(range(1, slots + 1))
        wait_until(lambda: ready_count(lab.node, "app", expected) == 0, timeout=15,
                   what="burst freed")
    return out


def orchestrator_cpu(workdir, binary, targets, window):
    procs = Processes(workdir)
    try:
        path = workdir / "targets.yaml"
        lines = ["targets:"]
        for i in range(targets):
            lines += [f'  - ip: "10.{i // 250}.{i % 250}.1"', "    port: 80",
                      f"    name: web-{i}", "    asg: asg-a"]
        path.write_text("\n".join(lines) + "\n")
        port = free_port()
        env = dict(BASE_ENV, SERVER_MODE="file", SERVER_FILE_PATH=str(path), STORE="sqlite",
                   SQLITE_PATH=str(workdir / "orch.db"), INTERVAL="1",
                   HAPROXY_BACKEND_SERVERS_LIST_SIZE=str(targets),
                   HAPROXY_BACKEND_SERVER_MIN_WEIGHT="10", HAPROXY_BACKEND_SERVER_MAX_WEIGHT="10",
                   EXPORTER_ADDRESS="127.0.0.1", EXPORTER_PORT=str(port))
        (workdir / "orch.yaml").write_text("{}\n")
        # Not checked: an hsdo older than 2026-12 refuses init-table for SQLite, and its
        # orchestrator makes the store itself.
        subprocess.run([str(binary), "--config", str(workdir / "orch.yaml"), "init-table"],
                       env=env, cwd=str(workdir), capture_output=True, timeout=60)
        proc = procs.start("server", [str(binary), "--server", "--config",
                                      str(workdir / "orch.yaml")], env=env, cwd=str(workdir),
                           init_store=False)

        def cycles():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    for line in r.read().decode().splitlines():
                        if line.startswith("hsdo_orchestrator_cycle_duration_seconds_count"):
                            return float(line.split()[-1])
            except OSError:
                return 0.0
            return 0.0
        wait_until(lambda: cycles() >= 3, timeout=60, what="orchestrator cycles")
        c0, a0 = cycles(), cpu_seconds(proc.pid)
        time.sleep(window)
        c1, a1 = cycles(), cpu_seconds(proc.pid)
        return (a1 - a0) * 1000 / max(1, c1 - c0)
    finally:
        procs.stop_all()


# ------------------------------------------------------------------------------------------
def run_one(binary, store, size, args, base):
    workdir = Path(tempfile.mkdtemp(prefix=f"b{store[0]}{size}-", dir=base))
    lab = Lab(workdir, binary, store, size)
    try:
        r = steady(lab, args.window)
        lat = latency(lab, args.changes, args.one_write)
        r["lat_med"], r["lat_p99"], r["lat_max"] = (statistics.median(lat), pct(lat, 0.99),
                                                    max(lat))
        if store == "sqlite":
            restored, failed, _ = reloads(lab, args.reloads)
            r["reload_ms"], r["reload_failed"] = statistics.median(restored), failed
            if size >= 1000:
                r["burst"] = burst(lab)
        return r
    finally:
        lab.close()


def run_state_file(binary, size, count, base):
    workdir = Path(tempfile.mkdtemp(prefix="bstate-", dir=base))
    lab = Lab(workdir, binary, "sqlite", size, node_cls=StateFileNode)
    try:
        filled = lab.fill(range(1, size // 2 + 1))
        lab.start_agent()
        wait_until(lambda: ready_count(lab.node, "app", filled) == len(filled), timeout=60,
                   what="slots applied")
        return state_file_reloads(lab, count)
    finally:
        lab.close()


def fmt(before, after, spec):
    f = (lambda v: spec.format(v)) if isinstance(spec, str) else spec
    a = f(after) if after is not None else ""
    return f"{f(before)} → {a}" if before is not None else a


def main():
    # SIGTERM ends the run through the `finally` blocks, which stop every process by its PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--baseline", help="build directory of the previous commit")
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--stores", default="sqlite,dynamodb")
    parser.add_argument("--window", type=float, default=60.0,
                        help="steady window (s); 60 s or more always holds the agent's "
                             "whole-table resync (every 60 s), which shorter windows may miss")
    parser.add_argument("--changes", type=int, default=15, help="store changes timed per run")
    parser.add_argument("--reloads", type=int, default=4, help="reloads timed per run")
    parser.add_argument("--state-file-reloads", type=int, default=20)
    parser.add_argument("--one-write", action="store_true",
                        help="free each timed slot in the next change's write (one generation "
                             "per change) rather than in a write of its own")
    parser.add_argument("--moto-closes", action="store_true",
                        help="serve DynamoDB with moto_server, which closes every connection")
    parser.add_argument("--tls", action="store_true",
                        help="DynamoDB over HTTPS (moto behind a TLS relay), as in production")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    DynamoTable.keep_alive = not args.moto_closes
    DynamoTable.tls = args.tls
    if "dynamodb" in args.stores:
        require_waitress()
    if args.quick:
        args.window, args.changes, args.reloads, args.state_file_reloads = 3, 4, 2, 3
    builds = {"after": Path(args.build).resolve()}
    if args.baseline:
        builds = {"before": Path(args.baseline).resolve(), **builds}
    sizes = [int(s) for s in args.sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="hsdo-bench-", dir="/tmp"))
    results = {}
    for store in args.stores.split(","):
        for size in sizes:
            for label, build in builds.items():  # interleaved: before, after, per cell
                print(f"# {label} {store} N={size}", file=sys.stderr, flush=True)
                results[(label, store, size)] = run_one(build / "src/app/hsdo", store, size,
                                                        args, base)
    state = {label: run_state_file(build / "src/app/hsdo", 100, args.state_file_reloads, base)
             for label, build in builds.items()}
    orch = {label: orchestrator_cpu(Path(tempfile.mkdtemp(dir=base)), build / "src/app/hsdo",
                                    1000, args.window) for label, build in builds.items()}

    def cell(store, size, key, spec):
        after = results.get(("after", store, size), {}).get(key)
        before = results.get(("before", store, size), {}).get(key)
        return fmt(before, after, spec) if after is not None else ""

    def pair(size, key, spec):
        return " / ".join(cell(store, size, key, spec) for store in args.stores.split(","))

    stores = " / ".join("SQLite" if s == "sqlite" else "DynamoDB" for s in args.stores.split(","))
    print(f"| figure | " + " | ".join(f"N={s}" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    rows = [
        (f"agent resident memory, {stores} (MB)", lambda s: pair(s, "rss", "{:.1f}")),
        (f"agent CPU per steady cycle, {stores} (ms)", lambda s: pair(s, "agent_ms", "{:.2f}")),
        (f"agent CPU per second of the steady window, {stores} (ms)",
         lambda s: pair(s, "agent_ms_per_s", "{:.2f}")),
        (f"HAProxy CPU added by the agent per 30 s, {stores} (s)",
         lambda s: pair(s, "haproxy_30s", "{:.3f}")),
        (f"store change → READY, median / p99 / max, {stores} (ms)",
         lambda s: " / ".join(
             f"{cell(st, s, 'lat_med', '{:.0f}')}, {cell(st, s, 'lat_p99', '{:.0f}')}, "
             f"{cell(st, s, 'lat_max', '{:.0f}')}" for st in args.stores.split(","))),
        ("soft reload, no state file: slots restored after the new process answers, median (ms)",
         lambda s: cell("sqlite", s, "reload_ms", "{:.0f}")),
        ("failed requests per reload at ~25 req/s (no state file)",
         lambda s: cell("sqlite", s, "reload_failed", "{:.1f}")),
        ("300 slots written at once (SQLite) → all READY, each round (ms)",
         lambda s: cell("sqlite", s, "burst", lambda v: ", ".join(f"{x:.0f}" for x in v))),
    ]
    for name, fn in rows:
        print(f"| {name} | " + " | ".join(fn(s) for s in sizes) + " |")
    print()
    for label, (failed, ok, placeholder) in state.items():
        print(f"{label}: state file + FQDN placeholder, N=100, {args.state_file_reloads} reloads "
              f"under ~50 req/s: {failed} failed of {failed + ok} requests, "
              f"{placeholder} slot reads at the placeholder right after a reload")
    for label, ms in orch.items():
        print(f"{label}: orchestrator CPU per cycle, 1000 unchanged file targets: {ms:.2f} ms")


if __name__ == "__main__":
    main()
