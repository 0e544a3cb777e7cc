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
