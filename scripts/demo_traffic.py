#!/usr/bin/env python3
"""Demo traffic: sends the same N distinct URIs (/item/1 .. /item/N) to two HAProxy nodes and
prints, side by side, how each node spread them over the backends, and on how many URIs both
nodes chose the same backend. Loopback only.

  demo_traffic.py PORT1 PORT2 N [SAVE_FILE [PREVIOUS_FILE]]

SAVE_FILE keeps node 1's choice per URI; with PREVIOUS_FILE it also prints how many URIs
changed backend since then, and which backends they had before."""
import collections
import concurrent.futures
import json
import sys
import urllib.request


def choice(port, i):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/item/{i}", timeout=5) as r:
            return r.read().decode().strip()
    except OSError as error:
        return f"error ({type(error).__name__})"


def choices(port, n):
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda i: choice(port, i), range(1, n + 1)))


def main():
    port1, port2, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    node1, node2 = choices(port1, n), choices(port2, n)
    count1, count2 = collections.Counter(node1), collections.Counter(node2)
    print(f"  {'backend':<10} {'node1':>6} {'node2':>6}   (URIs out of {n})")
    for name in sorted(set(count1) | set(count2)):
        print(f"  {name:<10} {count1[name]:>6} {count2[name]:>6}")
    agree = sum(a == b for a, b in zip(node1, node2))
    print(f"both nodes agree on {agree} of {n} URIs ({100.0 * agree / n:.1f} %)")
    if len(sys.argv) > 4:
        with open(sys.argv[4], "w") as f:
            json.dump(node1, f)
    if len(sys.argv) > 5:
        with open(sys.argv[5]) as f:
            before = json.load(f)
        moved = [(b, a) for b, a in zip(before, node1) if b != a]
        origins = collections.Counter(b for b, _ in moved)
        print(f"URIs that changed backend on node1: {len(moved)} of {n}, previously on: "
              + (", ".join(f"{k} {v}" for k, v in sorted(origins.items())) or "none"))


if __name__ == "__main__":
    main()
