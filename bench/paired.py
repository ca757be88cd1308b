#!/usr/bin/env python3
"""bench/paired.py -- per-round CPU ratios from a harness run (runs.csv).

The performance targets compare, round by round, each proxy's CPU per request with
NGINX's in the same round (and with the lower of NGINX's and HAProxy's), and the
proxy÷backend CPU ratios. The shared harness prints medians per target; this prints
the paired per-round figures it does not.

Usage: bench/paired.py bench/results/<time>/w1/runs.csv [more runs.csv ...]
"""
import csv
import statistics
import sys


def main(paths):
    for path in paths:
        rounds = {}
        with open(path) as f:
            for row in csv.DictReader(f):
                if not row["proxy_cpu_us_req"]:
                    continue
                cpu = float(row["proxy_cpu_us_req"])
                ratio = cpu / float(row["backend_cpu_us_req"])
                rounds.setdefault(row["round"], {})[row["target"]] = (cpu, ratio)
        targets = sorted({t for r in rounds.values() for t in r} - {"nginx", "haproxy"})
        print(f"## {path}")
        print()
        print("| target | median raw CPU ÷ NGINX's (same round) | median raw CPU ÷ min(NGINX, HAProxy) | median proxy÷backend | NGINX's | HAProxy's | rounds |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for target in targets:
            raw, best, own, nginx, haproxy = [], [], [], [], []
            for r in rounds.values():
                if target not in r or "nginx" not in r or "haproxy" not in r:
                    continue
                raw.append(r[target][0] / r["nginx"][0])
                best.append(r[target][0] / min(r["nginx"][0], r["haproxy"][0]))
                own.append(r[target][1])
                nginx.append(r["nginx"][1])
                haproxy.append(r["haproxy"][1])
            if not raw:
                continue
            med = statistics.median
            print(f"| {target} | {med(raw):.3f} | {med(best):.3f} | {med(own):.2f} | {med(nginx):.2f} | {med(haproxy):.2f} | {len(raw)} |")
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1:])
