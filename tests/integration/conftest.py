"""Shared fixtures for tests that drive the real hsdo binary and real peers.

Every process a test starts is registered with `procs` and stopped by its PID at the end;
nothing is ever killed by name. Servers bind to loopback only.
"""
import fcntl
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("HSDO_BUILD_DIR", ROOT / "build"))
HSDO = Path(os.environ.get("HSDO_BIN", BUILD / "src" / "app" / "hsdo"))

# Nothing in a test may reach the cloud metadata addresses.
BASE_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": os.environ.get("HOME", "/root"),
    "AWS_EC2_METADATA_DISABLED": "true",
    "LANG": "C.UTF-8",
}
# A sanitizer build of hsdo (HSDO_BIN) writes its reports where these say (scripts/test.sh).
BASE_ENV.update({name: os.environ[name] for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS")
                 if name in os.environ})
# SIGTERM to exit: the README's "within a second". The orchestrator's store requests are given
# 800 ms of it (main.cc, DelayedStop), and it exits 0.82-0.87 s after the signal when its store
# hangs. The sanitizer build (HSDO_SANITIZED=1, scripts/test.sh) takes about 50 ms more, and
# LeakSanitizer's scan at exit: its run measures the errors, not the second.
STOP_BUDGET_S = 1.5 if os.environ.get("HSDO_SANITIZED") == "1" else 1.0


PORT_BLOCK_SIZE = 2000


def _port_blocks() -> list:
    """Blocks of ports outside the kernel's ephemeral range (ip_local_port_range, where an
    outgoing connection or a `bind(0)` may take a port between a test's choice and its server's
    bind), from 10000 up."""
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    starts = [*range(10000, low - PORT_BLOCK_SIZE + 1, PORT_BLOCK_SIZE),
              *range(max(high + 1, 10000), 65536 - PORT_BLOCK_SIZE + 1, PORT_BLOCK_SIZE)]
    return [range(start, start + PORT_BLOCK_SIZE) for start in starts]


def _claim_port_block():
    """(block, lock): a block of ports this process alone hands out. Each block is claimed with
    an flock on a file of its own, which the kernel frees when the process ends however it
    ends: no other process of the suite, another pytest-xdist worker or another run of the
    suite on the machine, hands out the same ports (the kernel gives a port just closed to the
    next `bind(0)` again, 9 repeats in 100 calls measured)."""
    for block in _port_blocks():
        # Read-only: a lock file another user made is locked all the same.
        lock = os.fdopen(os.open(f"/tmp/hsdo-test-ports-{block.start}.lock",
                                 os.O_RDONLY | os.O_CREAT, 0o644))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return block, lock
    raise RuntimeError("every block of test ports outside the kernel's ephemeral range is held by "
                       "other test processes (/tmp/hsdo-test-ports-*.lock): run fewer at once")


_port_block = None  # claimed at the first free_port()
_next_port = 0


def free_port(ip: str = "127.0.0.1") -> int:
    """A port free on `ip` now, from this process's block, in turn: one is handed out again only
    after the rest of the block (two servers of one test never share one: an etcd cluster whose
    members' peer URLs were the same port never elected a leader)."""
    global _port_block, _next_port
    if _port_block is None:
        _port_block = _claim_port_block()
    block = _port_block[0]
    for _ in range(len(block)):
        port = block[_next_port % len(block)]
        _next_port += 1
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue  # in use, or in TIME_WAIT
        return port
    raise RuntimeError(f"no free port on {ip} in {block}")


def metrics(port: int) -> dict:
    """{'name{labels}': value} from an hsdo exporter on 127.0.0.1:`port`; {} while it does not
    answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                values[key] = float(value)
            except ValueError:
                pass
    return values


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls `predicate` until it returns a truthy value; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Processes:
    """Starts processes and stops each one by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs = []

    def start(self, name, argv, env=None, cwd=None, init_store=True) -> subprocess.Popen:
        """Starts `argv`. An orchestrator (`--server`) starts on a store made as the README
        says, by `hsdo init-table` with the same configuration first (idempotent); a test of
        a store that was never made, or that cannot answer, passes init_store=False."""
        if init_store and "--server" in argv:
            init = [arg for arg in argv if arg != "--server"] + ["init-table"]
            made = subprocess.run(init, env=env, cwd=cwd, capture_output=True, text=True,
                                  timeout=60)
            assert made.returncode == 0, f"{name}: hsdo init-table: {made.stderr}"
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        proc.hsdo_name = name
        proc.hsdo_log = self.log_dir / f"{name}.log"
        self.procs.append((proc, log))
        return proc

    def log_of(self, proc) -> str:
        return Path(proc.hsdo_log).read_text(errors="replace")

    def stop(self, proc, timeout=5.0) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self):
        for proc, log in reversed(self.procs):
            self.stop(proc)
            log.close()
        self.procs.clear()


@pytest.fixture
def procs(tmp_path):
    p = Processes(tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def hsdo_env():
    """A clean environment for hsdo: no inherited AWS or HSDO variables."""
    return dict(BASE_ENV)


def run_hsdo(args, env, timeout=30, check=True):
    result = subprocess.run([str(HSDO), *args], env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"hsdo {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


# A skipped test is not a pass (issue 8 item 10). A skip turns into a failure unless the test
# carries @pytest.mark.allowed_skip("why"); the summary prints how many skips there were. The
# report is changed where the test ran (a pytest-xdist worker) and counted where it is logged
# (the controlling process, which prints the summary).
UNEXPECTED_SKIP = "unexpected skip (a skip is not a pass): "
UNEXPECTED_SKIPS = []


def pytest_configure(config):
    config.addinivalue_line("markers", "allowed_skip(reason): this test may skip, and why")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if item.get_closest_marker("allowed_skip") is not None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = UNEXPECTED_SKIP + reason


def pytest_runtest_logreport(report):
    if report.failed and str(report.longrepr).startswith(UNEXPECTED_SKIP):
        UNEXPECTED_SKIPS.append(f"{report.nodeid}: {str(report.longrepr)[len(UNEXPECTED_SKIP):]}")


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"unexpected skips: {len(UNEXPECTED_SKIPS)}")
    for line in UNEXPECTED_SKIPS:
        terminalreporter.write_line(f"  {line}")
