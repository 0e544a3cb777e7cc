"""Starts the Consul double as a test process and drives its control API.

Used by tests/integration/test_consul_*.py. The double is registered with conftest's
Processes, so it is stopped by its PID at the end of the test.
"""
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DOUBLE = Path(__file__).resolve().parent / "consul_double.py"


def make_self_signed_cert(directory: Path, name="consul"):
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI: (cert, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


class ConsulDouble:
    def __init__(self, procs, *, token=None, tls_cert=None, tls_key=None, tls_client_ca=None,
                 datacenter="dc1", name="consul-double"):
        argv = [sys.executable, str(DOUBLE), "--port", "0", "--datacenter", datacenter]
        if token:
            argv += ["--token", token]
        if tls_cert:
            argv += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
        if tls_client_ca:
            argv += ["--tls-client-ca", str(tls_client_ca)]
        self.proc = procs.start(name, argv)
        self.port = self._wait_for_port(procs)
        scheme = "https" if tls_cert else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._context = None
        if tls_cert:
            self._context = ssl.create_default_context(cafile=str(tls_cert))

    def use_client_cert(self, cert, key):
        """The certificate this helper presents to a double that requires one."""
        self._context.load_cert_chain(str(cert), str(key))

    def _wait_for_port(self, procs, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"consul double exited:\n{procs.log_of(self.proc)}")
            first = procs.log_of(self.proc).splitlines()
            if first and first[0].strip().isdigit():
                return int(first[0])
            time.sleep(0.02)
        raise AssertionError("consul double did not print its port")

    # ---- HTTP ----
    def request(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers, parsed body or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._context) as resp:
                status, resp_headers, raw = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            status, resp_headers, raw = e.code, dict(e.headers), e.read()
        text = raw.decode()
        try:
            return status, resp_headers, json.loads(text)
        except json.JSONDecodeError:
            return status, resp_headers, text

    def _control(self, path, body):
        status, _, result = self.request("PUT", path, body)
        if status != 200:
            raise AssertionError(f"consul double {path}: {status} {result}")
        return result

    # ---- control API ----
    def register(self, service, id, address="", port=0, node=None, node_address="127.0.0.1",
                 tags=(), meta=None, node_meta=None, status="passing"):
        return self._control("/_test/register", {
            "service": service, "id": id, "node": node or f"node-{id}", "address": address,
            "port": port, "node_address": node_address, "tags": list(tags), "meta": meta or {},
            "node_meta": node_meta or {}, "status": status})

    def deregister(self, service, id):
        return self._control("/_test/deregister", {"service": service, "id": id})

    def set_check(self, service, id, status):
        return self._control("/_test/set_check", {"service": service, "id": id,
                                                  "status": status})

    def maintenance(self, service=None, id=None, node=None, enable=True, reason=""):
        """`consul maint -enable|-disable [-service id]`: the instance `id` of `service`, or
        every instance on `node`."""
        body = {"enable": enable, "reason": reason}
        if node is not None:
            body["node"] = node
        else:
            body.update({"service": service, "id": id})
        return self._control("/_test/maintenance", body)

    def set_index(self, service, index):
        return self._control("/_test/set_index", {"service": service, "index": index})

    def fail(self, status=500, seconds=None, count=None):
        body = {"status": status}
        if seconds is not None:
            body["seconds"] = seconds
        if count is not None:
            body["count"] = count
        return self._control("/_test/fail", body)

    def override(self, status, body="", echo_token=False):
        """Every health query answers `status` with `body` (+ the request's token when
        echo_token) until override(0)."""
        return self._control("/_test/override", {"status": status, "body": body,
                                                 "echo_token": echo_token})

    def ignore_filter(self, enabled=True):
        return self._control("/_test/ignore_filter", {"enabled": enabled})

    def acl(self, tokens, enabled=True):
        return self._control("/_test/acl", {"enabled": enabled, "tokens": tokens})

    def requests(self, service=None):
        status, _, result = self.request("GET", "/_test/requests")
        assert status == 200, result
        return [r for r in result if service is None or r["service"] == service]

    def reset_requests(self):
        return self._control("/_test/reset_requests", {})
