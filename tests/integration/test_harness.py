"""The test harness itself (conftest.py)."""
from conftest import free_port


def test_free_port_never_hands_out_a_port_twice():
    # Without the record of given ports, about 9 of 100 calls repeat one.
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


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
