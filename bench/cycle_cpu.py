#!/usr/bin/env python3
"""Where a steady agent's CPU goes, cycle by cycle (issue 12, target 1): starts HAProxy, a
store with N slots half filled and one `hsdo --client` (INTERVAL 1 s), waits for the steady
state, then samples the CPU of each of the agent's threads (schedstat) every half INTERVAL for
`--window` seconds. Each cycle falls in one half-second sample; the cycles are sorted into
kinds by their cost (a plain cycle: `show info` only; with the node report, every second
cycle; with a full read, every HAPROXY_FULL_SYNC_INTERVAL), and the mean of each kind is
printed with the mean per cycle and what the other threads took.

    .venv/bin/python bench/cycle_cpu.py --build build --store sqlite --size 100
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import Lab, ready_count, require_waitress  # noqa: E402
from conftest import wait_until  # noqa: E402


def thread_cpu_ms(pid: int) -> dict:
    """{thread id: CPU ms} of every thread of `pid` (schedstat, nanoseconds)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[task.name] = int((task / "schedstat").read_text().split()[0]) / 1e6
        except (OSError, ValueError):
            pass
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(Path(__file__).resolve().parents[1] / "build"))
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "dynamodb"])
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    if args.store == "dynamodb":
        require_waitress()
    binary = Path(args.build).resolve() / "src/app/hsdo"
    lab = Lab(Path(tempfile.mkdtemp(prefix="hsdo-cycle-", dir="/tmp")), binary, args.store,
              args.size)
    try:
        filled = lab.fill(range(1, args.size // 2 + 1))
        agent = lab.start_agent()
        wait_until(lambda: ready_count(lab.node, "app", filled) == len(filled), timeout=60,
                   what="half the slots applied")
        time.sleep(3)  # past the first cycles
        pid = str(agent.proc.pid)
        previous = thread_cpu_ms(agent.proc.pid)
        main_ms, others_ms = [], 0.0
        start = time.monotonic()
        while time.monotonic() - start < args.window:
            time.sleep(0.5)
            now = thread_cpu_ms(agent.proc.pid)
            main_ms.append(now.get(pid, 0.0) - previous.get(pid, 0.0))
            others_ms += sum(v - previous.get(t, 0.0) for t, v in now.items() if t != pid)
            previous = now
    finally:
        lab.close()
    cycles = sorted(ms for ms in main_ms if ms > 0.01)  # the half-seconds with a cycle in them
    if len(cycles) < 4:
        sys.exit(f"only {len(cycles)} cycles seen in {args.window} s")
    plain_limit = 1.5 * cycles[len(cycles) // 4]  # the cheapest quarter are plain cycles
    plain = [ms for ms in cycles if ms <= plain_limit]
    dearer = [ms for ms in cycles if ms > plain_limit]
    report = [ms for ms in dearer if ms <= 1.6 * statistics.median(dearer)] if dearer else []
    full = [ms for ms in dearer if ms not in report]
    print(f"{args.store} N={args.size}, {len(cycles)} cycles in {args.window:.0f} s "
          f"(main thread, ms per cycle):")
    for name, kind in (("plain cycle", plain), ("with the node report", report),
                       ("with a full read or resync", full)):
        if kind:
            print(f"  {name:28} {statistics.mean(kind):6.3f}  ({len(kind)} cycles)")
    print(f"  {'mean of all cycles':28} {statistics.mean(cycles):6.3f}")
    print(f"  other threads, per cycle     {others_ms / len(cycles):6.3f}")


if __name__ == "__main__":
    main()
