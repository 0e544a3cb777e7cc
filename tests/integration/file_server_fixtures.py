"""An orchestrator on a targets file and SQLite (SERVER_MODE=file, STORE=sqlite), shared by
test_server_file.py and test_set_state.py."""
import json
import os

import pytest

from conftest import free_port, run_hsdo


def write_targets(path, targets):
    """Writes a targets file atomically, as a config tool would."""
    lines = ["targets:"]
    for t in targets:
        lines.append(f"  - ip: \"{t['ip']}\"")
        for key in ("port", "name", "asg", "az", "state"):
            if key in t:
                lines.append(f"    {key}: {t[key]}")
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


@pytest.fixture
def server_env(tmp_path, hsdo_env):
    env = dict(hsdo_env)
    env.update({
        "SERVER_MODE": "file",
        "SERVER_FILE_PATH": str(tmp_path / "targets.yaml"),
        "STORE": "sqlite",
        "SQLITE_PATH": str(tmp_path / "hsdo.db"),
        "INTERVAL": "0.2",
        "EXPORTER_ADDRESS": "127.0.0.1",
        "EXPORTER_PORT": str(free_port()),
    })
    return env


def status(env):
    return json.loads(run_hsdo(["status", "--json"], env).stdout)


def slots_by_id(doc):
    return {s["id"]: s for s in doc["slots"]}
