"""The Consul double itself behaves as Consul's HTTP API documentation describes, so that
the tests that run hsdo against it test something real. No hsdo binary needed."""
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "consul_double"))
from double_client import ConsulDouble, make_self_signed_cert  # noqa: E402


@pytest.fixture
def double(procs):
    return ConsulDouble(procs)


def health(double, service, query="", headers=None, timeout=30):
    return double.request("GET", f"/v1/health/service/{service}{query}", headers=headers,
                          timeout=timeout)


def test_lists_instances_with_consuls_shape(double):
    double.register("web", "web-1", address="127.0.0.21", port=8080, node="n1",
                    node_meta={"zone": "a"}, meta={"v": "1"})
    status, headers, body = health(double, "web")
    assert status == 200
    assert int(headers["X-Consul-Index"]) > 0
    [entry] = body
    assert entry["Node"]["Node"] == "n1"
    assert entry["Node"]["Meta"] == {"zone": "a"}
    assert entry["Service"]["ID"] == "web-1"
    assert entry["Service"]["Address"] == "127.0.0.21"
    assert entry["Service"]["Port"] == 8080
    assert entry["Service"]["Meta"] == {"v": "1"}
    assert entry["Service"]["CreateIndex"] > 0
    assert {c["Status"] for c in entry["Checks"]} == {"passing"}


def test_passing_filters_critical_instances(double):
    double.register("web", "a", address="127.0.0.21", port=1)
    double.register("web", "b", address="127.0.0.22", port=1, status="critical")
    assert [e["Service"]["ID"] for e in health(double, "web")[2]] == ["a", "b"]
    assert [e["Service"]["ID"] for e in health(double, "web", "?passing=true")[2]] == ["a"]
    assert [e["Service"]["ID"] for e in health(double, "web", "?passing")[2]] == ["a"]
    assert len(health(double, "web", "?passing=false")[2]) == 2


def test_maintenance_adds_a_critical_check_that_passing_filters(double):
    double.register("web", "a", address="127.0.0.21", port=1, node="n1")
    double.register("web", "b", address="127.0.0.22", port=1, node="n2")
    double.register("api", "c", address="127.0.0.23", port=1, node="n2")
    double.maintenance("web", "a", reason="deploying")
    [a, b] = health(double, "web")[2]
    [maint] = [c for c in a["Checks"] if c["CheckID"] == "_service_maintenance:a"]
    assert maint["Status"] == "critical" and maint["Notes"] == "deploying"
    assert maint["ServiceID"] == "a"
    assert {c["Status"] for c in b["Checks"]} == {"passing"}
    assert [e["Service"]["ID"] for e in health(double, "web", "?passing")[2]] == ["b"]

    _, headers, _ = health(double, "api")
    index = int(headers["X-Consul-Index"])
    assert double.maintenance(node="n2")["services"] == ["web", "api"]
    _, headers, [c] = health(double, "api")
    assert int(headers["X-Consul-Index"]) > index  # a blocking query on api returns
    assert [x["Status"] for x in c["Checks"] if x["CheckID"] == "_node_maintenance"] == \
        ["critical"]
    assert health(double, "web", "?passing")[2] == []

    double.maintenance("web", "a", enable=False)
    double.maintenance(node="n2", enable=False)
    assert len(health(double, "web", "?passing")[2]) == 2
    assert all(c["Status"] == "passing" for e in health(double, "web")[2] for c in e["Checks"])


def test_tag_and_filter(double):
    double.register("web", "a", address="127.0.0.21", port=1, tags=["v1"])
    double.register("web", "b", address="127.0.0.22", port=1, tags=["v2"])
    assert [e["Service"]["ID"] for e in health(double, "web", "?tag=v2")[2]] == ["b"]
    query = "?filter=%22v1%22%20in%20Service.Tags"
    assert [e["Service"]["ID"] for e in health(double, "web", query)[2]] == ["a"]


def test_unknown_datacenter_is_an_error(double):
    assert health(double, "web", "?dc=dc1")[0] == 200
    status, _, body = health(double, "web", "?dc=elsewhere")
    assert status == 500 and "No path to datacenter" in body


def test_blocking_query_returns_on_change(double):
    double.register("web", "a", address="127.0.0.21", port=1)
    _, headers, _ = health(double, "web")
    index = int(headers["X-Consul-Index"])
    timer = threading.Timer(0.3, lambda: double.register("web", "b", address="127.0.0.22",
                                                         port=1))
    timer.start()
    start = time.monotonic()
    status, headers, body = health(double, "web", f"?index={index}&wait=10s")
    elapsed = time.monotonic() - start
    timer.join()
    assert status == 200
    assert 0.25 < elapsed < 2.0
    assert int(headers["X-Consul-Index"]) > index
    assert len(body) == 2
    assert double.requests("web")[-1]["ended_by"] == "change"


def test_blocking_query_times_out_after_wait_without_change(double):
    double.register("web", "a", address="127.0.0.21", port=1)
    _, headers, _ = health(double, "web")
    index = int(headers["X-Consul-Index"])
    start = time.monotonic()
    status, headers, _ = health(double, "web", f"?index={index}&wait=500ms")
    elapsed = time.monotonic() - start
    assert status == 200
    # wait plus at most wait/16 of jitter
    assert 0.45 < elapsed < 0.5 + 0.5 / 16 + 0.3
    assert int(headers["X-Consul-Index"]) == index
    assert double.requests("web")[-1]["ended_by"] == "timeout"


def test_set_index_backwards_wakes_a_blocked_query(double):
    double.register("web", "a", address="127.0.0.21", port=1)
    _, headers, _ = health(double, "web")
    index = int(headers["X-Consul-Index"])
    timer = threading.Timer(0.2, lambda: double.set_index("web", 3))
    timer.start()
    start = time.monotonic()
    _, headers, _ = health(double, "web", f"?index={index}&wait=10s")
    timer.join()
    assert time.monotonic() - start < 2.0
    assert headers["X-Consul-Index"] == "3"


def test_fail_answers_500_for_a_count_then_recovers(double):
    double.fail(500, count=2)
    assert health(double, "web")[0] == 500
    assert health(double, "web")[0] == 500
    assert health(double, "web")[0] == 200


def test_acl_tokens(procs):
    double = ConsulDouble(procs, token="root-secret")
    double.register("web", "a", address="127.0.0.21", port=1)
    status, _, body = health(double, "web", headers={"X-Consul-Token": "nope"})
    assert status == 403 and "ACL not found" in body
    # No token: the anonymous token may read nothing; Consul filters list results.
    status, headers, body = health(double, "web")
    assert status == 200 and body == []
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    status, _, body = health(double, "web", headers={"X-Consul-Token": "root-secret"})
    assert status == 200 and len(body) == 1
    assert double.requests("web")[-1]["token_present"] is True


def test_catalog_services_lists_services_with_instances_and_their_tags(procs):
    double = ConsulDouble(procs, token="root-secret")
    root = {"X-Consul-Token": "root-secret"}

    def services(headers=root, query=""):
        return double.request("GET", f"/v1/catalog/services{query}", headers=headers)

    # A service Consul never heard of answers [] on the health endpoint, and is not listed.
    assert health(double, "nope", headers=root)[2] == []
    double.register("web", "a", address="127.0.0.21", port=1, tags=["v2", "primary"])
    double.register("web", "b", address="127.0.0.22", port=1, tags=["v2"])
    double.register("api", "c", address="127.0.0.23", port=1)
    status, headers, body = services()
    assert status == 200 and body == {"api": [], "web": ["primary", "v2"]}
    assert int(headers["X-Consul-Index"]) > 0
    assert services(query="?dc=nowhere")[0] == 500
    # Consul forgets a service with its last instance.
    double.deregister("api", "c")
    assert services()[2] == {"web": ["primary", "v2"]}
    # ACLs: as for the health endpoint.
    assert services(headers={"X-Consul-Token": "nope"})[0] == 403
    status, headers, body = services(headers={})
    assert status == 200 and body == {}
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"


def test_https(procs, tmp_path):
    cert, key = make_self_signed_cert(tmp_path)
    double = ConsulDouble(procs, tls_cert=cert, tls_key=key)
    assert double.url.startswith("https://")
    double.register("web", "a", address="127.0.0.21", port=1)
    assert len(health(double, "web")[2]) == 1
