#!/usr/bin/env bash
# hsdo's local demo, on the embedded default store (SQLite) and the file source:
#   - installs the dependencies and builds hsdo;
#   - starts 4 HTTP backends, HAProxy (generated config, stats socket, consistent hashing)
#     and hsdo --server + hsdo --client, all on 127.0.0.1;
#   - sends demo traffic and shows how it spreads; prints where to look;
#   - stops everything it started (by PID) on Ctrl-C.
# HSDO_DEMO_SECONDS=N ends the demo by itself after N seconds (used by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build >/dev/null
HSDO="$ROOT/build/src/app/hsdo"

RUN=$(mktemp -d /tmp/hsdo-demo.XXXXXX)  # short path: unix socket paths are limited
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "Stopping the demo..."
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "Stopped. Logs and the SQLite store are in $RUN"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
FRONT_PORT=$(free_port); STATS_PORT=$(free_port)
SERVER_METRICS=$(free_port); CLIENT_METRICS=$(free_port)

# Backends.
echo "targets:" >"$RUN/targets.yaml"
for n in 1 2 3 4; do
  port=$(free_port)
  python3 scripts/demo_backend.py "web-$n" "$port" &
  PIDS+=($!)
  printf '  - {ip: 127.0.0.1, port: %s, name: web-%s, asg: demo}\n' "$port" "$n" >>"$RUN/targets.yaml"
done

# HAProxy: 10 template slots that hsdo fills through the Runtime API.
cat >"$RUN/haproxy.cfg" <<CFG
global
  stats socket $RUN/admin.sock mode 600 level admin
  log stderr format short local0 notice
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend demo
  bind 127.0.0.1:$FRONT_PORT
  default_backend http-back
backend http-back
  balance uri
  hash-type consistent
  server-template srv 1-10 127.0.0.2:80 check inter 1s disabled
listen stats
  bind 127.0.0.1:$STATS_PORT
  stats enable
  stats uri /
  stats refresh 2s
CFG
haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy.log" 2>&1 &
PIDS+=($!)

export SQLITE_PATH="$RUN/hsdo.db" STORE=sqlite INTERVAL=1 EXPORTER_ADDRESS=127.0.0.1
export HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL=5
SERVER_MODE=file SERVER_FILE_PATH="$RUN/targets.yaml" EXPORTER_PORT=$SERVER_METRICS \
  "$HSDO" --server >"$RUN/server.log" 2>&1 &
PIDS+=($!)
HAPROXY_SOCKET_PATH="$RUN/admin.sock" HAPROXY_BACKEND_NAME=http-back \
  HAPROXY_BACKEND_BASE_NAME=srv EXPORTER_PORT=$CLIENT_METRICS \
  "$HSDO" --client >"$RUN/client.log" 2>&1 &
PIDS+=($!)

# Wait for the agent to put the 4 targets into HAProxy.
for _ in $(seq 1 100); do
  up=$(echo "show servers state http-back" | socat - "UNIX-CONNECT:$RUN/admin.sock" 2>/dev/null |
    awk 'NR > 2 && $5 == "127.0.0.1" && $6 == 2' | wc -l || true)
  [ "${up:-0}" -ge 4 ] && break
  sleep 0.2
done

echo
SQLITE_PATH="$RUN/hsdo.db" "$HSDO" status
echo "Demo traffic, 200 requests with distinct URIs (balance uri + hash-type consistent):"
for i in $(seq 1 200); do curl -s "http://127.0.0.1:$FRONT_PORT/item/$i"; done | sort | uniq -c
cat <<TXT

hsdo is running. Where to look:
  slot table:        SQLITE_PATH=$RUN/hsdo.db $HSDO status
  HAProxy stats:     http://127.0.0.1:$STATS_PORT/
  send traffic:      curl http://127.0.0.1:$FRONT_PORT/some/key
  metrics:           http://127.0.0.1:$SERVER_METRICS/metrics (orchestrator)
                     http://127.0.0.1:$CLIENT_METRICS/metrics (agent)
  logs:              $RUN/server.log  $RUN/client.log  $RUN/haproxy.log
  change targets:    edit $RUN/targets.yaml (remove a line: only its slot goes to maint)
Weights ramp from 1 to 10, one step every 5 s. Press Ctrl-C to stop everything.
TXT
# Sleep in the background and wait, so that a signal runs the cleanup at once.
sleep "${HSDO_DEMO_SECONDS:-infinity}" &
PIDS+=($!)
wait $!
