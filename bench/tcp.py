#!/usr/bin/env python3
"""bench/tcp.py -- Redis through a TCP (L4) pool of three: evenkeel (`mode = "tcp"`),
HAProxy (`mode tcp`) and NGINX (`stream`), in the same run: operations per second and
the proxy's CPU per operation.

Starts three `redis-server`s on 127.0.0.1, then each proxy in front of all three
(round robin, same worker count), and drives each with `redis-benchmark` (C CONNS
connections, N requests of each of SET and GET per round, no pipelining); rounds
alternate the proxies so drift on a shared machine hits them alike. The proxy's CPU is
utime + stime from /proc over all its processes during the round. Everything is on
loopback and stops by itself.

Usage: bench/tcp.py [REQUESTS] [CONNS] [ROUNDS] [WORKERS] [TARGETS]
  REQUESTS  per test and round (default 200000)
  CONNS     redis-benchmark connections (default 50)
  ROUNDS    default 3
  WORKERS   worker threads/processes of every proxy (default 1)
  TARGETS   comma list of evenkeel,haproxy,nginx (default all three)
Needs `cargo build --release`, redis-server and redis-tools, haproxy, nginx with the
stream module (Debian: libnginx-mod-stream).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from procs import start_evenkeel as run_evenkeel, cpu_seconds, family, free_port, start_all, stop_all, wait_port

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "evenkeel")
requests = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
conns = int(sys.argv[2]) if len(sys.argv) > 2 else 50
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
workers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
targets = (sys.argv[5] if len(sys.argv) > 5 else "evenkeel,haproxy,nginx").split(",")
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def start_evenkeel(folder, backends):
    listed = ", ".join(f'{{ address = "127.0.0.1:{p}" }}' for p in backends)
    return run_evenkeel(binary, folder,
                        '[[listener]]\nname = "redis"\nlisten = "127.0.0.1:0"\nmode = "tcp"\n'
                        'pool = "redis"\n'
                        f'[pool.redis]\nbackends = [{listed}]\n[pool.redis.health]\ntype = "tcp"\n',
                        workers)


def start_haproxy(folder, backends):
    port = free_port()
    conf = os.path.join(folder, "haproxy.cfg")
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(backends))
    with open(conf, "w") as f:
        f.write(f"""global
    nbthread {workers}

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    balance roundrobin
{servers}
""")
    proxy = subprocess.Popen(["haproxy", "-f", conf, "-db"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proxy, port


def start_nginx(folder, backends):
    port = free_port()
    conf = os.path.join(folder, "nginx.conf")
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in backends)
    with open(conf, "w") as f:
        f.write(f"""load_module {STREAM_MODULE};
daemon off;
master_process on;
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
stream {{
    upstream redis {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_pass redis;
    }}
}}
""")
    proxy = subprocess.Popen(["nginx", "-p", folder, "-e", f"{folder}/error.log", "-c", conf],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proxy, port


def benchmark(port):
    """Operations per second over SET and GET, and how many operations that was."""
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(conns),
         "-n", str(requests), "-t", "set,get", "-q", "--csv"],
        capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"redis-benchmark failed through port {port}: {out.stderr[-2000:]}")
    rates = [float(line.split(",")[1].strip('"')) for line in out.stdout.splitlines()
             if line.startswith('"SET"') or line.startswith('"GET"')]
    return sum(rates) / len(rates), 2 * requests


def main():
    if not os.path.exists(binary):
        raise SystemExit("build first: cargo build --release")
    if "nginx" in targets and not os.path.exists(STREAM_MODULE):
        raise SystemExit(f"nginx's stream module is missing ({STREAM_MODULE}): "
                         "apt install libnginx-mod-stream, or leave nginx out of TARGETS")
    folder = tempfile.mkdtemp(prefix="evenkeel-tcp-bench-")
    started = []
    try:
        backends = []
        for _ in range(3):
            port = free_port()
            started.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            backends.append(port)
        starters = {"evenkeel": start_evenkeel, "haproxy": start_haproxy, "nginx": start_nginx}
        proxies = start_all(targets, starters, folder, backends, started)
        time.sleep(1)
        direct, _ = benchmark(backends[0])
        print(f"direct to one redis-server: {direct:,.0f} operations/s")
        totals = {name: [0.0, 0, 0.0] for name in targets}
        for r in range(rounds):
            for name in targets:
                proxy, port = proxies[name]
                pids = family(proxy.pid)
                before = cpu_seconds(pids)
                rate, operations = benchmark(port)
                cpu = cpu_seconds(pids) - before
                totals[name][0] += rate
                totals[name][1] += operations
                totals[name][2] += cpu
                print(f"round {r + 1} {name:9} {rate:10,.0f} operations/s "
                      f"{cpu * 1e6 / operations:6.2f} µs CPU per operation")
        print()
        per = {n: totals[n][2] / max(totals[n][1], 1) for n in targets}
        peers = [per[n] for n in targets if n != "evenkeel"]
        best = min(peers) if peers else None
        print("| proxy | operations/s | proxy CPU µs per operation | vs the better peer |")
        print("| --- | ---: | ---: | ---: |")
        for name in targets:
            ratio = f"{per[name] / best:.2f}" if best else "-"
            print(f"| {name} | {totals[name][0] / rounds:,.0f} | {per[name] * 1e6:.2f} | {ratio} |")
    finally:
        stop_all(started)
        shutil.rmtree(folder, ignore_errors=True)


main()
