#!/usr/bin/env python3
"""bench/idle_connections.py -- resident memory a proxy adds per idle keep-alive client
connection: evenkeel, NGINX and HAProxy, one after another in the same run.

Starts a stand-in backend on 127.0.0.1, then each proxy in turn (release evenkeel;
Debian's nginx and haproxy, same worker/thread count, keep-alive timeouts raised to 120 s
so idle connections are held). For each: one warm-up request, the proxy's resident
memory (VmRSS summed over all its processes: NGINX's master and workers), then N client
connections that each send one keep-alive GET, read the answer and stay open and idle,
and the memory again. Reports bytes per idle connection and each proxy's figure over the
best of the two peers'. Everything is on loopback and stops by itself.

Usage: bench/idle_connections.py [N] [WORKERS] [TARGETS]
  N        connections held (default 9000: HAProxy needs two descriptors per
           connection, and a container may cap them at 20,000)
  WORKERS  worker threads/processes of every proxy (default 1)
  TARGETS  comma list of evenkeel,nginx,haproxy (default all three)
Needs a prior `cargo build --release`, nginx and haproxy installed, and a hard limit on
open files above N + 200 (the script raises its own soft limit to it).
"""
import http.server
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from procs import start_evenkeel as run_evenkeel, family, free_port, wait_port

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "evenkeel")
count = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
targets = (sys.argv[3] if len(sys.argv) > 3 else "evenkeel,nginx,haproxy").split(",")

# HAProxy wants about two descriptors per connection it may hold; root may raise the
# hard limit, anyone else needs it above N + 200 (and HAProxy then holds fewer).
need = 2 * count + 2000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
except (ValueError, OSError):
    if hard != resource.RLIM_INFINITY and hard < count + 200:
        raise SystemExit(f"the hard limit on open files ({hard}) is below {count + 200}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def start_evenkeel(folder, backend_port):
    return run_evenkeel(
        binary, folder,
        '[[listener]]\nname = "public"\nlisten = "127.0.0.1:0"\nheader_timeout = "120s"\n'
        f'max_connections = {count + 100}\n[[route]]\npool = "web"\n'
        f'[pool.web]\nbackends = [{{ address = "127.0.0.1:{backend_port}" }}]\n'
        '[pool.web.health]\npath = "/"\n',
        workers,
    )


def start_nginx(folder, backend_port):
    port = free_port()
    os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {count + 1000};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections {count + 500}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {folder}/tmp/client_body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;
    upstream backends {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    proxy = subprocess.Popen(
        ["nginx", "-p", folder, "-e", f"{folder}/error.log", "-c", conf],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proxy, port


def start_haproxy(folder, backend_port):
    port = free_port()
    conf = os.path.join(folder, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
    nbthread {workers}
    maxconn {count + 100}

defaults
    mode http
    maxconn {count + 100}
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    option http-keep-alive

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    http-reuse always
    server b1 127.0.0.1:{backend_port}
""")
    proxy = subprocess.Popen(
        ["haproxy", "-f", conf, "-db"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proxy, port


def get(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nhost: idle\r\n\r\n")
    if not s.recv(4096).startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"a request through port {port} failed")
    return s


def measure(name, start, backend_port):
    folder = tempfile.mkdtemp(prefix=f"evenkeel-idle-{name}-")
    os.chmod(folder, 0o755)
    proxy, port = start(folder, backend_port)
    held = []
    try:
        wait_port(port)
        time.sleep(1.0)
        # One request first, so upstream connections and buffers exist before the baseline.
        get(port).close()
        time.sleep(0.5)
        before = rss_kib(family(proxy.pid))
        for _ in range(count):
            held.append(get(port))
        time.sleep(2.0)
        after = rss_kib(family(proxy.pid))
        return before, after
    finally:
        for s in held:
            s.close()
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
        shutil.rmtree(folder, ignore_errors=True)


class Backend(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a proxy closing its upstream connections when it stops


starters = {"evenkeel": start_evenkeel, "nginx": start_nginx, "haproxy": start_haproxy}
backend = Backend(("127.0.0.1", 0), Answer)
threading.Thread(target=backend.serve_forever, daemon=True).start()
results = {}
try:
    for name in targets:
        before, after = measure(name, starters[name], backend.server_address[1])
        results[name] = (before, after, (after - before) * 1024 / count)
        print(f"{name:9} {count} idle keep-alive connections, {workers} worker(s): "
              f"RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB "
              f"({results[name][2]:.0f} bytes per connection)", flush=True)
finally:
    backend.shutdown()
# NGINX allocates its connection table (worker_connections entries) when it starts, so
# part of what a connection costs it is in its baseline: compare the totals too.
peers = [p for p in ("nginx", "haproxy") if p in results]
if "evenkeel" in results and peers:
    ours = results["evenkeel"]
    growth = min(peers, key=lambda p: results[p][2])
    total = min(peers, key=lambda p: results[p][1])
    print(f"evenkeel / best peer, growth per connection: {ours[2] / results[growth][2]:.2f} "
          f"({ours[2]:.0f} vs {growth} {results[growth][2]:.0f} bytes)")
    print(f"evenkeel / best peer, RSS holding them: {ours[1] / results[total][1]:.2f} "
          f"({ours[1] / 1024:.1f} vs {total} {results[total][1] / 1024:.1f} MiB)")
