"""The orchestrator on AWS through the real binary, against the emulator:
`hsdo init-table`, `hsdo --server` with SERVER_MODE=aws and STORE=dynamodb, and
`hsdo status --json`. Instances of the emulator have private-range addresses: nothing here
connects to them; the slot table is compared through `status` and through a read of the
table the way the original Python client reads it.
"""
from aws_fixtures import (TABLE, aws_env, create_asg, moto, seed_client_view,  # noqa: F401
                          status)
from conftest import HSDO, run_hsdo, wait_until


def enabled_slots(doc):
    return {s["id"]: s for s in doc["slots"] if s["state"] == "enabled"}


def running_ips(moto, group):
    """{instance id: (private ip, az)} of the group's InService, Healthy, running instances."""
    autoscaling, ec2 = moto.client("autoscaling"), moto.client("ec2")
    members = [i for g in autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[group])["AutoScalingGroups"] for i in g["Instances"]
        if i["LifecycleState"] == "InService" and i["HealthStatus"] == "Healthy"]
    if not members:
        return {}
    out = {}
    for r in ec2.describe_instances(InstanceIds=[m["InstanceId"] for m in members])["Reservations"]:
        for i in r["Instances"]:
            if i["State"]["Name"] == "running":
                out[i["InstanceId"]] = (i["PrivateIpAddress"], i["Placement"]["AvailabilityZone"])
    return out


def test_init_table_creates_the_seed_table_and_is_idempotent(moto, aws_env):
    run_hsdo(["init-table"], aws_env)
    run_hsdo(["init-table"], aws_env)
    table = moto.client("dynamodb").describe_table(TableName=TABLE)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "BackendServerID", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [
        {"AttributeName": "BackendServerID", "AttributeType": "N"}]
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 20
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 20


def test_a_missing_table_is_a_clear_error(aws_env):
    aws_env["DYNAMODB_TABLE_NAME"] = "hsdo-no-such-table"
    result = run_hsdo(["status", "--json"], aws_env, check=False)
    assert result.returncode != 0
    assert "hsdo-no-such-table" in result.stderr + result.stdout
    assert aws_env["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout


def test_server_follows_the_asgs_and_never_moves_a_live_target(moto, aws_env, procs):
    create_asg(moto, "web", 3, "us-east-1a")
    create_asg(moto, "api", 2, "us-east-1b")
    run_hsdo(["init-table"], aws_env)
    aws_env["SERVER_ASG_NAMES"] = "web,api"
    aws_env["DEBUG"] = "true"
    server = procs.start("server", [str(HSDO), "--server"], env=aws_env)

    doc = wait_until(lambda: (d := status(aws_env))["enabled"] == 5 and d, timeout=30,
                     what="5 slots enabled")
    before = enabled_slots(doc)
    expected = {**running_ips(moto, "web"), **running_ips(moto, "api")}
    assert {s["name"]: (s["address"], s["az"]) for s in before.values()} == expected
    assert {s["group"] for s in before.values()} == {"web", "api"}
    assert all(s["port"] is None for s in before.values())
    assert sorted(before) == [1, 2, 3, 4, 5]

    # The original Python client reads the same table.
    view = seed_client_view(moto, TABLE)
    for slot_id, s in before.items():
        ip, name, asg, weight, state, _ = view[slot_id]
        assert (ip, name, asg, state) == (s["address"], s["name"], s["group"], "enabled")

    # Scale out: the new instances take free slots; nothing else moves.
    autoscaling = moto.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=5)
    doc = wait_until(lambda: (d := status(aws_env))["enabled"] == 7 and d, timeout=30,
                     what="scale out to 7")
    after = enabled_slots(doc)
    for slot_id, s in before.items():
        assert after[slot_id]["name"] == s["name"] and after[slot_id]["address"] == s["address"]
    assert sorted(after) == [1, 2, 3, 4, 5, 6, 7]

    # An instance marked Unhealthy leaves its slot; the others stay where they are.
    sick_slot, sick = next((i, s) for i, s in sorted(after.items()) if s["group"] == "api")
    autoscaling.set_instance_health(InstanceId=sick["name"], HealthStatus="Unhealthy")
    doc = wait_until(lambda: (d := status(aws_env))["enabled"] == 6 and d, timeout=30,
                     what="unhealthy instance removed")
    now = enabled_slots(doc)
    assert sick_slot not in now
    for slot_id, s in after.items():
        if slot_id != sick_slot:
            assert now[slot_id]["name"] == s["name"]

    # A terminated instance (EC2 state) leaves too.
    gone_slot, gone = next((i, s) for i, s in sorted(now.items()) if s["group"] == "web")
    moto.client("ec2").terminate_instances(InstanceIds=[gone["name"]])
    doc = wait_until(lambda: gone["name"] not in {s["name"] for s in enabled_slots(
        status(aws_env)).values()} and status(aws_env), timeout=30, what="terminated removed")
    final = enabled_slots(doc)
    assert gone_slot not in final or final[gone_slot]["name"] != gone["name"]
    for slot_id, s in now.items():
        if slot_id != gone_slot and s["name"] in {f["name"] for f in final.values()}:
            assert final[slot_id]["name"] == s["name"]

    log = procs.log_of(server)
    assert aws_env["AWS_SECRET_ACCESS_KEY"] not in log
    assert "Signature=" not in log
    assert procs.stop(server) == 0


def test_overflow_keeps_the_oldest(moto, aws_env, procs):
    create_asg(moto, "big", 5, "us-east-1a")
    run_hsdo(["init-table"], aws_env)
    aws_env.update({"SERVER_ASG_NAMES": "big", "HAPROXY_BACKEND_SERVERS_LIST_SIZE": "3"})
    server = procs.start("server", [str(HSDO), "--server"], env=aws_env)
    doc = wait_until(lambda: (d := status(aws_env))["enabled"] == 3 and d["overflow"] == 2 and d,
                     timeout=30, what="3 slots and an overflow of 2")
    assert len(enabled_slots(doc)) == 3
    procs.stop(server)
