"""An agent's CPU in steady state, before and after a change: `bench/e2e.py`'s steady window
(real HAProxy, real `hsdo --client`, N template slots half filled, INTERVAL = 1 s) for two
builds, interleaved round by round (before, after), so that a shared machine's drift falls on
both. One line per measurement:

    .venv/bin/python bench/steady_ab.py --build build --baseline /tmp/base/build \\
        --size 100 --rounds 3

With `--store dynamodb --tls ab` the two columns are one build over HTTP and over HTTPS (moto
behind a TLS relay, as DynamoDB is reached in production).

The agent's CPU is all its threads' (schedstat, ns), per second of the window (= per cycle at
INTERVAL 1 s); HAProxy's is its CPU over the window minus its idle CPU, per 30 s.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", required=True)
    parser.add_argument("--baseline", help="build directory of the 'before'")
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "dynamodb"])
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=float, default=60.0,
                        help="steady window (s); 60 s or more always holds the agent's "
                             "whole-table resync (every 60 s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tls", choices=["off", "on", "ab"], default="off",
                        help="DynamoDB over HTTPS (moto behind a TLS relay): on for both builds, "
                             "or ab: --build over HTTP ('before') and over HTTPS ('after')")
    args = parser.parse_args()
    if args.store == "dynamodb":
        e2e.require_waitress()
    if (args.tls == "ab") == bool(args.baseline):
        parser.error("give --baseline, or --tls ab (which compares --build with itself)")
    after = Path(args.build).resolve() / "src/app/hsdo"
    if args.tls == "ab":
        builds = {"http": (after, False), "https": (after, True)}
    else:
        builds = {"before": (Path(args.baseline).resolve() / "src/app/hsdo", args.tls == "on"),
                  "after": (after, args.tls == "on")}
    base = Path(tempfile.mkdtemp(prefix="hsdo-ab-", dir="/tmp"))
    for round_ in range(args.rounds):
        for name, (binary, tls) in builds.items():
            e2e.DynamoTable.tls = tls
            workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
            lab = e2e.Lab(workdir, binary, args.store, args.size)
            try:
                r = e2e.steady(lab, args.window)
            finally:
                lab.close()
            print(f"round {round_} {name:6} {args.store} N={args.size}: agent "
                  f"{r['agent_ms_per_s']:.3f} ms/s ({r['agent_ms']:.3f} ms per cycle), "
                  f"HAProxy {r['haproxy_30s']:.3f} s per 30 s, {r['rss']:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
