#!/usr/bin/env python3
"""Issue 10's comparison: failed requests through 2 HAProxy nodes, 5 slow backends (1 s
responses) and a steady hashed load, for the scenarios of tests/integration/test_lifecycle.py
run with and without the lifecycle features:

  a drain=10        a target removed, HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT=10 (the test's (a))
  a drain=0         the same with DRAIN_TIMEOUT=0: the slot is freed at once, the backend is
                    stopped as soon as both nodes show it freed
  b gated           a target added whose backend listens 3 s later (the test's (b))
  b gating off      the same with HAPROXY_ADMISSION_GATING=false (the seed's behaviour)
  b no check        the same with servers without `check`: no health check to gate on
  b inter=2s        (b) with HAProxy's default check interval, 2 s instead of 200 ms: without
  ... gating off    gating, a dead new server takes traffic until its first check fails
  a/b baseline      (with --baseline or HSDO_BASELINE_BUILD_DIR) the same (a) and (b) with
                    another build, e.g. main before issue 10: no drain, no admission gating

    .venv/bin/python bench/lifecycle.py --build build [--baseline ../base/build]
        [--runs 3] [--threads 16]

Each run is a child process (this script with --child) so that each build runs its own binary;
every process it starts is stopped by its PID. Everything listens on loopback.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "integration"

NO_GATING = {"HAPROXY_ADMISSION_GATING": "false"}
SCENARIOS = {
    # name: (scenario, Lab keyword arguments)
    "a drain=10": ("remove", {"drain_timeout": 10}),
    "a drain=0": ("remove", {"drain_timeout": 0}),
    "b gated": ("add", {"drain_timeout": 10}),
    "b gating off": ("add", {"drain_timeout": 10, "agent_extra": NO_GATING}),
    "b no check": ("add", {"drain_timeout": 10, "check": False}),
    "b inter=2s": ("add", {"drain_timeout": 10, "check_inter_ms": 2000}),
    "b inter=2s gating off": ("add", {"drain_timeout": 10, "check_inter_ms": 2000,
                                      "agent_extra": NO_GATING}),
}
BASELINE = {
    "a baseline drain=10": ("remove", {"drain_timeout": 10}),
    "b baseline": ("add", {"drain_timeout": 10}),
    "b baseline inter=2s": ("add", {"drain_timeout": 10, "check_inter_ms": 2000}),
}


def child(name: str, threads: int):
    sys.path.insert(0, str(TESTS))
    from conftest import Processes
    from lifecycle_fixtures import Lab, SlowBackend, add_late_target, remove_target

    kind, kwargs = {**SCENARIOS, **BASELINE}[name]
    with tempfile.TemporaryDirectory(prefix="hsdo-lifecycle-") as tmp:
        procs = Processes(Path(tmp))
        lab = Lab(procs, Path(tmp), load_threads=threads, **kwargs)
        try:
            lab.start()
            if kind == "remove":
                seen = remove_target(lab, lab.backends[2], hold_seconds=3)
                note = ("drained" if seen.drained_at else "no drain") + (
                    f", freed {seen.freed_at - seen.removed_at:.1f}s after the removal"
                    if seen.freed_at else ", never freed")
                note += ", held requests " + "/".join(str(st) for _, st, _, _ in seen.held)
            else:
                seen = add_late_target(lab, SlowBackend(procs, "web-6", "127.0.0.7"))
                weights = sorted({s.weight for servers in seen.samples for s in servers})
                note = f"weights while not listening {weights}"
            outcomes = seen.load.snapshot()
            failed = [f"{o.status} {o.body}" for o in outcomes if not o.ok]
            held = getattr(seen, "held", [])  # (a)'s two long requests count too
            failed += [f"{status} {body}" for _, status, body, _ in held if status != 200]
            print(json.dumps({"requests": len(outcomes) + len(held), "failed": len(failed),
                              "note": note,
                              "failures": sorted({" ".join(f.split())[:48] for f in failed})}))
        finally:
            lab.close()


def run(name: str, build: Path, threads: int) -> dict:
    env = dict(os.environ)
    env.pop("HSDO_BIN", None)
    env.pop("HSDO_AGENT_CMD", None)
    env["HSDO_BUILD_DIR"] = str(build)
    out = subprocess.run([sys.executable, __file__, "--child", name, "--threads", str(threads)],
                         env=env, capture_output=True, text=True, timeout=180,
                         stdin=subprocess.DEVNULL)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (out.stdout + out.stderr).strip().splitlines()[-5:]
    return {"requests": 0, "failed": None, "note": "run failed: " + " | ".join(tail),
            "failures": []}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--baseline", default=os.environ.get("HSDO_BASELINE_BUILD_DIR"))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=16, help="load client threads")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.threads)
        return

    plan = [(name, Path(args.build).resolve()) for name in SCENARIOS]
    if args.baseline:
        plan += [(name, Path(args.baseline).resolve()) for name in BASELINE]
    if args.only:
        plan = [(n, b) for n, b in plan if args.only in n]
    print(f"{args.threads} load threads, 1 s responses, 2 nodes, {args.runs} run(s) each")
    print(f"{'scenario':<22} {'build':<28} {'failed':>8} {'requests':>9}  notes")
    for name, build in plan:
        for _ in range(args.runs):
            start = time.monotonic()
            result = run(name, build, args.threads)
            print(f"{name:<22} {str(build)[-28:]:<28} {str(result['failed']):>8} "
                  f"{result['requests']:>9}  {result['note']} ({time.monotonic() - start:.0f}s)"
                  + (f"; {', '.join(result['failures'])}" if result["failures"] else ""),
                  flush=True)


if __name__ == "__main__":
    main()
