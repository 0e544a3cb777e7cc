"""STORE=etcd against a member that wants TLS with a client certificate and a password
(ETCD_CACERT, ETCD_CERT, ETCD_KEY, ETCD_USERNAME, ETCD_PASSWORD): the orchestrator writes and
`hsdo status` reads through it; without the certificate, the CA or the right password, hsdo
fails, and never prints the password."""
import json

from conftest import HSDO, run_hsdo, wait_until
from etcd_fixtures import EtcdCluster, EtcdSlotTable, TlsFiles, etcd_env
from test_agent_end_to_end import write_targets

PASSWORD = "s3cret-Pw-42"


def test_tls_with_client_certificate_and_password(procs, tmp_path):
    cluster = EtcdCluster(procs, tmp_path, size=1, tls=TlsFiles(tmp_path / "tls")).start()
    cluster.enable_auth(PASSWORD)
    table = EtcdSlotTable(cluster, "/hsdo/secure")
    targets = [{"ip": "127.0.0.1", "port": 9000 + i, "name": f"web-{i}", "asg": "asg-a"}
               for i in range(3)]
    write_targets(tmp_path / "targets.yaml", targets)
    env = etcd_env(cluster, table.prefix, 10, ETCD_USERNAME="root", ETCD_PASSWORD=PASSWORD)
    server = procs.start("server", [str(HSDO), "--server"],
                         env=dict(env, SERVER_MODE="file",
                                  SERVER_FILE_PATH=str(tmp_path / "targets.yaml"), INTERVAL="0.3"))
    wait_until(lambda: len(table.enabled()) == 3, timeout=20, what="3 slots written over TLS")

    status = json.loads(run_hsdo(["status", "--json"], env).stdout)
    assert sorted(s["port"] for s in status["slots"] if s["state"] == "enabled") == [9000, 9001, 9002]

    refusals = {
        "wrong password": dict(env, ETCD_PASSWORD="not-the-" + PASSWORD),
        "no client certificate": {k: v for k, v in env.items()
                                  if k not in ("ETCD_CERT", "ETCD_KEY")},
        "CA not trusted": {k: v for k, v in env.items() if k != "ETCD_CACERT"},
        "no password": {k: v for k, v in env.items()
                        if k not in ("ETCD_USERNAME", "ETCD_PASSWORD")},
    }
    for what, bad_env in refusals.items():
        result = run_hsdo(["status"], bad_env, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"{what}: {output}"
        assert "etcd" in output, f"{what}: the error does not say what failed: {output}"
        print(f"\n{what}: {output.strip().splitlines()[-1]}")
        assert PASSWORD not in output, f"{what}: the password was printed"
    assert PASSWORD not in procs.log_of(server)


def test_a_password_file_rotated_is_used_without_a_restart(procs, tmp_path):
    """Review (secrets that rotate): ETCD_PASSWORD is read at start, so a password changed in
    etcd left the orchestrator (and every agent) without its store until restarted. With
    ETCD_PASSWORD_FILE the file is read at each authentication: once the password is changed in
    etcd and written to the file, the orchestrator logs in with it and writes again. And a file
    not rendered yet when it starts is an error until it is, not an exit."""
    cluster = EtcdCluster(procs, tmp_path, size=1).start()
    cluster.enable_auth(PASSWORD)
    table = EtcdSlotTable(cluster, "/hsdo/rotated")
    targets = [{"ip": "127.0.0.1", "port": 9000 + i, "name": f"web-{i}", "asg": "asg-a"}
               for i in range(3)]
    write_targets(tmp_path / "targets.yaml", targets[:2])
    password_file = tmp_path / "etcd-password"
    password_file.write_text(PASSWORD + "\n")
    env = etcd_env(cluster, table.prefix, 10, ETCD_USERNAME="root",
                   ETCD_PASSWORD_FILE=str(password_file))
    server_env = dict(env, SERVER_MODE="file", SERVER_FILE_PATH=str(tmp_path / "targets.yaml"),
                      INTERVAL="0.3")
    assert run_hsdo(["init-table"], server_env).returncode == 0
    password_file.unlink()  # the template has not rendered it yet
    server = procs.start("server", [str(HSDO), "--server"], env=server_env, init_store=False)
    wait_until(lambda: f'ETCD_PASSWORD_FILE="{password_file}": cannot open it'
               in procs.log_of(server), timeout=20, what="the missing password file said")
    assert server.poll() is None, procs.log_of(server)
    password_file.write_text(PASSWORD + "\n")
    wait_until(lambda: len(table.enabled()) == 2, timeout=20, what="2 slots written")

    new_password = "n3w-Pw-43"
    cluster.call("/v3/auth/user/changepw", {"name": "root", "password": new_password})
    cluster.token = None  # etcd forgets root's tokens with its password
    cluster.token = cluster.call("/v3/auth/authenticate",
                                 {"name": "root", "password": new_password})["token"]
    rendered = tmp_path / "etcd-password.new"
    rendered.write_text(new_password + "\n")
    rendered.replace(password_file)
    write_targets(tmp_path / "targets.yaml", targets)
    wait_until(lambda: len(table.enabled()) == 3, timeout=20,
               what="the third slot written after the rotation")
    assert run_hsdo(["status", "--json"], env).returncode == 0
    log = procs.log_of(server)
    assert PASSWORD not in log and new_password not in log, log


def test_an_agent_needs_only_read_on_the_prefix_and_write_on_its_nodes(procs, tmp_path):
    """Security review: docs/deploying.md gave no etcd roles, so agents got readwrite on the whole
    prefix, and one broken-into HAProxy node could rewrite the fleet's table. The roles it now
    documents are enough for an agent (its watch, its reads, its node report) and keep it from
    writing the table."""
    from etcd_fixtures import b64, prefix_end
    from haproxy_fixtures import Backend, HaproxyNode, start_agent
    from test_etcd_store import agent_etcd_env, haproxy_matches
    from etcd_fixtures import seed_record

    cluster = EtcdCluster(procs, tmp_path, size=1).start()
    cluster.enable_auth(PASSWORD)
    table = EtcdSlotTable(cluster, "/hsdo/roles")
    nodes = table.prefix + "/nodes/"
    cluster.call("/v3/auth/role/add", {"name": "hsdo-agent"})
    for key, perm in ((table.prefix + "/", "READ"), (nodes, "READWRITE")):
        cluster.call("/v3/auth/role/grant", {"name": "hsdo-agent", "perm": {
            "permType": perm, "key": b64(key), "range_end": b64(prefix_end(key))}})
    cluster.call("/v3/auth/user/add", {"name": "agent-a", "password": "agent-" + PASSWORD})
    cluster.call("/v3/auth/user/grant", {"user": "agent-a", "role": "hsdo-agent"})
    table.write({1: seed_record(1, "127.0.0.1", 9001, weight=1)})

    node = HaproxyNode(procs, "a", [Backend("app", "srv", slots=10)]).start()
    try:
        env = dict(agent_etcd_env(node, cluster, table.prefix, interval="0.5"),
                   ETCD_USERNAME="agent-a", ETCD_PASSWORD="agent-" + PASSWORD,
                   HSDO_NODE_NAME="node-a")
        agent = start_agent(procs, "agent", env, tmp_path)
        wait_until(lambda: haproxy_matches(node, table) == 1, timeout=20, what="the table applied")
        table.write({1: seed_record(1, "127.0.0.1", 9001, weight=5)})
        wait_until(lambda: node.state("app")[1].weight == 5, timeout=20,
                   what="a change seen through the watch")
        wait_until(lambda: nodes + "node-a" in cluster.get_prefix(nodes), timeout=20,
                   what="the agent's node report")
        log = procs.log_of(agent.proc)
        assert "permission denied" not in log.lower(), log
        # The agent's user may not write the table.
        refused = run_hsdo(["set-state", "1", "maint"], env, check=False)
        assert refused.returncode != 0, refused.stdout
        assert "permission denied" in refused.stderr.lower(), refused.stderr
        assert table.enabled()[1]["Weight"] == 5 and "AdminState" not in table.enabled()[1]
    finally:
        procs.stop_all()
        node.stop()
