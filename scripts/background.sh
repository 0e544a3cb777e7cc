#!/bin/bash
# Usage: background.sh OWNER COMMAND [ARG...]
#
# Runs COMMAND at the lowest priority (nice 19, in a scheduling group at nice 19) in a process group of its own (a new session), so that
# its caller can end it whole (`kill -- -PID`, PID being this script's), and ends that group
# when process OWNER is gone: a caller killed by SIGKILL runs no trap, and its process group
# being killed does not reach a new session. Exits with COMMAND's status.
# scripts/test.sh runs the sanitizer build so, beside the tests.
set -u
if [ "$#" -lt 2 ]; then
  echo "usage: $0 OWNER COMMAND [ARG...]" >&2
  exit 2
fi
if [ "$(ps -o sid= -p $$ | tr -d ' ')" != "$$" ]; then
  exec setsid -w "$0" "$@"  # now the leader of its own session and process group
fi
owner=$1
shift
# A new session is a scheduling group of its own (autogroup), and the kernel shares the CPU
# between groups before it looks at nice values within one: nice 19 alone still gave the build
# half of the cores beside the tests. The group's own nice value ranks it below them.
# (A user other than root may set one group's nice per 100 ms on the whole machine: retried.)
for _ in 1 2 3; do
  if [ ! -w /proc/self/autogroup ] || echo 19 2>/dev/null >/proc/self/autogroup; then
    break
  fi
  sleep 0.2
done
nice -n 19 "$@" &
job=$!
while kill -0 "$owner" 2>/dev/null && kill -0 "$job" 2>/dev/null; do
  sleep 1
done
if kill -0 "$job" 2>/dev/null; then
  echo "background.sh: process $owner is gone: ending $*" >&2
  trap '' TERM
  kill -TERM -- "-$$" 2>/dev/null
fi
wait "$job"
