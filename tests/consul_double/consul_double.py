#!/usr/bin/env python3
"""A Consul HTTP API double for hsdo's tests (Python 3 standard library only).

No Consul server is packaged here, so this serves the two endpoints hsdo uses, written from
Consul's HTTP API documentation ("Health HTTP Endpoint", "Catalog HTTP API", "Blocking Queries",
ACLs):

  GET /v1/health/service/<name>
      ?passing[=true]   only instances whose checks (service and node) all pass; an
                        instance in maintenance has a critical check, so it is left out
      ?dc=<dc>          a datacenter; an unknown one answers 500 "No path to datacenter"
      ?tag=<t>          (deprecated in Consul, still honoured; repeatable)
      ?filter=<expr>    the forms '"<t>" in Service.Tags' and 'Service.Tags contains "<t>"'
      ?index=<i>&wait=<d>
                        blocking: held while the service's index is <= i (and nothing else
                        happened to it) for at most wait (Go duration: "5s", "1500ms", "1m";
                        default 5m, at most 10m) plus up to wait/16 of jitter
      X-Consul-Token    with ACLs on: an unknown token is 403 "ACL not found"; a token
                        without read access to the service gets 200 [] with
                        X-Consul-Results-Filtered-By-ACLs: true (Consul filters list results)
  Answers carry X-Consul-Index, X-Consul-KnownLeader and X-Consul-LastContact.

  GET /v1/catalog/services
      ?dc=<dc>          as above
      every service with at least one instance (Consul forgets a service once its last
      instance is deregistered), with the union of its instances' tags:
      {"web": ["primary", "v2"], ...}; the same ACL rules (services the token may not read
      are left out, with X-Consul-Results-Filtered-By-ACLs: true)

A control API for tests (JSON bodies, PUT or POST):
  /_test/register     {"service", "id", "node", "node_address", "address", "port", "tags",
                       "meta", "node_meta", "status"}  (re-registering an id updates it)
  /_test/deregister   {"service", "id"}
  /_test/set_check    {"service", "id", "status": "passing"|"warning"|"critical"}
  /_test/maintenance  {"service", "id", "enable", "reason"}: `consul maint -service <id>`, a
                      critical check "_service_maintenance:<id>" on the instance;
                      {"node", "enable", "reason"}: `consul maint` on a node, a critical
                      "_node_maintenance" check on every instance of the node
  /_test/set_index    {"service", "index"}   force the index (e.g. backwards); wakes waiters
  /_test/fail         {"status": 500, "seconds": 3} or {"status": 500, "count": 2};
                      {"status": 0} stops failing
  /_test/acl          {"enabled": true, "tokens": {"<secret>": ["web"] | "*"}}
  /_test/ignore_filter {"enabled": true}: answer health queries as a Consul older than 1.5,
                      which does not know `filter` and answers every instance
  GET /_test/requests the health requests seen so far (service, index, wait, token present,
                      how each ended: "immediate", "change" or "timeout", status)
  /_test/reset_requests

Binds 127.0.0.1 only. Usage:
  consul_double.py [--port 0] [--tls-cert C --tls-key K [--tls-client-ca CA]]
                   [--datacenter dc1] [--token SECRET]
Prints the port it listens on (one line) to stdout once it is ready.
"""
import argparse
import json
import random
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

MAX_WAIT = 600.0       # Consul caps wait at 10 minutes
DEFAULT_WAIT = 300.0   # and uses 5 minutes when none is given
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text):
    """A Go duration ("5s", "1m30s", "1500ms"), or a bare number of seconds; None if invalid."""
    if re.fullmatch(r"\d+", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and text else None


def parse_bool_param(values):
    """Consul's boolean query parameters: present without a value means true."""
    value = values[-1] if values else ""
    return value.lower() not in ("false", "0")


_FILTER_IN = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s+in\s+Service\.Tags\s*$')
_FILTER_CONTAINS = re.compile(r'^\s*Service\.Tags\s+contains\s+"((?:[^"\\]|\\.)*)"\s*$')


def parse_tag_filter(expr):
    """The tag of the filter forms this double supports, or None."""
    for pattern in (_FILTER_IN, _FILTER_CONTAINS):
        match = pattern.match(expr)
        if match:
            return re.sub(r"\\(.)", r"\1", match.group(1))
    return None


class Catalog:
    """Services, instances and indexes, guarded by one condition variable."""

    def __init__(self, datacenter):
        self.datacenter = datacenter
        self.cond = threading.Condition()
        self.raft_index = 10
        self.services = {}        # name -> {"index": int, "events": int, "instances": {id: dict}}
        self.fail_status = 0
        self.fail_until = None    # monotonic deadline, or None
        self.fail_count = None    # remaining failed answers, or None
        self.acl_enabled = False
        self.acl_tokens = {}      # secret -> "*" or list of service names
        self.node_maintenance = {}  # node name -> reason
        # Test knob: every health query gets this answer instead (status 0: off). With
        # echo_token, the body ends with the request's X-Consul-Token, as a server that
        # quotes the credential it refused would.
        self.override = {"status": 0, "body": "", "echo_token": False}
        self.ignore_filter = False  # as a Consul older than 1.5: `filter` unknown, not applied
        self.requests = []
        self.catalog_requests = 0  # GET /v1/catalog/services, not in `requests`

    # ---- mutations (caller holds self.cond) ----
    def _service(self, name):
        # A service Consul has never seen answers with the catalog's current index (never 0).
        return self.services.setdefault(name, {"index": self.raft_index, "events": 0,
                                               "instances": {}})

    def _touch(self, name):
        self.raft_index += 1
        svc = self._service(name)
        svc["index"] = self.raft_index
        svc["events"] += 1
        self.cond.notify_all()
        return self.raft_index

    def register(self, body):
        name = body["service"]
        with self.cond:
            svc = self._service(name)
            sid = body.get("id") or name
            previous = svc["instances"].get(sid)
            index = self._touch(name)
            svc["instances"][sid] = {
                "id": sid,
                "node": body.get("node", "node-" + sid),
                "node_address": body.get("node_address", "127.0.0.1"),
                "address": body.get("address", ""),
                "port": int(body.get("port", 0)),
                "tags": list(body.get("tags", [])),
                "meta": dict(body.get("meta", {})),
                "node_meta": dict(body.get("node_meta", {})),
                "status": body.get("status", "passing"),
                "maintenance": previous["maintenance"] if previous else None,  # reason
                "create_index": previous["create_index"] if previous else index,
                "modify_index": index,
            }
            return {"index": index}

    def deregister(self, body):
        with self.cond:
            svc = self._service(body["service"])
            if svc["instances"].pop(body.get("id") or body["service"], None) is None:
                return None
            return {"index": self._touch(body["service"])}

    def set_check(self, body):
        with self.cond:
            svc = self._service(body["service"])
            instance = svc["instances"].get(body["id"])
            if instance is None:
                return None
            instance["status"] = body["status"]
            index = self._touch(body["service"])
            instance["modify_index"] = index
            return {"index": index}

    def set_maintenance(self, body):
        enable = bool(body.get("enable", True))
        reason = str(body.get("reason", "")) or "Maintenance mode is enabled for this node."
        with self.cond:
            if "node" in body:
                # Consul registers the check on the node: every service on it changes.
                node = body["node"]
                if enable:
                    self.node_maintenance[node] = reason
                else:
                    self.node_maintenance.pop(node, None)
                touched = [name for name, svc in self.services.items()
                           if any(i["node"] == node for i in svc["instances"].values())]
                for name in touched:
                    index = self._touch(name)
                    for instance in self.services[name]["instances"].values():
                        if instance["node"] == node:
                            instance["modify_index"] = index
                return {"services": touched}
            svc = self._service(body["service"])
            instance = svc["instances"].get(body["id"])
            if instance is None:
                return None
            instance["maintenance"] = reason if enable else None
            index = self._touch(body["service"])
            instance["modify_index"] = index
            return {"index": index}

    def set_index(self, body):
        with self.cond:
            svc = self._service(body["service"])
            svc["index"] = int(body["index"])
            svc["events"] += 1
            self.cond.notify_all()
            return {"index": svc["index"]}

    def set_fail(self, body):
        with self.cond:
            self.fail_status = int(body.get("status", 500))
            self.fail_until = (time.monotonic() + float(body["seconds"])
                               if "seconds" in body else None)
            self.fail_count = int(body["count"]) if "count" in body else None
            self.cond.notify_all()
            return {"status": self.fail_status}

    def set_override(self, body):
        with self.cond:
            self.override = {"status": int(body.get("status", 0)),
                             "body": str(body.get("body", "")),
                             "echo_token": bool(body.get("echo_token", False))}
            self.cond.notify_all()
            return dict(self.override)

    def set_ignore_filter(self, body):
        with self.cond:
            self.ignore_filter = bool(body.get("enabled", True))
            return {"enabled": self.ignore_filter}

    def set_acl(self, body):
        with self.cond:
            self.acl_enabled = bool(body.get("enabled", True))
            self.acl_tokens = dict(body.get("tokens", {}))
            return {"enabled": self.acl_enabled}

    # ---- reads (caller holds self.cond) ----
    def failing(self):
        if not self.fail_status:
            return False
        if self.fail_until is not None and time.monotonic() >= self.fail_until:
            self.fail_status = 0
            return False
        if self.fail_count is not None:
            if self.fail_count <= 0:
                self.fail_status = 0
                return False
            self.fail_count -= 1
        return True

    def entries(self, name, passing, tags):
        out = []
        svc = self._service(name)
        for instance in sorted(svc["instances"].values(), key=lambda i: i["create_index"]):
            checks = self._checks(name, instance)
            if passing and any(c["Status"] != "passing" for c in checks):
                continue
            if any(tag not in instance["tags"] for tag in tags):
                continue
            out.append({
                "Node": {
                    "ID": "",
                    "Node": instance["node"],
                    "Address": instance["node_address"],
                    "Datacenter": self.datacenter,
                    "TaggedAddresses": {"lan": instance["node_address"]},
                    "Meta": instance["node_meta"],
                },
                "Service": {
                    "ID": instance["id"],
                    "Service": name,
                    "Tags": instance["tags"],
                    "Address": instance["address"],
                    "Meta": instance["meta"],
                    "Port": instance["port"],
                    "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": False,
                    "CreateIndex": instance["create_index"],
                    "ModifyIndex": instance["modify_index"],
                },
                "Checks": checks,
            })
        return out

    def _checks(self, name, instance):
        node = instance["node"]
        checks = [
            {"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status",
             "Status": "passing", "ServiceID": "", "ServiceName": ""},
        ]
        if node in self.node_maintenance:
            checks.append({"Node": node, "CheckID": "_node_maintenance",
                           "Name": "Node Maintenance Mode", "Status": "critical",
                           "Notes": self.node_maintenance[node],
                           "ServiceID": "", "ServiceName": ""})
        if instance["maintenance"] is not None:
            checks.append({"Node": node, "CheckID": "_service_maintenance:" + instance["id"],
                           "Name": "Service Maintenance Mode", "Status": "critical",
                           "Notes": instance["maintenance"],
                           "ServiceID": instance["id"], "ServiceName": name})
        checks.append({"Node": node, "CheckID": "service:" + instance["id"],
                       "Name": f"Service '{name}' check", "Status": instance["status"],
                       "ServiceID": instance["id"], "ServiceName": name})
        return checks


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as Consul's agent offers
    server_version = "consul-double"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet unless --verbose
        if self.server.verbose:
            sys.stderr.write("consul-double: " + (fmt % args) + "\n")

    @property
    def catalog(self):
        return self.server.catalog

    def _send(self, status, body, headers=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        content_type = "application/json" if status == 200 else "text/plain; charset=utf-8"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    # ---- Consul API ----
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path.startswith("/v1/health/service/"):
            return self._health_service(unquote(url.path[len("/v1/health/service/"):]),
                                        parse_qs(url.query, keep_blank_values=True))
        if url.path == "/v1/catalog/services":
            return self._catalog_services(parse_qs(url.query, keep_blank_values=True))
        if url.path == "/v1/status/leader":
            return self._send(200, json.dumps("127.0.0.1:8300"))
        if url.path == "/_test/requests":
            with self.catalog.cond:
                return self._send(200, json.dumps(self.catalog.requests))
        return self._send(404, "404 page not found\n")

    def _health_service(self, name, query):
        catalog = self.catalog
        record = {
            "service": name,
            "index": None,
            "wait": None,
            "passing": "passing" in query and parse_bool_param(query["passing"]),
            "dc": (query.get("dc") or [""])[-1],
            "filter": (query.get("filter") or [""])[-1],
            "token_present": "X-Consul-Token" in self.headers,
            "started": time.time(),
            "ended_by": "immediate",
            "status": None,
        }
        try:
            index = int((query.get("index") or ["0"])[-1] or 0)
        except ValueError:
            return self._send(400, "Invalid index\n")
        wait = DEFAULT_WAIT
        if query.get("wait"):
            wait = parse_duration(query["wait"][-1])
            if wait is None:
                return self._send(400, "Invalid wait time\n")
        wait = min(wait, MAX_WAIT)
        record["index"], record["wait"] = index, wait
        tags = list(query.get("tag", []))
        if record["filter"] and not catalog.ignore_filter:
            tag = parse_tag_filter(record["filter"])
            if tag is None:
                return self._send(400, "Failed to create boolexpr evaluator: unsupported filter "
                                       "in the double\n")
            tags.append(tag)

        with catalog.cond:
            catalog.requests.append(record)
            if record["dc"] and record["dc"] != catalog.datacenter:
                record["status"] = 500
                return self._send(500, "No path to datacenter\n")
            if catalog.acl_enabled:
                token = self.headers.get("X-Consul-Token", "")
                if token and token not in catalog.acl_tokens:
                    record["status"] = 403
                    return self._send(403, "ACL not found\n")
            if catalog.failing():
                record["status"] = 500
                return self._send(500, "rpc error making call: No cluster leader\n")
            svc = catalog._service(name)
            if index > 0:
                # Block while nothing happened to the service and its index is not past ours.
                events = svc["events"]
                deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
                while (svc["events"] == events and svc["index"] <= index
                       and not catalog.fail_status and not catalog.override["status"]):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        record["ended_by"] = "timeout"
                        break
                    record["ended_by"] = "change"  # unless the deadline comes first
                    catalog.cond.wait(remaining)
                if catalog.failing():
                    record["status"] = 500
                    return self._send(500, "rpc error making call: No cluster leader\n")
            override = catalog.override
            if override["status"]:
                record["status"] = override["status"]
                body = override["body"]
                if override["echo_token"]:
                    body += self.headers.get("X-Consul-Token", "")
                return self._send(override["status"], body, {"X-Consul-Index": str(svc["index"])})
            entries = catalog.entries(name, record["passing"], tags)
            headers = {
                "X-Consul-Index": str(svc["index"]),
                "X-Consul-KnownLeader": "true",
                "X-Consul-LastContact": "0",
            }
            if catalog.acl_enabled:
                token = self.headers.get("X-Consul-Token", "")
                allowed = catalog.acl_tokens.get(token) if token else None
                if not (allowed == "*" or (isinstance(allowed, list) and name in allowed)):
                    if entries:
                        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
                    entries = []
            record["status"] = 200
            body = json.dumps(entries)
        return self._send(200, body, headers)

    def _catalog_services(self, query):
        catalog = self.catalog
        dc = (query.get("dc") or [""])[-1]
        with catalog.cond:
            catalog.catalog_requests += 1
            if dc and dc != catalog.datacenter:
                return self._send(500, "No path to datacenter\n")
            token = self.headers.get("X-Consul-Token", "")
            if catalog.acl_enabled and token and token not in catalog.acl_tokens:
                return self._send(403, "ACL not found\n")
            if catalog.failing():
                return self._send(500, "rpc error making call: No cluster leader\n")
            headers = {"X-Consul-Index": str(catalog.raft_index), "X-Consul-KnownLeader": "true",
                       "X-Consul-LastContact": "0"}
            services = {}
            for name, svc in sorted(catalog.services.items()):
                if not svc["instances"]:
                    continue
                if catalog.acl_enabled:
                    allowed = catalog.acl_tokens.get(token) if token else None
                    if not (allowed == "*" or (isinstance(allowed, list) and name in allowed)):
                        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
                        continue
                tags = set()
                for instance in svc["instances"].values():
                    tags.update(instance["tags"])
                services[name] = sorted(tags)
            body = json.dumps(services)
        return self._send(200, body, headers)

    # ---- control API ----
    def do_PUT(self):
        routes = {
            "/_test/register": self.catalog.register,
            "/_test/deregister": self.catalog.deregister,
            "/_test/set_check": self.catalog.set_check,
            "/_test/maintenance": self.catalog.set_maintenance,
            "/_test/set_index": self.catalog.set_index,
            "/_test/fail": self.catalog.set_fail,
            "/_test/acl": self.catalog.set_acl,
            "/_test/ignore_filter": self.catalog.set_ignore_filter,
            "/_test/override": self.catalog.set_override,
        }
        path = urlsplit(self.path).path
        if path == "/_test/reset_requests":
            self._json_body()
            with self.catalog.cond:
                self.catalog.requests.clear()
            return self._send(200, "{}")
        if path not in routes:
            return self._send(404, "404 page not found\n")
        try:
            result = routes[path](self._json_body())
        except (KeyError, ValueError, TypeError) as e:
            return self._send(400, f"bad request: {e!r}\n")
        if result is None:
            return self._send(404, "no such instance\n")
        return self._send(200, json.dumps(result))

    do_POST = do_PUT


class Server(ThreadingHTTPServer):
    daemon_threads = True  # blocked long polls never hold up the exit
    allow_reuse_address = True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--datacenter", default="dc1")
    parser.add_argument("--token", help="turn ACLs on with this one all-access token")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    server = Server(("127.0.0.1", args.port), Handler)
    server.catalog = Catalog(args.datacenter)
    server.verbose = args.verbose
    if args.token:
        server.catalog.set_acl({"enabled": True, "tokens": {args.token: "*"}})
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(args.tls_client_ca)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
