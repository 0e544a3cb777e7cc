"""The AWS API emulator for the AWS tests: moto in server mode on 127.0.0.1.

`moto` starts `moto_server` (from the test virtualenv) on a free loopback port through
conftest's `Processes`, so it is stopped by its PID; `moto.env` is the environment that
points hsdo and boto3 at it (AWS_ENDPOINT_URL, fake keys, a region, and the instance
metadata service disabled). The emulator hands out private-range instance addresses
(10.x, 172.x): nothing here ever connects to them.
"""
import json
import os
import shutil
import socket
import ssl
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import BASE_ENV, free_port, metrics, run_hsdo, wait_until

REGION = "us-east-1"
FAKE_KEY_ID = "AKIDHSDOTEST"
FAKE_SECRET = "hsdo-test-secret-key-never-logged"
TABLE = "hsdo-service-discovery-orchestrator"


def _moto_server_path() -> str:
    venv_bin = Path(sys.executable).parent
    for candidate in (venv_bin / "moto_server", shutil.which("moto_server")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("moto_server is not installed (pip install -r tests/requirements.txt)")


@dataclass
class Moto:
    url: str
    env: dict = field(default_factory=dict)

    def client(self, service):
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET)


class TlsRelay:
    """HTTPS on a free loopback port in front of an HTTP server on `upstream_port` (moto), with
    `certificate`/`key` (TlsFiles' server certificate for 127.0.0.1): AWS as hsdo reaches it in
    production, over TLS. Every connection is relayed byte for byte; close() stops them."""

    def __init__(self, upstream_port: int, certificate, key):
        self.upstream_port = upstream_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(certificate), str(key))
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.sockets = []
        self.handshakes = 0  # connections that completed a TLS handshake
        self.open = 0  # of those, the ones the client has not closed yet
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()  # a client that refused our certificate
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self.lock:
            self.handshakes += 1
            self.open += 1
            self.sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)
        with self.lock:
            self.open -= 1

    @staticmethod
    def _pump(source, destination):
        try:
            while data := source.recv(65536):
                destination.sendall(data)
        except OSError:
            pass
        for s in (source, destination):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


def _up(url):
    try:
        with urllib.request.urlopen(url + "/moto-api/data.json", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


# moto's application served by waitress: connections stay open between requests, as
# DynamoDB's do (moto_server, werkzeug, closes every connection after one answer).
# `python -c MOTO_KEEPALIVE HOST PORT`.
MOTO_KEEPALIVE = """
import sys
from waitress import serve
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
serve(DomainDispatcherApplication(create_backend_app), host=sys.argv[1], port=int(sys.argv[2]),
      threads=4, _quiet=True)
"""


@pytest.fixture
def moto(procs):
    yield from _moto(procs, lambda port: [_moto_server_path(), "-H", "127.0.0.1", "-p", str(port)])


@pytest.fixture
def moto_keepalive(procs):
    """`moto`, keeping connections open (MOTO_KEEPALIVE)."""
    yield from _moto(procs, lambda port: [sys.executable, "-c", MOTO_KEEPALIVE, "127.0.0.1",
                                          str(port)])


def _moto(procs, argv_for_port):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = procs.start("moto", argv_for_port(port), env=dict(BASE_ENV))
    wait_until(lambda: proc.poll() is not None or _up(url), timeout=30, what="moto_server")
    if proc.poll() is not None:
        raise AssertionError("moto_server exited:\n" + procs.log_of(proc))
    env = dict(BASE_ENV)
    env.update({
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    # boto3 in this process must not find anything else either.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    yield Moto(url=url, env=env)
    procs.stop(proc)


@pytest.fixture
def aws_env(moto):
    """The orchestrator on the emulator: SERVER_MODE=aws, STORE=dynamodb (table TABLE)."""
    env = dict(moto.env)
    env.update({
        "STORE": "dynamodb",
        "DYNAMODB_TABLE_NAME": TABLE,
        "SERVER_MODE": "aws",
        "INTERVAL": "0.3",
        "EXPORTER_ADDRESS": "127.0.0.1",
        "EXPORTER_PORT": str(free_port()),
    })
    return env


def status(env):
    """`hsdo status --json` with `env`."""
    return json.loads(run_hsdo(["status", "--json"], env).stdout)


def metric(env, series):
    """One series (`name{labels}` as exposed) of the orchestrator's /metrics, or None."""
    return metrics(int(env["EXPORTER_PORT"])).get(series)


def create_asg(moto, name, size, az, launch_config="hsdo-lc"):
    """An Auto Scaling group of `size` instances in `az` (the emulator starts them)."""
    autoscaling = moto.client("autoscaling")
    existing = autoscaling.describe_launch_configurations(
        LaunchConfigurationNames=[launch_config])["LaunchConfigurations"]
    if not existing:
        autoscaling.create_launch_configuration(
            LaunchConfigurationName=launch_config, ImageId="ami-12c6146b",
            InstanceType="t3.micro")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchConfigurationName=launch_config, MinSize=0,
        MaxSize=50, DesiredCapacity=size, AvailabilityZones=[az])


def asg_instances(moto, name):
    """[(instance id, lifecycle state, health)] of one group."""
    groups = moto.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return [(i["InstanceId"], i["LifecycleState"], i["HealthStatus"])
            for g in groups for i in g["Instances"]]


SEED_ATTRIBUTES = ("BackendServerID", "IPAddress", "ServerName", "ASG", "Weight",
                   "BackendServerStatus", "LastWeightUpdate")


def seed_client_view(moto, table):
    """Reads the table the way the original Python client does: a Scan of every item, each
    indexed by the six seed attributes (a missing one would raise KeyError, as it crashes
    them). Returns {slot id: (ip, name, asg, weight, status, last update)}."""
    dynamodb = moto.client("dynamodb")
    items, kwargs = [], {"TableName": table}
    while True:
        page = dynamodb.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    view = {}
    for item in items:
        view[int(item["BackendServerID"]["N"])] = (
            item["IPAddress"]["S"], item["ServerName"]["S"], item["ASG"]["S"],
            int(item["Weight"]["N"]), item["BackendServerStatus"]["S"],
            item["LastWeightUpdate"]["S"])
    return view
