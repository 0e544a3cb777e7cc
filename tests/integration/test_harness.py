"""The test harness itself (conftest.py)."""
import subprocess
import sys
from pathlib import Path

import conftest
from conftest import free_port


def test_free_port_never_hands_out_a_port_twice():
    # Without the record of given ports, about 9 of 100 calls repeat one.
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_each_process_is_given_ports_no_other_process_and_no_bind_0_is_given():
    # scripts/test.sh runs the suite in pytest-xdist workers, and another run of the suite may
    # run on the same machine meanwhile: two processes handed the same port start two servers
    # on it. And a port from the kernel's ephemeral range may be taken by an outgoing
    # connection between the test's choice and its server's bind.
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    conftest.free_port()
    mine = conftest._port_block[0].start

    def claimed_by_another_process() -> int:
        result = subprocess.run(
            [sys.executable, "-c", "import conftest; conftest.free_port(); "
                                   "print(conftest._port_block[0].start)"],
            cwd=Path(conftest.__file__).parent, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return int(result.stdout)

    elsewhere = claimed_by_another_process()
    assert elsewhere != mine
    block, lock = conftest._claim_port_block()  # held as another worker holds its own
    try:
        assert block.start not in (mine, claimed_by_another_process())
    finally:
        lock.close()
    for start in (mine, elsewhere, block.start):
        end = start + conftest.PORT_BLOCK_SIZE - 1
        assert end < low or start > high, (start, low, high)


def test_an_unexpected_skip_fails_and_is_counted_under_workers(tmp_path):
    # The skip is turned into a failure in the worker, and counted in the process that prints
    # the summary (it said "unexpected skips: 0" under pytest-xdist before).
    (tmp_path / "conftest.py").write_text(Path(conftest.__file__).read_text())
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_skips():\n    pytest.skip('no data')\n\n"
        "@pytest.mark.allowed_skip('may')\ndef test_may_skip():\n    pytest.skip('allowed')\n\n"
        "def test_passes():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-n", "2", str(tmp_path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "unexpected skips: 1\n" in result.stdout, result.stdout
    assert "test_skips.py::test_skips: Skipped: no data" in result.stdout, result.stdout
    assert "1 failed, 1 passed, 1 skipped" in result.stdout, result.stdout


def test_slot_db_leaves_no_connection_open(tmp_path):
    # Flakiness review: each connection SlotDb opened stayed open (a reference cycle with its
    # statement cache) until the garbage collector closed it, at a moment of its own: a write
    # to the database files that woke the agent's watcher inside an idle test's window.
    import gc
    import sqlite3

    from haproxy_fixtures import SlotDb

    gc.collect()
    gc.disable()
    try:
        db = SlotDb(tmp_path / "hsdo.db", 4)
        db.put(1, "127.0.0.1")
        assert db.generation() == 1
        open_connections = [o for o in gc.get_objects() if isinstance(o, sqlite3.Connection)]
    finally:
        gc.enable()
    assert open_connections == []
