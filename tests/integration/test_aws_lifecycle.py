"""ASG life-cycle states through the real binary, against the emulator: an instance put in
Standby is a target that drains (it keeps its slot), and one that leaves Standby is a normal
target again, in the same slot.

The emulator does not implement lifecycle hooks, so `Terminating:Wait` and
CompleteLifecycleAction are tested against recorded AWS answers in
src/aws/asg_source_test.cc. Instances of the emulator have private-range addresses: nothing
here connects to them.
"""
import json
import urllib.request

import pytest

from aws_fixtures import asg_instances, create_asg, moto  # noqa: F401 (fixture)
from conftest import HSDO, free_port, run_hsdo, wait_until

TABLE = "hsdo-service-discovery-orchestrator"


@pytest.fixture
def aws_env(moto):
    env = dict(moto.env)
    env.update({
        "STORE": "dynamodb",
        "DYNAMODB_TABLE_NAME": TABLE,
        "SERVER_MODE": "aws",
        "SERVER_ASG_NAMES": "web",
        "INTERVAL": "0.3",
        # A draining slot is kept rather than freed at once.
        "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT": "300",
        "EXPORTER_ADDRESS": "127.0.0.1",
        "EXPORTER_PORT": str(free_port()),
    })
    return env


def status(env):
    return json.loads(run_hsdo(["status", "--json"], env).stdout)


def held(env):
    """{instance id: (slot id, state)} of the slots that hold a target."""
    return {s["name"]: (s["id"], s["state"]) for s in status(env)["slots"]
            if s.get("name") and s["state"] != "free" and s.get("address")}


def gauge(env, kind):
    """hsdo_aws_asg_instances{kind=...} from the orchestrator's /metrics, or None."""
    url = f"http://127.0.0.1:{env['EXPORTER_PORT']}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    prefix = f'hsdo_aws_asg_instances{{kind="{kind}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


def test_a_standby_instance_drains_and_comes_back_to_its_slot(moto, aws_env, procs):
    create_asg(moto, "web", 3, "us-east-1a")
    run_hsdo(["init-table"], aws_env)
    server = procs.start("server", [str(HSDO), "--server"], env=aws_env)
    doc = wait_until(lambda: (d := status(aws_env))["enabled"] == 3 and d, timeout=30,
                     what="3 slots enabled")
    before = {s["name"]: s["id"] for s in doc["slots"] if s["state"] == "enabled"}
    wait_until(lambda: gauge(aws_env, "draining_target") == 0, timeout=10,
               what="the draining gauge")

    autoscaling = moto.client("autoscaling")
    standby = sorted(before)[1]
    # Not decrementing: the emulator would terminate an instance to meet the new capacity.
    autoscaling.enter_standby(AutoScalingGroupName="web", InstanceIds=[standby],
                              ShouldDecrementDesiredCapacity=False)
    assert (standby, "Standby", "Healthy") in asg_instances(moto, "web")
    wait_until(lambda: gauge(aws_env, "draining_target") == 1, timeout=10,
               what="the Standby instance discovered as draining")
    # It did not vanish: its slot still holds it (draining where the orchestrator drains).
    now = held(aws_env)
    assert now[standby][0] == before[standby], now
    assert now[standby][1] in ("enabled", "draining"), now
    for name, slot in before.items():
        assert now[name][0] == slot

    autoscaling.exit_standby(AutoScalingGroupName="web", InstanceIds=[standby])
    wait_until(lambda: gauge(aws_env, "draining_target") == 0, timeout=10,
               what="the instance back in service")
    # A normal target again, in its own slot; nothing else moved. (Leaving Standby raises
    # the desired capacity in the emulator, so a fourth instance may join.)
    wait_until(lambda: held(aws_env).get(standby) == (before[standby], "enabled"), timeout=10,
               what="the instance enabled in its own slot")
    after = held(aws_env)
    for name, slot in before.items():
        assert after[name] == (slot, "enabled"), after

    log = procs.log_of(server)
    assert aws_env["AWS_SECRET_ACCESS_KEY"] not in log
    assert procs.stop(server) == 0
