"""A real etcd cluster for the STORE=etcd tests: Debian's etcd-server (3.4), `size` members on
127.0.0.1 with free ports and their own data directories under the test's tmp dir, started
through conftest's `Processes` and stopped by PID (`kill()` of one member is SIGKILL by PID).

`EtcdCluster` also speaks etcd's JSON gateway (urllib, base64 keys and values) to read and
write the slot table exactly as hsdo lays it out: <prefix>/slots/<id> holds the seed record
as JSON and <prefix>/generation holds {"TableGeneration", "Overflow"}.
"""
import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import BASE_ENV, free_port, wait_until

ETCD = os.environ.get("ETCD_BIN", shutil.which("etcd") or "/usr/bin/etcd")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with
    the openssl command line in `directory`."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = directory / "ca.pem", directory / "ca-key.pem"
        self.server, self.server_key = directory / "server.pem", directory / "server-key.pem"
        self.client, self.client_key = directory / "client.pem", directory / "client-key.pem"

        def run(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hsdo-test-ca",
            "-keyout", str(self.ca_key), "-out", str(self.ca))
        for cert, key, cn, ext in ((self.server, self.server_key, "127.0.0.1",
                                    # etcd's gateway dials its own gRPC server with this certificate, as a client.
                                    "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
                                   # No CN: with auth on, etcd 3.4's gateway refuses a
                                   # client certificate that has one.
                                   (self.client, self.client_key, "",
                                    "extendedKeyUsage=clientAuth")):
            base = cn or "client"
            csr = directory / f"{base}.csr"
            extfile = directory / f"{base}.ext"
            extfile.write_text(ext + "\n")
            subject = f"/CN={cn}" if cn else "/O=hsdo-test-client"
            run("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(key),
                "-out", str(csr))
            run("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
                "-CAcreateserial", "-days", "2", "-extfile", str(extfile), "-out", str(cert))

    def context(self, client_cert=True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if client_cert:
            context.load_cert_chain(str(self.client), str(self.client_key))
        return context


class EtcdMember:
    def __init__(self, name: str, data_dir: Path, scheme="http"):
        self.name = name
        self.data_dir = data_dir
        self.scheme = scheme
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc = None
        self.paused = False

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """`size` members; with `tls` (a TlsFiles), clients must come over https with a client
    certificate the CA signed (peers still talk plain http on loopback)."""

    def __init__(self, procs, tmp_path: Path, size=3, tls=None):
        self.procs = procs
        self.tls = tls
        self.token = None  # set by enable_auth
        self.members = [EtcdMember(f"m{i}", tmp_path / f"etcd-m{i}", "https" if tls else "http")
                        for i in range(size)]
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    # ---- processes ---------------------------------------------------------------------------
    def start(self):
        for member in self.members:
            self.start_member(member, state="new")
        wait_until(lambda: self.leader() is not None, timeout=30, what="an etcd leader")
        return self

    def start_member(self, member: EtcdMember, state="existing"):
        member.proc = self.procs.start(f"etcd-{member.name}", [
            ETCD, f"--name={member.name}", f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.endpoint}",
            f"--advertise-client-urls={member.endpoint}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-state={state}", "--initial-cluster-token=hsdo-test",
            # A quick election, so that a killed leader is replaced in about a second.
            "--heartbeat-interval=50", "--election-timeout=500",
        ] + ([f"--cert-file={self.tls.server}", f"--key-file={self.tls.server_key}",
              f"--trusted-ca-file={self.tls.ca}", "--client-cert-auth"] if self.tls else []))
        return member

    def kill(self, member: EtcdMember):
        """SIGKILL by PID: the member stops without a word to its peers."""
        member.proc.kill()
        member.proc.wait()

    def restart(self, member: EtcdMember):
        self.start_member(member)
        wait_until(lambda: self._status(member) is not None, timeout=30,
                   what=f"etcd {member.name} answering again")

    def pause(self, member: EtcdMember):
        """SIGSTOP by PID: the member's connections stay open and say nothing."""
        member.proc.send_signal(signal.SIGSTOP)
        member.paused = True

    def resume(self, member: EtcdMember):
        member.proc.send_signal(signal.SIGCONT)
        member.paused = False

    def alive(self):
        return [m for m in self.members
                if m.proc is not None and m.proc.poll() is None and not m.paused]

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    # ---- the gateway -------------------------------------------------------------------------
    def call(self, path: str, body: dict, member=None, timeout=3.0) -> dict:
        """POSTs to the first live member that answers (or to `member`)."""
        errors = []
        for m in [member] if member else self.alive():
            headers = {"Content-Type": "application/json"}
            if self.token:
                headers["Authorization"] = self.token
            request = urllib.request.Request(m.endpoint + path, data=json.dumps(body).encode(),
                                             headers=headers)
            context = self.tls.context() if self.tls else None
            try:
                with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                    return json.loads(response.read())
            except (OSError, urllib.error.HTTPError) as e:
                errors.append(f"{m.name}: {e}")
        raise OSError("no etcd member answered: " + "; ".join(errors))

    def _status(self, member):
        try:
            return self.call("/v3/maintenance/status", {}, member=member, timeout=1)
        except OSError:
            return None

    def leader(self):
        """The member that is the raft leader, or None."""
        for member in self.alive():
            status = self._status(member)
            if status and status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return member
        return None

    def enable_auth(self, password: str):
        """User root (role root) with `password`, auth on; later calls log in as root."""
        self.call("/v3/auth/user/add", {"name": "root", "password": password})
        self.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.call("/v3/auth/enable", {})
        self.token = self.call("/v3/auth/authenticate", {"name": "root", "password": password})["token"]

    def get_prefix(self, prefix: str) -> dict:
        answer = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        return {unb64(kv["key"]): unb64(kv.get("value", "")) for kv in answer.get("kvs", [])}

    def revision(self) -> int:
        return int(self.call("/v3/kv/range", {"key": b64("/")})["header"]["revision"])

    def compact(self, revision: int):
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})


class EtcdSlotTable:
    """The slot table under `prefix`, read and written the way hsdo's etcd store does."""

    def __init__(self, cluster: EtcdCluster, prefix: str):
        self.cluster = cluster
        self.prefix = prefix

    def slot_key(self, slot: int) -> str:
        return f"{self.prefix}/slots/{slot}"

    @property
    def generation_key(self) -> str:
        return f"{self.prefix}/generation"

    def read(self):
        """(generation, {slot id: record}) from one range."""
        kvs = self.cluster.get_prefix(self.prefix + "/")
        generation = json.loads(kvs.get(self.generation_key, '{"TableGeneration": 0}'))
        slots = {}
        for key, value in kvs.items():
            if key.startswith(self.prefix + "/slots/"):
                slots[int(key.rsplit("/", 1)[1])] = json.loads(value)
        return generation["TableGeneration"], slots

    def enabled(self) -> dict:
        return {i: r for i, r in self.read()[1].items() if r["BackendServerStatus"] == "enabled"}

    def write(self, changes: dict):
        """Writes {slot: record or None (free)} and bumps the generation in one txn, conditioned
        on the generation key's mod revision, as the orchestrator does. Returns the time.monotonic()
        at which etcd acknowledged it."""
        answer = self.cluster.call("/v3/kv/range", {"key": b64(self.generation_key)})
        kvs = answer.get("kvs", [])
        mod = int(kvs[0].get("mod_revision", 0)) if kvs else 0
        generation = json.loads(unb64(kvs[0]["value"]))["TableGeneration"] if kvs else 0
        puts = []
        for slot, record in changes.items():
            if record is None:
                record = {"BackendServerID": slot, "IPAddress": "none", "ServerName": "none",
                          "ASG": "none", "Weight": 0, "BackendServerStatus": "disabled",
                          "LastWeightUpdate": "0-0-0 00:00:00.000000"}
            puts.append({"request_put": {"key": b64(self.slot_key(slot)),
                                         "value": b64(json.dumps(record))}})
        puts.append({"request_put": {"key": b64(self.generation_key), "value": b64(json.dumps(
            {"TableGeneration": generation + 1, "Overflow": 0}))}})
        txn = {"compare": [{"key": b64(self.generation_key), "target": "MOD",
                            "mod_revision": str(mod), "result": "EQUAL"}],
               "success": puts}
        answer = self.cluster.call("/v3/kv/txn", txn)
        acked = time.monotonic()
        assert answer.get("succeeded"), f"txn lost its condition: {answer}"
        return acked


def seed_record(slot: int, ip: str, port: int, weight=10, name=None, asg="asg-a", az="az-1"):
    return {"BackendServerID": slot, "IPAddress": ip, "ServerName": name or f"web-{slot}",
            "ASG": asg, "Weight": weight, "BackendServerStatus": "enabled",
            "LastWeightUpdate": "2026-01-01 00:00:00.000000", "Port": port, "AZ": az}


def etcd_env(cluster, prefix, slots, endpoints=None, **extra):
    """hsdo's environment for STORE=etcd on `cluster` (TLS files when it has them)."""
    env = dict(BASE_ENV)
    env.update({
        "STORE": "etcd", "ETCD_ENDPOINTS": endpoints or cluster.endpoints, "ETCD_PREFIX": prefix,
        "HAPROXY_BACKEND_SERVERS_LIST_SIZE": str(slots),
        "EXPORTER_ADDRESS": "127.0.0.1", "EXPORTER_PORT": str(free_port()),
    })
    if cluster.tls:
        env.update({"ETCD_CACERT": str(cluster.tls.ca), "ETCD_CERT": str(cluster.tls.client),
                    "ETCD_KEY": str(cluster.tls.client_key)})
    env.update({k: str(v) for k, v in extra.items()})
    return env
