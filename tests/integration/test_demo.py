"""The README's quickstart command runs, shows traffic spread over the backends, and stops
everything it started."""
import os
import re
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo installs packages (needs root)")
def test_demo_runs_and_cleans_up():
    env = dict(os.environ, HSDO_DEMO_SECONDS="1")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env,
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "4 of 10 slots enabled" in out
    counts = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s+(\d+) (web-\d)$", out, re.M)}
    assert sorted(counts) == ["web-1", "web-2", "web-3", "web-4"], out
    assert sum(counts.values()) == 200
    run_dir = re.search(r"Logs and the SQLite store are in (\S+)", out).group(1)
    left = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert run_dir not in left, "the demo left processes running"
