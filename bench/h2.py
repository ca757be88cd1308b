#!/usr/bin/env python3
"""bench/h2.py -- HTTP/2 through evenkeel and NGINX in the same run, driven by h2load
(Debian's nghttp2-client): requests per second and the proxy's CPU per request.

Two workloads:
  http2  HTTP/2 clients (h2c, prior knowledge) to the proxy, which forwards to three
         NGINX backends over HTTP/1.1 keep-alive (a 13-byte answer). evenkeel: an
         HTTP/1 pool behind its listener; NGINX: `listen ... http2` and proxy_pass
         with `keepalive`.
  grpc   gRPC unary calls (h2load POSTs one framed message with `content-type:
         application/grpc`) to the proxy, which forwards them over HTTP/2 to three
         gRPC servers (tests/peers/grpc_peer.py, Python grpcio). evenkeel: an h2c
         pool; NGINX: grpc_pass with `keepalive`. The Python servers are the
         bottleneck, so requests per second say little; CPU per request is the figure.

Rounds alternate the proxies so drift on a shared machine hits them alike. The proxy's
CPU is utime + stime from /proc over all its processes during the round. Everything is
on loopback and stops by itself.

Usage: bench/h2.py [WORKLOAD] [REQUESTS] [CLIENTS] [STREAMS] [ROUNDS] [WORKERS]
  WORKLOAD  http2 | grpc | both (default both)
  REQUESTS  per round (default 200000 for http2, 20000 for grpc)
  CLIENTS   h2load connections (default 50)
  STREAMS   h2load streams per connection, -m (default 10)
  ROUNDS    default 3
  WORKERS   worker threads/processes of each proxy (default 1)
Needs `cargo build --release`, nginx, h2load, python3 with grpcio.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from procs import start_evenkeel, cpu_seconds, family, free_port, wait_port, stop_all

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "evenkeel")
peer = os.path.join(root, "tests", "peers", "grpc_peer.py")
workload = sys.argv[1] if len(sys.argv) > 1 else "both"
requests_arg = int(sys.argv[2]) if len(sys.argv) > 2 else None
clients = int(sys.argv[3]) if len(sys.argv) > 3 else 50
streams = int(sys.argv[4]) if len(sys.argv) > 4 else 10
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
workers = int(sys.argv[6]) if len(sys.argv) > 6 else 1

NGINX_COMMON = """daemon off;
master_process on;
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
{body}
}}
"""


def nginx(folder, body, workers_=1):
    os.makedirs(folder, exist_ok=True)
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_COMMON.format(workers=workers_, folder=folder, body=body))
    return subprocess.Popen(["nginx", "-e", f"{folder}/error.log", "-c", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def http_backends(folder, started):
    ports = [free_port() for _ in range(3)]
    servers = "\n".join(
        f'  server {{ listen 127.0.0.1:{p}; keepalive_requests 100000; '
        f'location / {{ return 200 "hello world\\n"; }} }}' for p in ports)
    started.append(nginx(os.path.join(folder, "backends"), servers, 1))
    for p in ports:
        wait_port(p)
    return ports


def grpc_backends(started):
    ports = []
    for i in range(3):
        server = subprocess.Popen(["python3", peer, "server", f"b{i}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started.append(server)
        ports.append(int(server.stdout.readline().strip()))
    return ports


def evenkeel_config(ports, protocol):
    backends = ", ".join(f'{{ address = "127.0.0.1:{p}" }}' for p in ports)
    return (f'[[listener]]\nname = "bench"\nlisten = "127.0.0.1:0"\n'
            f'[[route]]\npool = "b"\n[pool.b]\nprotocol = "{protocol}"\n'
            f'backends = [{backends}]\n')


def nginx_proxy(folder, ports, grpc):
    port = free_port()
    upstream = "\n".join(f"    server 127.0.0.1:{p};" for p in ports)
    if grpc:
        location = "grpc_pass grpc://b;"
    else:
        location = ('proxy_pass http://b; proxy_http_version 1.1; '
                    'proxy_set_header Connection "";')
    body = (f"  upstream b {{\n{upstream}\n    keepalive 64;\n  }}\n"
            f"  server {{ listen 127.0.0.1:{port} http2; http2_max_requests 1000000; "
            f"keepalive_requests 1000000; location / {{ {location} }} }}")
    return nginx(folder, body, workers), port


def h2load(port, n, grpc, folder):
    args = ["h2load", "-n", str(n), "-c", str(clients), "-m", str(streams)]
    if grpc:
        message = b"hello"
        data = os.path.join(folder, "grpc-message")
        with open(data, "wb") as f:
            f.write(b"\x00" + len(message).to_bytes(4, "big") + message)
        args += ["-d", data, "-H", "content-type: application/grpc", "-H", "te: trailers"]
        url = f"http://127.0.0.1:{port}/evenkeel.test.Echo/Unary"
    else:
        url = f"http://127.0.0.1:{port}/"
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=600).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if not done or not codes:
        raise SystemExit(f"h2load printed no results:\n{out}")
    return int(done.group(1)), int(codes.group(1))


def run(kind):
    grpc = kind == "grpc"
    n = requests_arg or (20000 if grpc else 200000)
    folder = tempfile.mkdtemp(prefix="evenkeel-h2-bench-")
    started = []
    try:
        ports = grpc_backends(started) if grpc else http_backends(folder, started)
        proxies = {}
        proxy, port = start_evenkeel(binary, folder,
                                     evenkeel_config(ports, "h2c" if grpc else "http1"), workers)
        started.append(proxy)
        proxies["evenkeel"] = (proxy, port)
        proxy, port = nginx_proxy(os.path.join(folder, "nginx"), ports, grpc)
        started.append(proxy)
        wait_port(port)
        proxies["nginx"] = (proxy, port)
        for name, (_, port) in proxies.items():
            h2load(port, max(1000, n // 20), grpc, folder)  # warm up
        totals = {name: [0.0, 0.0, 0] for name in proxies}
        for r in range(rounds):
            order = list(proxies) if r % 2 == 0 else list(reversed(proxies))
            for name in order:
                proxy, port = proxies[name]
                pids = family(proxy.pid)
                before = cpu_seconds(pids)
                t0 = time.time()
                done, ok = h2load(port, n, grpc, folder)
                elapsed = time.time() - t0
                cpu = cpu_seconds(pids) - before
                totals[name][0] += done / elapsed
                totals[name][1] += cpu
                totals[name][2] += ok
                print(f"round {r + 1} {kind} {name:9} {done / elapsed:10,.0f} req/s "
                      f"{cpu / max(done, 1) * 1e6:7.2f} µs CPU/request ({ok} 2xx of {done})", flush=True)
        per = {name: totals[name][1] / max(totals[name][2], 1) for name in proxies}
        print()
        print(f"{kind}: {n} requests per round, h2load -c {clients} -m {streams}, {rounds} rounds, "
              f"{workers} worker(s)")
        print("| proxy | requests/s | proxy CPU µs per request | ÷ NGINX |")
        print("| --- | ---: | ---: | ---: |")
        for name in proxies:
            print(f"| {name} | {totals[name][0] / rounds:,.0f} | {per[name] * 1e6:.2f} | "
                  f"{per[name] / per['nginx']:.2f} |")
        print()
    finally:
        stop_all(started)
        shutil.rmtree(folder, ignore_errors=True)


def main():
    if not os.path.exists(binary):
        raise SystemExit("build first: cargo build --release")
    for kind in (["http2", "grpc"] if workload == "both" else [workload]):
        run(kind)


if __name__ == "__main__":
    main()
