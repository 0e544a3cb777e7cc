"""The test harness itself (conftest.py)."""
from conftest import free_port


def test_free_port_never_hands_out_a_port_twice():
    # Without the record of given ports, about 9 of 100 calls repeat one.
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
