#!/usr/bin/env python3
"""HAProxy's own cost of a full apply, without hsdo (issue 12, target 5): starts HAProxy 2.6
with two consistent-hash backends of N `disabled` template slots each, and times, from a bare
runtime-API client, what the agent sends to fill them all (addr, weight, state ready per slot,
300 commands per line, or with --one-per-line one per line in prompt mode, as the agent sends
them since 2026-12-03), for each N given; with --by-id the servers are named `#<id>` instead
of `srv<id>` (HAProxy then finds a server by its id, not by comparing names). Shows that HAProxy's time per command grows with N
(each state or weight change of a server passes over its backend's servers).

    python3 bench/haproxy_apply_cost.py 100 300 1000
    python3 bench/haproxy_apply_cost.py --one-per-line 100 300 1000
    python3 bench/haproxy_apply_cost.py --one-per-line --by-id 1000
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """global
  stats socket {sock} level admin
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
""" + "".join(f"""backend {b}
  balance uri
  hash-type consistent
  server-template srv 1-{{n}} 127.0.0.2:80 disabled
""" for b in "ab")


def send(sock, commands):
    if ONE_PER_LINE:
        # As the agent sends since 2026-12-03: prompt mode, one command per line, one
        # connection, replies read while writing.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            data = ("prompt\n" + "".join(c + "\n" for c in commands) + "quit\n").encode()
            s.setblocking(False)
            sent = 0
            while True:
                try:
                    if sent < len(data):
                        sent += s.send(data[sent:sent + 65536])
                except BlockingIOError:
                    pass
                try:
                    if not s.recv(65536):
                        break
                except BlockingIOError:
                    time.sleep(0.0002)
        return
    for start in range(0, len(commands), 300):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall((";".join(commands[start:start + 300]) + "\n").encode())
            while s.recv(65536):
                pass


def fill(n, rnd):
    def srv(i):
        return f"#{i}" if BY_ID else f"srv{i}"
    return [c for b in "ab" for i in range(1, n + 1)
            for c in (f"set server {b}/{srv(i)} addr 127.0.{rnd}.{i % 250 + 1} port 8080",
                      f"set server {b}/{srv(i)} weight {1 + (i + rnd) % 10}",
                      f"set server {b}/{srv(i)} state ready")]


def measure(n, rounds=3):
    work = Path(tempfile.mkdtemp(prefix="hsdo-apply-"))
    sock = str(work / "admin.sock")
    (work / "haproxy.cfg").write_text(CONFIG.format(sock=sock, n=n))
    proc = subprocess.Popen(["haproxy", "-db", "-q", "-f", str(work / "haproxy.cfg")])
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if time.monotonic() > deadline:
                raise RuntimeError("HAProxy did not start")
            time.sleep(0.01)
        times = []
        for rnd in range(3, 3 + rounds):
            commands = fill(n, rnd)
            start = time.perf_counter()
            send(sock, commands)
            times.append((time.perf_counter() - start) * 1000)
            send(sock, [f"set server {b}/srv{i} state maint" for b in "ab" for i in range(1, n + 1)])
        per_command = min(times) * 1000 / len(commands)
        print(f"N={n}: 2 x {n} slots, {len(commands)} commands: "
              f"{', '.join(f'{t:.0f}' for t in times)} ms; {per_command:.1f} us per command (best)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


ONE_PER_LINE = "--one-per-line" in sys.argv
BY_ID = "--by-id" in sys.argv

if __name__ == "__main__":
    for size in [a for a in sys.argv[1:] if not a.startswith("--")] or ["100", "300", "1000"]:
        measure(int(size))
