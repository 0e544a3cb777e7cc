#!/usr/bin/env bash
# hsdo's test command (README, and .ci/run): installs what is missing, builds with warnings
# as errors, runs the unit tests, then the integration tests (real hsdo processes, real
# HAProxy, real SQLite, the AWS emulator) with pytest in a virtualenv, then the unit tests
# and a dozen integration test files again under ASan + UBSan (built meanwhile, in the
# background).
#
#   scripts/test.sh               everything
#   scripts/test.sh -k consul     passes extra arguments to pytest (both integration runs)
#   HSDO_SKIP_ASAN=1 ...          skips the sanitizer build (for a quicker local loop)
#   HSDO_TEST_WORKERS=N ...       integration test files run N at a time (default 2; 0: one by one)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# Nothing here may reach the cloud metadata addresses.
export AWS_EC2_METADATA_DISABLED=true
unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI || true

scripts/install-deps.sh

JOBS=$(nproc)
step() { printf '\n=== %s ===\n' "$*"; }
# The integration test files run a second time against hsdo built with the sanitizers.
SANITIZED_INTEGRATION_TESTS=(
  test_agent_safety.py test_lifecycle.py test_etcd_store.py test_agent_end_to_end.py
  test_drain_orchestrator.py test_fleet_status.py test_aws_tls.py test_consul_discovery.py
  test_aws_scenario.py test_etcd_fencing.py test_aws_orchestrator.py test_exporter_load.py
)
# A skipped test is not a pass. The only unit tests that may skip are the MotoTest cases:
# they need the AWS emulator and run against it in tests/integration/test_aws_library.py.
ALLOWED_CTEST_SKIPS='^MotoTest\.'
# Runs ctest in a build dir; prints the summary, or everything when something failed; fails
# when a test was skipped or did not run unexpectedly, and prints how many.
run_ctest() {
  local dir=$1 log skipped unexpected
  shift
  log=$(mktemp)
  if ! ctest --test-dir "$dir" --output-on-failure -j "$JOBS" --timeout 300 "$@" >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    return 1
  fi
  grep -E "tests passed|tests failed|Total Test time" "$log"
  # ctest lists them after "The following tests did not run:" as "N - NAME (Skipped)".
  skipped=$(sed -nE 's/^[[:space:]]*[0-9]+ - ([^ ]+) \((Skipped|Not Run|Disabled)\)$/\1/p' "$log")
  unexpected=$(printf '%s\n' "$skipped" | grep -vE "$ALLOWED_CTEST_SKIPS" | grep -c . || true)
  echo "skipped: $(printf '%s\n' "$skipped" | grep -c . || true) (allowed: $ALLOWED_CTEST_SKIPS), unexpected: $unexpected"
  rm -f "$log"
  if [ "$unexpected" -ne 0 ]; then
    printf '%s\n' "$skipped" | grep -vE "$ALLOWED_CTEST_SKIPS" | sed 's/^/unexpected skip: /'
    return 1
  fi
}

step "build (warnings are errors)"
# Line tables only (-g1): stack traces keep file:line, and the builds take about 30% less time
# than with full debug information (measured on etcd_backend.cc: 33.8 s with -g, 23.2 s -g1).
cmake -S . -B build -G Ninja -DHSDO_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" >/dev/null
cmake --build build -j "$JOBS"

# The sanitizer build runs in the background, at the lowest priority, while the unit and
# integration tests below run: they wait on processes and sockets most of the time, and
# leave it most of two cores (the whole command takes 12-13 minutes on a 2-core machine with
# the build before them; 17-19 with the integration tests one at a time). Its unit tests run
# after the integration tests, in the foreground.
# The small link (static libraries, fmt and spdlog compiled in) is about the daemon's memory;
# the sanitizer build does without it. It builds the unit tests and hsdo, as a unity build
# (each module's files compiled together: 545 s of CPU instead of 758 on this 2-core machine;
# README, "Tests").
# scripts/background.sh puts it in a process group of its own, ended here whole, or by
# background.sh itself when this script is gone (killed by SIGKILL, no trap runs).
asan_pid=
stop_asan_build() {
  if [ -n "$asan_pid" ]; then
    kill -- "-$asan_pid" 2>/dev/null || true  # its own process group: cmake, ninja, g++
    wait "$asan_pid" 2>/dev/null || true
  fi
}
if [ "${HSDO_SKIP_ASAN:-0}" != "1" ]; then
  cmake -S . -B build-asan -G Ninja -DHSDO_WERROR=ON -DHSDO_SANITIZE=ON -DHSDO_SMALL_LINK=OFF \
    -DCMAKE_UNITY_BUILD=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-g1 >/dev/null
  trap stop_asan_build EXIT
  scripts/background.sh "$$" cmake --build build-asan -j "$JOBS" --target hsdo_unit_tests hsdo \
    >build-asan/build.log 2>&1 &
  asan_pid=$!
fi

step "unit tests"
run_ctest build

step "integration tests"
if [ ! -x .venv/bin/pytest ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
# Two test files at a time (pytest-xdist; HSDO_TEST_WORKERS=0 runs them in this process): the
# tests wait on processes and sockets most of the time, and took 12 minutes one at a time, 6
# two at a time, on a 2-core machine. Each worker hands out ports of its own (conftest.py,
# free_port), and a file's tests stay together, so its module fixtures start once.
HSDO_BUILD_DIR="$ROOT/build" .venv/bin/pytest -q -p no:cacheprovider \
  -n "${HSDO_TEST_WORKERS:-2}" --dist loadfile tests/integration "$@"

if [ -n "$asan_pid" ]; then
  step "unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  built=0
  wait "$asan_pid" || built=$?
  asan_pid=
  if [ "$built" -ne 0 ]; then
    cat build-asan/build.log
    echo "the sanitizer build failed (exit $built)"
    exit 1
  fi
  tail -n 1 build-asan/build.log
  # Exporter.OutOfDescriptors... runs the process out of file descriptors, and UBSan's own
  # runtime then fails: it tests an object's memory through a pipe before its type checks
  # ("object has invalid vptr" on spdlog's logger, then fmt's buffer). It runs in the build
  # above, unsanitized.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest build-asan -E '^Exporter\.OutOfDescriptorsItRestsAndAnswersOnceTheyAreBack$'

  # The daemon itself under the sanitizers, in the integration tests that run most of its code
  # (its threads, signals, every store and source, the runtime API, the exporter under load):
  # 3-4 minutes of the suite's 12, about 2 of wall time. An hsdo process that finds an error
  # exits (no recovery); ASan writes its reports (errors, and leaks at exit) to
  # build-asan/sanitizer-reports/, UBSan to the process's output whatever log_path says (with
  # ASan's runtime beside it): the tests' logs and files are searched for both. Any report
  # fails the command.
  step "integration tests against hsdo under AddressSanitizer + UndefinedBehaviorSanitizer"
  for file in "${SANITIZED_INTEGRATION_TESTS[@]}"; do
    [ -f "tests/integration/$file" ] || { echo "SANITIZED_INTEGRATION_TESTS: no $file"; exit 1; }
  done
  reports="$ROOT/build-asan/sanitizer-reports"
  rm -rf "$reports"
  mkdir -p "$reports"
  ran=0
  HSDO_BIN="$ROOT/build-asan/src/app/hsdo" HSDO_BUILD_DIR="$ROOT/build" HSDO_SANITIZED=1 \
    ASAN_OPTIONS="detect_leaks=1:log_path='$reports/asan'" \
    UBSAN_OPTIONS="print_stacktrace=1:log_path='$reports/ubsan'" \
    .venv/bin/pytest -q -p no:cacheprovider -n "${HSDO_TEST_WORKERS:-2}" --dist loadfile \
    --basetemp "$ROOT/build-asan/pytest" "${SANITIZED_INTEGRATION_TESTS[@]/#/tests/integration/}" \
    "$@" || ran=$?
  # The tests' own logs: UBSan's "FILE:LINE:COLUMN: runtime error: ...".
  report_line=': runtime error: |ERROR: (Address|Leak|UndefinedBehavior)Sanitizer'
  while IFS= read -r log; do
    relative=${log#"$ROOT/build-asan/pytest/"}
    cp "$log" "$reports/${relative//\//_}"  # gw0/test_x0/server.log: gw0_test_x0_server.log
  done < <(grep -rlIE "$report_line" \
             "$ROOT/build-asan/pytest" 2>/dev/null || true)
  if [ -n "$(ls -A "$reports")" ]; then
    for report in "$reports"/*; do
      echo "--- $report"
      grep -E -B2 -A40 "$report_line" \
        "$report" | head -n 80
    done
    echo "hsdo under the sanitizers reported errors ($(ls "$reports" | wc -l) files above)"
    exit 1
  fi
  # 5: no test ran, which only a filter given to this command (-k NAME) may cause.
  if [ "$ran" -ne 0 ] && { [ "$ran" -ne 5 ] || [ "$#" -eq 0 ]; }; then
    exit "$ran"
  fi
  rm -rf "$ROOT/build-asan/pytest"  # 1.6 GB (etcd's data among it), kept only when it failed
  echo "no sanitizer report"
fi
