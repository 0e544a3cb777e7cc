#!/usr/bin/env python3
"""Where a running agent's resident memory goes (issue 12): starts HAProxy, a store (SQLite, or
DynamoDB on moto) with N slots half filled and one `hsdo --client`, waits for the steady state,
then prints VmRSS, the thread count and the resident kB of every mapping, grouped by file
(/proc/PID/smaps), largest first.

    .venv/bin/python bench/memory.py --build build --store sqlite --size 1000
"""
import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import DynamoTable, Lab, ready_count, require_waitress, rss_mb  # noqa: E402
from conftest import wait_until  # noqa: E402


def smaps_by_file(pid: int):
    """{mapping name: (Rss kB, Private kB)}, anonymous mappings named by their kind."""
    totals = collections.defaultdict(lambda: [0, 0])
    name = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            name = Path(fields[5]).name if len(fields) > 5 else "[anonymous]"
        elif fields[0] == "Rss:":
            totals[name][0] += int(fields[1])
        elif fields[0] in ("Private_Clean:", "Private_Dirty:"):
            totals[name][1] += int(fields[1])
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(Path(__file__).resolve().parents[1] / "build"))
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "dynamodb"])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of steady state")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="then keep everything running this many seconds (for perf -p PID)")
    parser.add_argument("--tls", action="store_true",
                        help="DynamoDB over HTTPS (moto behind a TLS relay), as in production")
    args = parser.parse_args()
    DynamoTable.tls = args.tls
    if args.store == "dynamodb":
        require_waitress()
    base = Path(tempfile.mkdtemp(prefix="hsdo-mem-", dir="/tmp"))
    lab = Lab(base, Path(args.build).resolve() / "src/app/hsdo", args.store, args.size)
    try:
        filled = lab.fill(range(1, args.size // 2 + 1))
        agent = lab.start_agent()
        wait_until(lambda: ready_count(lab.node, "app", filled) == len(filled), timeout=60,
                   what="half the slots applied")
        time.sleep(args.settle)
        pid = agent.proc.pid
        threads = sorted(p.name for p in Path(f"/proc/{pid}/task").iterdir())
        names = [Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in threads]
        print(f"VmRSS {rss_mb(pid):.1f} MB, {len(threads)} threads: {', '.join(names)}")
        print(Path(f"/proc/{pid}/smaps_rollup").read_text())
        rows = sorted(smaps_by_file(pid).items(), key=lambda kv: -kv[1][0])
        print(f"{'mapping':40} {'Rss kB':>8} {'Private kB':>10}")
        for name, (rss, private) in rows:
            if rss:
                print(f"{name:40} {rss:8} {private:10}")
        if args.hold > 0:
            print(f"agent pid {pid}: holding {args.hold:.0f} s", flush=True)
            time.sleep(args.hold)
    finally:
        lab.close()


if __name__ == "__main__":
    main()
