"""The README's quickstart command runs: two HAProxy nodes agree on 100 % of 1000 hashed URIs,
both follow the removal of one backend (only its URIs move), a reload of node1 with its
state file keeps its slots, `hsdo --config run/env.yaml status` is printed, and everything
the demo started is stopped at the end.

It runs the demo with HSDO_BIN (the binary the suite built) so that the suite does not
build hsdo a second time; `scripts/demo.sh` alone builds it in build-demo/.

While HAProxy hands over to its new process, a connection to its socket can be refused (the
old process closes its listener). The demo must retry, not end: the test puts a `socat` first
in PATH that refuses the demo's first `show info` (the reload's wait for the new process) and
passes every other call to the real one."""
import os
import re
import shutil
import subprocess

from conftest import HSDO, ROOT, free_port

REFUSING_SOCAT = """#!/bin/bash
# Refuses the first "show info" (as HAProxy's old process can while it hands over), once.
input=$(cat)
if [ "$input" = "show info" ] && mkdir "$(dirname "$0")/refused" 2>/dev/null; then
  echo "socat: connect(): Connection refused" >&2
  exit 1
fi
printf '%s\\n' "$input" | exec {real} "$@"
"""


def test_demo_two_nodes_agree_and_follow_a_removal(tmp_path):
    assert HSDO.exists(), f"{HSDO} not built"
    wrapper = tmp_path / "socat"
    wrapper.write_text(REFUSING_SOCAT.format(real=shutil.which("socat")))
    wrapper.chmod(0o755)
    # The suite's ports: another test file running meanwhile never takes them.
    ports = " ".join(str(free_port()) for _ in range(12))
    env = dict(os.environ, HSDO_DEMO_SECONDS="1", HSDO_BIN=str(HSDO), HSDO_DEMO_PORTS=ports,
               PATH=f"{tmp_path}:{os.environ['PATH']}")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env,
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert (tmp_path / "refused").is_dir(), "the demo never asked HAProxy for its process id"
    assert f"port: {ports.split()[0]}," in (ROOT / "run" / "targets.yaml").read_text()
    assert re.search(r"^demo: ready: both HAProxy nodes .* \(\d+\.\d s after start\)$", out, re.M), out
    assert "4 of 10 slots enabled" in out, out
    agreements = re.findall(r"^both nodes agree on (\d+) of (\d+) URIs \(([\d.]+) %\)$", out, re.M)
    assert agreements == [("1000", "1000", "100.0"), ("1000", "1000", "100.0")], out
    # Before the removal: the 1000 URIs spread over the 4 backends, the same on both nodes.
    before = out.split("removing web-4")[0]
    rows = re.findall(r"^  (web-\d)\s+(\d+)\s+(\d+)$", before, re.M)
    assert sorted(r[0] for r in rows) == ["web-1", "web-2", "web-3", "web-4"], out
    assert all(r[1] == r[2] for r in rows) and sum(int(r[1]) for r in rows) == 1000, rows
    # After it: only web-4's URIs moved.
    moved = re.search(r"^URIs that changed backend on node1: (\d+) of 1000, previously on: "
                      r"web-4 (\d+)$", out, re.M)
    assert moved and moved.group(1) == moved.group(2), out
    web4 = dict((r[0], int(r[1])) for r in rows)["web-4"]
    assert int(moved.group(1)) == web4, out
    # A reload with the state file keeps node1's slots: the agent had nothing to repair.
    assert re.search(r"^demo: node1's new process \(pid \d+\) started with the same 3 slots", out,
                     re.M), out
    repairs = re.search(r"^demo: drift repairs by node1's agent: (\d+) before the reload, (\d+) after$",
                        out, re.M)
    assert repairs and repairs.group(1) == repairs.group(2), out
    assert "hsdo --config run/env.yaml status" in out
    # Nothing the demo started is left running.
    assert "demo: stopped." in out
    left = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(ROOT / "run") not in left, "the demo left processes running"


def test_demo_refuses_ports_that_are_no_port_numbers(tmp_path):
    """HSDO_DEMO_PORTS out of range (review: 70000 was taken) is said, exit 2, before anything
    starts."""
    good = [str(free_port()) for _ in range(11)]
    for bad in ("70000", "0", "08080", "80a"):
        env = dict(os.environ, HSDO_BIN=str(HSDO), HSDO_DEMO_PORTS=" ".join(good + [bad]))
        result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env,
                                capture_output=True, text=True, timeout=120, cwd=ROOT,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "HSDO_DEMO_PORTS must be 12 port numbers in 1-65535" in result.stderr, bad
