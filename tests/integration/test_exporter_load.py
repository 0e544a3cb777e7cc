"""The exporter cannot be starved (issue 8 item 7): with 300 slowloris connections or 1000
idle connections open to EXPORTER_PORT, /metrics and /healthz still answer within 1 s.

Everything is on loopback; every socket the test opens is bounded in number and closed at
the end. The attacker connects from another loopback address (127.0.0.2) than the scraper
(127.0.0.1), as Prometheus and an attacker would; HSDO_ATTACK_SOURCE=127.0.0.1 measures the
case where both share an address (best effort: the exporter cannot tell them apart)."""
import os
import resource
import socket
import threading
import time
import urllib.request

import pytest

from conftest import HSDO, free_port, wait_until

SCRAPE_BUDGET = 1.0  # seconds, per request
ATTACK_SOURCE = os.environ.get("HSDO_ATTACK_SOURCE", "127.0.0.2")


@pytest.fixture
def exporter(procs, hsdo_env, tmp_path):
    # The test process holds up to ~1300 sockets.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  - {ip: 127.0.0.1, port: 8080, name: web-1}\n")
    port = free_port()
    env = dict(hsdo_env, SERVER_MODE="file", SERVER_FILE_PATH=str(targets), STORE="sqlite",
               SQLITE_PATH=str(tmp_path / "hsdo.db"), INTERVAL="1",
               EXPORTER_ADDRESS="127.0.0.1", EXPORTER_PORT=str(port))
    procs.start("server", [str(HSDO), "--server"], env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(base + "/healthz", 2.0)[0] == 200, timeout=20, what="exporter up")
    yield port, base
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def get(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except OSError as error:
        return None, str(error).encode()


def scrape_latencies(base, seconds=3.0, max_rounds=100):
    """Scrapes /metrics and /healthz in turn for `seconds` (longer than the exporter's 2 s
    header timeout, so the attack's connections are timed out and re-opened meanwhile) and
    returns each request's latency; a failed scrape counts as 99 s."""
    latencies = []
    deadline = time.monotonic() + seconds
    for _ in range(max_rounds):
        if time.monotonic() >= deadline:
            break
        for path in ("/metrics", "/healthz"):
            start = time.monotonic()
            status, body = get(base + path, timeout=5.0)
            elapsed = time.monotonic() - start
            ok = status == 200 and (path != "/metrics" or b"hsdo_" in body)
            latencies.append(elapsed if ok else 99.0)
        time.sleep(0.05)
    return latencies


class Attack:
    """Keeps `count` connections open to the port (re-opening any the server closes, at most
    `max_opens` times in all); slowloris ones trickle a header line every 0.5 s."""

    def __init__(self, port, count, slowloris, max_opens):
        self.port, self.count, self.slowloris, self.max_opens = port, count, slowloris, max_opens
        self.socks, self.opens, self.stop = [], 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open_one(self):
        if self.opens >= self.max_opens:
            return None
        self.opens += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((ATTACK_SOURCE, 0))
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))
        if self.slowloris:
            try:
                s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass
        return s

    def __enter__(self):
        for _ in range(self.count):
            s = self.open_one()
            if s is not None:
                self.socks.append(s)
        self.thread.start()
        time.sleep(0.5)  # let the server take the connections in before measuring
        return self

    def run(self):
        deadline = time.monotonic() + 120
        while not self.stop.wait(0.5) and time.monotonic() < deadline:
            for i, s in enumerate(self.socks):
                try:
                    if self.slowloris:
                        s.send(b"X-a: b\r\n")
                    elif s.recv(1, socket.MSG_PEEK) == b"":
                        raise OSError("closed")
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    replacement = self.open_one()
                    if replacement is not None:
                        self.socks[i] = replacement

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            s.close()


@pytest.mark.parametrize("slowloris,count", [(True, 300), (False, 1000)],
                         ids=["300-slowloris", "1000-idle"])
def test_scrape_answers_within_one_second_under_load(exporter, slowloris, count):
    port, base = exporter
    with Attack(port, count, slowloris, max_opens=count * 10) as attack:
        latencies = scrape_latencies(base)
        opened = attack.opens
    latencies.sort()
    print(f"{count} {'slowloris' if slowloris else 'idle'} connections from {ATTACK_SOURCE} "
          f"({opened} opened): "
          f"scrape latency median {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms over {len(latencies)} requests")
    assert latencies[-1] < SCRAPE_BUDGET, latencies
    # And the exporter is still there once the load is gone.
    assert get(base + "/healthz", 2.0)[0] == 200
