"""Issue 4's scenario on the emulator: two Auto Scaling groups in moto, `hsdo --server`
with SERVER_MODE=aws and STORE=dynamodb, and two agents beside two real HAProxy nodes.
Scale out, scale in, an instance marked Unhealthy, one terminated: the HAProxy slots
follow the table, surviving targets never move, and both nodes hold identical slots.

The emulator's instances have private-range addresses: nothing may connect to them, so the
template slots carry no `check` and no request goes through HAProxy; the nodes are compared
by `show servers state` only.
"""
import json

from aws_fixtures import create_asg, moto  # noqa: F401 (fixture)
from conftest import HSDO, free_port, run_hsdo, wait_until
from haproxy_fixtures import Backend, HaproxyNode, start_agent

TABLE = "hsdo-scenario"
SLOTS = 10


def table_slots(env):
    doc = json.loads(run_hsdo(["status", "--json"], env).stdout)
    return {s["id"]: s for s in doc["slots"] if s["state"] == "enabled"}


def node_view(node):
    """{slot: (addr, port, weight)} for ready slots; every other slot must be in maint."""
    view = {}
    for slot_id, server in node.state("app").items():
        if server.admin == "ready":
            view[slot_id] = (server.addr, server.port, server.weight)
        elif server.admin != "maint":
            view[slot_id] = ("?", server.admin)
    return view


def converged(env, nodes, count):
    """The table has `count` targets and every node shows exactly it; returns the table."""
    table = table_slots(env)
    if len(table) != count:
        return None
    want = {i: (s["address"], 80, s["weight"]) for i, s in table.items()}
    return table if all(node_view(n) == want for n in nodes) else None


def test_two_asgs_two_nodes_follow_scaling(moto, procs, tmp_path):  # noqa: F811
    create_asg(moto, "web", 3, "us-east-1a")
    create_asg(moto, "api", 2, "us-east-1b")
    common = dict(moto.env)
    common.update({
        "STORE": "dynamodb", "DYNAMODB_TABLE_NAME": TABLE,
        "HAPROXY_BACKEND_SERVERS_LIST_SIZE": str(SLOTS), "INTERVAL": "0.3",
        "EXPORTER_ADDRESS": "127.0.0.1",
    })
    run_hsdo(["init-table"], common)

    server_env = dict(common, SERVER_MODE="aws", SERVER_ASG_NAMES="web,api",
                      HAPROXY_BACKEND_SERVER_MIN_WEIGHT="10",
                      HAPROXY_BACKEND_SERVER_MAX_WEIGHT="10", EXPORTER_PORT=str(free_port()))
    server = procs.start("server", [str(HSDO), "--server"], env=server_env)

    nodes, agents = [], []
    try:
        for name in ("a", "b"):
            node = HaproxyNode(procs, name, [Backend("app", "srv", slots=SLOTS)]).start()
            nodes.append(node)
            agent_env = dict(common, HAPROXY_SOCKET_PATH=node.socket,
                             HAPROXY_BACKEND_LIST="app:srv:80", EXPORTER_PORT=str(free_port()))
            agents.append(start_agent(procs, f"agent-{name}", agent_env, tmp_path))

        first = wait_until(lambda: converged(server_env, nodes, 5), timeout=30,
                           what="5 targets on both nodes")
        assert {s["group"] for s in first.values()} == {"web", "api"}
        assert sorted(first) == [1, 2, 3, 4, 5]

        def assert_survivors_kept(before, after):
            names_after = {s["name"]: i for i, s in after.items()}
            for slot_id, s in before.items():
                if s["name"] in names_after:
                    assert names_after[s["name"]] == slot_id, f"{s['name']} moved"
                    assert after[slot_id]["address"] == s["address"]

        # Scale out: web 3 -> 6.
        autoscaling = moto.client("autoscaling")
        autoscaling.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=6)
        out = wait_until(lambda: converged(server_env, nodes, 8), timeout=30, what="scale out")
        assert_survivors_kept(first, out)
        assert sorted(out) == list(range(1, 9))

        # Scale in: web 6 -> 4.
        autoscaling.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=4)
        scaled_in = wait_until(lambda: converged(server_env, nodes, 6), timeout=30,
                               what="scale in")
        assert_survivors_kept(out, scaled_in)

        # An api instance marked Unhealthy leaves its slot.
        sick_slot, sick = next((i, s) for i, s in sorted(scaled_in.items())
                               if s["group"] == "api")
        autoscaling.set_instance_health(InstanceId=sick["name"], HealthStatus="Unhealthy")
        healthy = wait_until(lambda: (t := converged(server_env, nodes, 5)) and
                             sick_slot not in t and t, timeout=30, what="unhealthy removed")
        assert_survivors_kept(scaled_in, healthy)

        # A web instance terminated in EC2 leaves its slot.
        gone_slot, gone = next((i, s) for i, s in sorted(healthy.items())
                               if s["group"] == "web")
        moto.client("ec2").terminate_instances(InstanceIds=[gone["name"]])
        final = wait_until(lambda: (t := table_slots(server_env)) and
                           all(s["name"] != gone["name"] for s in t.values()) and
                           converged(server_env, nodes, len(t)), timeout=30,
                           what="terminated instance removed")
        assert_survivors_kept(healthy, final)

        # Identical nodes: ids, addresses, ports, weights and states, slot by slot.
        assert node_view(nodes[0]) == node_view(nodes[1])

        # Steady state: an agent reads the generation once per cycle and the table only on
        # its periodic resync.
        m0 = agents[0].metrics()
        wait_until(lambda: agents[0].metric("hsdo_agent_cycle_duration_seconds_count") >=
                   m0["hsdo_agent_cycle_duration_seconds_count"] + 20, timeout=30,
                   what="20 quiet agent cycles")
        m1 = agents[0].metrics()
        cycles = (m1["hsdo_agent_cycle_duration_seconds_count"] -
                  m0["hsdo_agent_cycle_duration_seconds_count"])
        generation_reads = (m1['hsdo_agent_store_reads_total{kind="generation"}'] -
                            m0['hsdo_agent_store_reads_total{kind="generation"}'])
        table_reads = (m1['hsdo_agent_store_reads_total{kind="table"}'] -
                       m0['hsdo_agent_store_reads_total{kind="table"}'])

        def dynamodb_calls(metrics, operation):
            return sum(v for k, v in metrics.items() if k.startswith("hsdo_aws_requests_total")
                       and 'service="dynamodb"' in k and f'operation="{operation}"' in k)

        get_items = dynamodb_calls(m1, "GetItem") - dynamodb_calls(m0, "GetItem")
        scans = dynamodb_calls(m1, "Scan") - dynamodb_calls(m0, "Scan")
        print(f"steady state over {cycles:.0f} agent cycles: {generation_reads:.0f} generation "
              f"reads, {table_reads:.0f} table reads; DynamoDB calls: {get_items:.0f} GetItem, "
              f"{scans:.0f} Scan")
        assert generation_reads <= cycles + 1
        assert table_reads <= 1
        # One eventually consistent GetItem per generation read (plus two consistent ones
        # around a table Scan, if a periodic resync fell in the window).
        assert get_items <= generation_reads + 2 * table_reads
        assert scans <= table_reads

        for run in agents:
            assert "Signature=" not in procs.log_of(run.proc)
            assert moto.env["AWS_SECRET_ACCESS_KEY"] not in procs.log_of(run.proc)
        assert moto.env["AWS_SECRET_ACCESS_KEY"] not in procs.log_of(server)
    finally:
        procs.stop_all()
        for node in nodes:
            node.stop()
