#!/usr/bin/env bash
# hsdo's local demo: one orchestrator, TWO HAProxy nodes with an agent each, all on 127.0.0.1.
#   - installs the Debian packages it needs, builds only the hsdo binary (tests off) in
#     build-demo/;
#   - starts 4 HTTP backends, hsdo --server (file source, SQLite store), two HAProxy nodes
#     (consistent hashing, 10 template slots) and hsdo --client beside each;
#   - shows both nodes' `show servers state` side by side and on how many of 1000 hashed URIs
#     they agree; then removes one backend and shows both nodes following; then reloads one
#     HAProxy node with its state file and shows that its slots survive;
#   - keeps everything running until Ctrl-C, then stops what it started (by PID).
# Its store, configuration and logs are in run/ (so `hsdo --config run/env.yaml status`
# works from the repository root in another shell).
#   HSDO_DEMO_SECONDS=N   ends the demo by itself N seconds after the walkthrough (tests)
#   HSDO_BIN=PATH         uses that hsdo binary instead of building one
#   HSDO_DEMO_PORTS="P1 ... P12"  the 12 loopback ports it uses (tests), instead of the kernel's
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$(date +%s.%N)
say() { printf 'demo: %s\n' "$*"; }

if [ -n "${HSDO_DEMO_PORTS:-}" ]; then  # before anything is built, started or removed
  read -r -a PORTS <<<"$HSDO_DEMO_PORTS"
  valid=$([ "${#PORTS[@]}" -eq 12 ] && echo yes || echo no)
  for port in "${PORTS[@]}"; do
    if [[ ! "$port" =~ ^[1-9][0-9]{0,4}$ ]] || [ "$port" -gt 65535 ]; then valid=no; fi
  done
  if [ "$valid" != yes ]; then
    say "HSDO_DEMO_PORTS must be 12 port numbers in 1-65535, got: $HSDO_DEMO_PORTS" >&2
    exit 2
  fi
fi

scripts/install-deps.sh
if [ -n "${HSDO_BIN:-}" ]; then
  HSDO=$HSDO_BIN
  say "using $HSDO (HSDO_BIN)"
else
  say "building hsdo (only the hsdo target, tests off) in build-demo/; the first build takes"
  say "several minutes (8 on a busy 2-core machine), later runs are immediate. Progress:"
  LAUNCHER=()
  command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S . -B build-demo -G Ninja -DHSDO_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "${LAUNCHER[@]}" >/dev/null
  # One line per compiled file, so a long first build visibly moves.
  if ! cmake --build build-demo --target hsdo -j "$(nproc)" 2>&1 | tee build-demo/build.log |
    sed -unE 's/^\[([0-9]+)\/([0-9]+)\] .* (\S+)$/demo:   [\1\/\2] \3/p'; then
    tail -n 40 build-demo/build.log
    say "the build failed (full log: build-demo/build.log)"
    exit 1
  fi
  HSDO="$ROOT/build-demo/src/app/hsdo"
  say "built $HSDO"
fi

RUN="$ROOT/run"
mkdir -p "$RUN"
rm -f "$RUN"/*.log "$RUN"/hsdo.db* "$RUN"/*.state "$RUN"/node*.json
SOCKETS=$(mktemp -d /tmp/hsdo-demo.XXXXXX)  # short: unix socket paths are limited to 108 bytes
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  echo
  say "stopping the demo..."
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$SOCKETS"
  say "stopped. Logs, configuration and the SQLite store are in $RUN"
}
trap cleanup EXIT
trap 'exit 0' INT TERM
# A step that fails ends the demo (set -e): say which, so that it is not a silent exit 1.
trap 'say "failed at line $LINENO: $BASH_COMMAND (exit $?); logs in $RUN" >&2' ERR

# Distinct free loopback ports, all at once (one Python start: slow on a busy machine), or
# the test suite's (HSDO_DEMO_PORTS: ports of its own, which other tests running meanwhile
# never take, where the kernel's may be taken by any connection before the demo binds them).
if [ -n "${HSDO_DEMO_PORTS:-}" ]; then
  read -r -a PORTS <<<"$HSDO_DEMO_PORTS"  # checked at the start
else
  read -r -a PORTS <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(12)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
fi

# 1. Four HTTP backends, and the targets file the orchestrator follows.
echo "targets:" >"$RUN/targets.yaml"
for n in 1 2 3 4; do
  port=${PORTS[n - 1]}
  python3 scripts/demo_backend.py "web-$n" "$port" &
  PIDS+=($!)
  printf '  - {ip: 127.0.0.1, port: %s, name: web-%s, asg: demo}\n' "$port" "$n" >>"$RUN/targets.yaml"
done

# 2. The configuration every hsdo process of the demo reads (and `hsdo status` too).
cat >"$RUN/env.yaml" <<YAML
# Written by scripts/demo.sh. From the repository root: hsdo --config run/env.yaml status
SERVER_MODE: file
SERVER_FILE_PATH: $RUN/targets.yaml
STORE: sqlite
SQLITE_PATH: $RUN/hsdo.db
INTERVAL: 1
HAPROXY_BACKEND_SERVERS_LIST_SIZE: 10
HAPROXY_BACKEND_NAME: http-back
HAPROXY_BACKEND_BASE_NAME: srv
# New servers ramp 1 -> 4 -> 7 -> 10, one step a second (production: every 30 s).
HAPROXY_BACKEND_SERVER_MIN_WEIGHT: 1
HAPROXY_BACKEND_SERVER_MAX_WEIGHT: 10
HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT: 3
HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL: 1
EXPORTER_ADDRESS: 127.0.0.1
YAML

# 3. Two HAProxy nodes with the same template: 10 slots with an FQDN placeholder, so that a
#    reload with the state file keeps every slot's address (docs/deploying.md).
declare -A FRONT STATS SOCK METRICS HAPROXY_PID
i=4
for node in node1 node2; do
  FRONT[$node]=${PORTS[i]} STATS[$node]=${PORTS[i + 1]} METRICS[$node]=${PORTS[i + 2]}
  i=$((i + 3))
  SOCK[$node]="$SOCKETS/$node.sock"
  cat >"$RUN/$node.cfg" <<CFG
global
  stats socket ${SOCK[$node]} mode 600 level admin
  server-state-file $RUN/$node.state
  log stderr format short local0 notice
defaults
  mode http
  load-server-state-from-file global
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend demo
  bind 127.0.0.1:${FRONT[$node]}
  default_backend http-back
backend http-back
  balance uri
  hash-type consistent
  server-template srv 1-10 slot.invalid:80 check inter 1s disabled init-addr last,127.0.0.2
listen stats
  bind 127.0.0.1:${STATS[$node]}
  stats enable
  stats uri /
  stats refresh 2s
CFG
  haproxy -db -f "$RUN/$node.cfg" >"$RUN/haproxy-$node.log" 2>&1 &
  PIDS+=($!)
  HAPROXY_PID[$node]=$!
done

# 4. The store (made once, as on any host: the orchestrator never makes one), the
#    orchestrator, and one agent beside each HAProxy node.
"$HSDO" --config "$RUN/env.yaml" init-table >"$RUN/init-table.log" 2>&1 ||
  { cat "$RUN/init-table.log"; exit 1; }
SERVER_METRICS=${PORTS[10]}
EXPORTER_PORT=$SERVER_METRICS "$HSDO" --config "$RUN/env.yaml" --server >"$RUN/server.log" 2>&1 &
PIDS+=($!)
for node in node1 node2; do
  HAPROXY_SOCKET_PATH=${SOCK[$node]} EXPORTER_PORT=${METRICS[$node]} \
    "$HSDO" --config "$RUN/env.yaml" --client >"$RUN/client-$node.log" 2>&1 &
  PIDS+=($!)
done

# "id name addr:port weight state" of every slot of a node that is not in maint.
servers() {
  echo "show servers state http-back" | socat - "UNIX-CONNECT:${SOCK[$1]}" 2>/dev/null |
    awk 'function bit(v, b) { return int(v / b) % 2 }
         NR > 2 && NF >= 19 {
           # srv_admin_state: 0x01, 0x02, 0x20 maint; 0x08, 0x10 drain (HAPROXY-FACTS.md)
           state = "ready"
           if (bit($7, 8) || bit($7, 16)) state = "drain"
           if (bit($7, 1) || bit($7, 2) || bit($7, 32)) state = "maint"
           if (state != "maint") printf "%-3s %-6s %-16s %-3s %s\n", $3, $4, $5 ":" $19, $8, state }'
}
side_by_side() {
  printf '%-40s %s\n' "node1 (show servers state, not in maint)" "node2"
  paste -d '|' <(servers node1) <(servers node2) | awk -F'|' '{ printf "%-40s %s\n", $1, $2 }'
}
# Waits (at most $2 seconds) until both nodes show $1 ready slots at full weight, the same.
wait_nodes() {
  local want=$1 deadline=$(($(date +%s) + $2)) a b
  while [ "$(date +%s)" -lt "$deadline" ]; do
    a=$(servers node1 || true)
    b=$(servers node2 || true)
    if [ "$a" = "$b" ] && [ "$(grep -c ' 10  ready$' <<<"$a")" -eq "$want" ] &&
      [ "$(grep -c . <<<"$a")" -eq "$want" ]; then
      return 0
    fi
    sleep 0.2
  done
  say "the nodes did not converge within $2 s; see the logs in $RUN"
  return 1
}

wait_nodes 4 60
awk -v start="$START" -v now="$(date +%s.%N)" 'BEGIN {
  printf "demo: ready: both HAProxy nodes have the 4 backends in the same slots (%.1f s after start)\n", now - start }'
echo
side_by_side
echo
say "1000 distinct URIs (/item/1 .. /item/1000) sent to each node (balance uri, hash-type consistent):"
python3 scripts/demo_traffic.py "${FRONT[node1]}" "${FRONT[node2]}" 1000 "$RUN/node1-before.json"
echo
say "the slot table (hsdo --config run/env.yaml status):"
"$HSDO" --config "$RUN/env.yaml" status

echo
say "removing web-4 from the targets file: only its slot goes to maint, on both nodes"
grep -v 'name: web-4,' "$RUN/targets.yaml" >"$RUN/targets.new" && mv "$RUN/targets.new" "$RUN/targets.yaml"
wait_nodes 3 30
side_by_side
echo
python3 scripts/demo_traffic.py "${FRONT[node1]}" "${FRONT[node2]}" 1000 "$RUN/node1-after.json" \
  "$RUN/node1-before.json"

echo
say "reloading node1 (haproxy -sf) after saving its state: the slots survive the reload"
drift_repairs() {
  { curl -s "http://127.0.0.1:${METRICS[$1]}/metrics" || true; } |
    awk '$1 == "hsdo_agent_drift_repairs_total" { print $2 }'
}
repairs_before=$(drift_repairs node1)
echo "show servers state" | socat - "UNIX-CONNECT:${SOCK[node1]}" >"$RUN/node1.state"
slots_before=$(servers node1 || true)
haproxy -db -f "$RUN/node1.cfg" -sf "${HAPROXY_PID[node1]}" >>"$RUN/haproxy-node1.log" 2>&1 &
PIDS+=($!)
HAPROXY_PID[node1]=$!
# While HAProxy hands over, a connection to its socket can be refused: try again.
for _ in $(seq 1 100); do
  pid=$({ echo "show info" | socat - "UNIX-CONNECT:${SOCK[node1]}" 2>/dev/null || true; } |
    awk -F': ' '$1 == "Pid" { print $2 }')
  [ "$pid" = "${HAPROXY_PID[node1]}" ] && break
  sleep 0.05
done
slots_after=$(servers node1 || true)
sleep 2.5  # two agent cycles: would the agent have had to repair anything?
repairs_after=$(drift_repairs node1)
if [ "$slots_before" = "$slots_after" ]; then
  say "node1's new process (pid ${HAPROXY_PID[node1]}) started with the same $(grep -c . <<<"$slots_after") slots, addresses and weights (server-state-file + FQDN placeholder)"
else
  say "node1's slots after the reload differ (see $RUN/haproxy-node1.log):"
  echo "$slots_after"
fi
say "drift repairs by node1's agent: ${repairs_before:-?} before the reload, ${repairs_after:-?} after"

cat <<TXT

hsdo is running. Where to look (from the repository root, in another shell):
  slot table:        ${HSDO#"$ROOT/"} --config run/env.yaml status
  HAProxy stats:     http://127.0.0.1:${STATS[node1]}/ (node1)   http://127.0.0.1:${STATS[node2]}/ (node2)
  send traffic:      curl http://127.0.0.1:${FRONT[node1]}/some/key ; curl http://127.0.0.1:${FRONT[node2]}/some/key
  metrics:           http://127.0.0.1:$SERVER_METRICS/metrics (orchestrator)
                     http://127.0.0.1:${METRICS[node1]}/metrics  http://127.0.0.1:${METRICS[node2]}/metrics (agents)
  logs:              run/server.log  run/client-node1.log  run/client-node2.log  run/haproxy-node*.log
  change targets:    edit run/targets.yaml (add a line: it takes the lowest free slot on both nodes)
Press Ctrl-C to stop everything.
TXT
# Sleep in the background and wait, so that a signal runs the cleanup at once.
sleep "${HSDO_DEMO_SECONDS:-infinity}" &
PIDS+=($!)
wait $!
