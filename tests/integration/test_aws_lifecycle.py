"""ASG life-cycle states through the real binary, against the emulator: an instance put in
Standby is a target that drains (it keeps its slot), and one that leaves Standby is a normal
target again, in the same slot. Without the node table (only the slot table created, as the
seed's README tells), a drain is one warning and ends at its timeout.

The emulator does not implement lifecycle hooks, so `Terminating:Wait` and
CompleteLifecycleAction are tested against recorded AWS answers in
src/aws/asg_source_test.cc. Instances of the emulator have private-range addresses: nothing
here connects to them.
"""
import pytest

from aws_fixtures import (TABLE, asg_instances, create_asg, metric, moto,  # noqa: F401
                          status)
from aws_fixtures import aws_env as orchestrator_env  # noqa: F401 (fixture)
from conftest import HSDO, run_hsdo, wait_until


@pytest.fixture
def aws_env(orchestrator_env):
    # A draining slot is kept rather than freed at once.
    orchestrator_env.update({"SERVER_ASG_NAMES": "web",
                             "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT": "300"})
    return orchestrator_env


def held(env):
    """{instance id: (slot id, state)} of the slots that hold a target."""
    return {s["name"]: (s["id"], s["state"]) for s in status(env)["slots"]
            if s.get("name") and s["state"] != "free" and s.get("address")}


def gauge(env, kind):
    """hsdo_aws_asg_instances{kind=...} from the orchestrator's /metrics, or None."""
    return metric(env, f'hsdo_aws_asg_instances{{kind="{kind}"}}')


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


def test_without_the_node_table_a_drain_warns_once_and_times_out(moto, aws_env, procs):
    """A user who created only the slot table (as the seed's README tells): the orchestrator
    says once that node reports are missing, does not fail its cycles nor ask every cycle,
    and a draining slot is freed at HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT."""
    create_asg(moto, "web", 3, "us-east-1a")
    run_hsdo(["init-table"], aws_env)
    moto.client("dynamodb").delete_table(TableName=TABLE + "-nodes")
    aws_env["HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT"] = "3"
    # Not init-table again: it would create the node table.
    server = procs.start("server", [str(HSDO), "--server"], env=aws_env, init_store=False)
    doc = wait_until(lambda: (d := status(aws_env))["enabled"] == 3 and d, timeout=30,
                     what="3 slots enabled")
    leaving = sorted(s["name"] for s in doc["slots"] if s["state"] == "enabled")[0]
    moto.client("ec2").terminate_instances(InstanceIds=[leaving])
    wait_until(lambda: held(aws_env).get(leaving, (0, ""))[1] == "draining", timeout=30,
               what="the terminated instance's slot draining")
    # What a Python agent reads of the draining item (IPAddress and Weight only): weight 0,
    # no new request, as a drain; hsdo keeps the slot's weight beside it.
    slot = next(s for s in status(aws_env)["slots"] if s.get("name") == leaving)
    item = moto.client("dynamodb").get_item(
        TableName=TABLE, Key={"BackendServerID": {"N": str(slot["id"])}}, ConsistentRead=True)
    item = item["Item"]
    assert item["Weight"] == {"N": "0"} and item["BackendServerStatus"] == {"S": "disabled"}, item
    assert item["DrainingWeight"] == {"N": str(slot["weight"])} and slot["weight"] > 0, item
    wait_until(lambda: leaving not in held(aws_env), timeout=30,
               what="the slot freed at the drain timeout")
    scans = metric(aws_env, 'hsdo_aws_requests_total{operation="Scan",'
                            'outcome="ResourceNotFoundException",service="dynamodb"}')
    assert scans == 1, f"the missing node table was scanned {scans} times"
    assert metric(aws_env, "hsdo_orchestrator_store_errors_total") == 0
    log = procs.log_of(server)
    assert log.count("node reports are not in the store") == 1, log
    assert TABLE + "-nodes" in log and "init-table" in log, log
    assert procs.stop(server) == 0
