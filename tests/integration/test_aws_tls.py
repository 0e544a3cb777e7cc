"""DynamoDB over HTTPS, as in production: moto behind a TLS relay (aws_fixtures.TlsRelay) whose
certificate a throwaway CA signs (etcd_fixtures.TlsFiles).

hsdo verifies the endpoint with the CA bundle the AWS CLI and SDKs would use: AWS_CA_BUNDLE,
else the profile's ca_bundle, else the system's CAs. A certificate it cannot verify is an
error, never a fall back to unverified TLS; a bundle that cannot be read is a configuration
error (exit 2) naming where it came from. An agent keeps its TLS connection from cycle to cycle.
"""
import json

import pytest

from aws_fixtures import TlsRelay, moto_keepalive  # noqa: F401 (fixture)
from conftest import HSDO, free_port, run_hsdo, wait_until
from etcd_fixtures import TlsFiles
from haproxy_fixtures import Backend, HaproxyNode, start_agent
from test_leader_lease import write_targets

TABLE = "hsdo-tls"
SLOTS = 4


@pytest.fixture
def tls(tmp_path):
    return TlsFiles(tmp_path / "tls")


@pytest.fixture
def moto(moto_keepalive):
    """DynamoDB keeps connections open, so the relay's do too."""
    return moto_keepalive


@pytest.fixture
def relay(moto, tls):
    relay = TlsRelay(int(moto.url.rsplit(":", 1)[1]), tls.server, tls.server_key)
    yield relay
    relay.close()


def https_env(moto, relay, **extra):
    env = dict(moto.env)
    env.update({"AWS_ENDPOINT_URL": relay.url, "STORE": "dynamodb", "DYNAMODB_TABLE_NAME": TABLE,
                "HAPROXY_BACKEND_SERVERS_LIST_SIZE": str(SLOTS)})
    env.update(extra)
    return env


def tables(moto):
    return moto.client("dynamodb").list_tables()["TableNames"]


def test_aws_ca_bundle_verifies_the_endpoint(moto, relay, tls):
    env = https_env(moto, relay, AWS_CA_BUNDLE=str(tls.ca))
    run_hsdo(["init-table"], env)
    assert TABLE in tables(moto)
    assert relay.handshakes >= 1, "hsdo did not go through the TLS relay"
    doc = json.loads(run_hsdo(["status", "--json"], env).stdout)
    assert len(doc["slots"]) == SLOTS


def test_the_profile_ca_bundle_is_used_without_aws_ca_bundle(moto, relay, tls, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text(f"[profile edge]\nca_bundle = {tls.ca}\n")
    run_hsdo(["init-table"], https_env(moto, relay, AWS_CONFIG_FILE=str(config),
                                       AWS_PROFILE="edge"))
    assert TABLE in tables(moto)


def test_a_certificate_no_trusted_ca_signs_is_refused(moto, relay):
    # No bundle: the system's CAs, which do not know the throwaway CA.
    result = run_hsdo(["init-table"], https_env(moto, relay), check=False)
    assert result.returncode != 0
    # libcurl's detail says why, not only that the TLS handshake failed.
    assert "certificate verification failed" in result.stderr, result.stderr
    assert TABLE not in tables(moto)


def test_a_bundle_that_cannot_be_read_is_a_configuration_error(moto, relay, tmp_path):
    result = run_hsdo(["init-table"], https_env(moto, relay, AWS_CA_BUNDLE=str(tmp_path / "no.pem")),
                      check=False)
    assert result.returncode == 2, result.stderr
    assert "AWS_CA_BUNDLE" in result.stderr

    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nca_bundle = {tmp_path / 'typo.pem'}\n")
    result = run_hsdo(["init-table"], https_env(moto, relay, AWS_CONFIG_FILE=str(config)),
                      check=False)
    assert result.returncode == 2, result.stderr
    assert "ca_bundle" in result.stderr and "typo.pem" in result.stderr
    assert TABLE not in tables(moto)


def test_an_agent_reads_and_reports_on_one_tls_connection_kept_across_cycles(
        moto, relay, tls, procs, tmp_path):
    env = https_env(moto, relay, AWS_CA_BUNDLE=str(tls.ca), INTERVAL="0.2",
                    EXPORTER_ADDRESS="127.0.0.1")
    run_hsdo(["init-table"], env)
    targets = tmp_path / "targets.yaml"
    write_targets(targets, ["127.0.0.11", "127.0.0.12"])
    procs.start("server", [str(HSDO), "--server"],
                env=dict(env, SERVER_MODE="file", SERVER_FILE_PATH=str(targets),
                         EXPORTER_PORT=str(free_port())))
    # The agent has a relay of its own, which counts its connections alone.
    agent_relay = TlsRelay(relay.upstream_port, tls.server, tls.server_key)
    try:
        node = HaproxyNode(procs, "tls", [Backend("app", "srv", slots=SLOTS)]).start()
        agent = start_agent(procs, "agent", dict(env, AWS_ENDPOINT_URL=agent_relay.url,
                                                 HAPROXY_SOCKET_PATH=node.socket,
                                                 HAPROXY_BACKEND_LIST="app:srv:80",
                                                 HSDO_NODE_NAME="edge-tls",
                                                 EXPORTER_PORT=str(free_port())), tmp_path)

        def ready_addresses():
            return sorted(s.addr for s in node.state("app").values() if s.admin == "ready")

        wait_until(lambda: ready_addresses() == ["127.0.0.11", "127.0.0.12"], timeout=20,
                   what="both targets ready in HAProxy through DynamoDB over TLS")
        reports = moto.client("dynamodb")
        wait_until(lambda: "Item" in reports.get_item(TableName=TABLE + "-nodes",
                                                      Key={"NodeName": {"S": "edge-tls"}}),
                   timeout=10, what="the agent's node report")

        cycles = "hsdo_agent_cycle_duration_seconds_count"
        before = agent.metric(cycles)
        wait_until(lambda: agent.metric(cycles) >= before + 15, timeout=20, what="15 more cycles")
        # The table's reads and the node reports, both on DynamoDB, on one connection (each TLS
        # connection holds its own parse of the CA bundle), kept from cycle to cycle.
        assert agent_relay.handshakes == 1
    finally:
        agent_relay.close()


def test_web_identity_credentials_keep_no_connection_between_refreshes(
        moto, relay, tls, procs, tmp_path):
    """IRSA: the credentials come from STS over TLS about once an hour; the STS connection is
    closed after each, rather than kept open (with its parse of the CA bundle) in between."""
    env = https_env(moto, relay, AWS_CA_BUNDLE=str(tls.ca), INTERVAL="0.2",
                    EXPORTER_ADDRESS="127.0.0.1")
    run_hsdo(["init-table"], env)
    token = tmp_path / "web-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJoc2RvIn0.c2lnbmF0dXJl\n")
    agent_relay = TlsRelay(relay.upstream_port, tls.server, tls.server_key)
    try:
        node = HaproxyNode(procs, "irsa", [Backend("app", "srv", slots=SLOTS)]).start()
        agent_env = {k: v for k, v in env.items()
                     if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        agent_env.update(AWS_ENDPOINT_URL=agent_relay.url, AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
                         AWS_ROLE_ARN="arn:aws:iam::123456789012:role/hsdo-agent",
                         HAPROXY_SOCKET_PATH=node.socket, HAPROXY_BACKEND_LIST="app:srv:80",
                         EXPORTER_PORT=str(free_port()))
        agent = start_agent(procs, "agent", agent_env, tmp_path)
        cycles = "hsdo_agent_cycle_duration_seconds_count"
        wait_until(lambda: agent.metric(cycles) >= 10, timeout=20, what="10 cycles")
        assert agent.metric("hsdo_agent_store_errors_total") == 0
        # STS, then DynamoDB: two connections made, the DynamoDB one alone still open.
        assert agent_relay.handshakes == 2
        wait_until(lambda: agent_relay.open == 1, timeout=5, what="the STS connection closed")
    finally:
        agent_relay.close()
