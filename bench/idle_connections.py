#!/usr/bin/env python3
"""bench/idle_connections.py -- resident memory a proxy adds per idle keep-alive client
connection: evenkeel, NGINX and HAProxy, one after another in the same run.

Starts an NGINX backend on 127.0.0.1 (`return 200`), then each proxy in turn (release
evenkeel; Debian's nginx and haproxy, same worker/thread count, keep-alive timeouts
raised to 120 s so idle connections are held). For each proxy, twice:
- configured for 512 connections: one warm-up request, then its resident memory
  (VmRSS summed over all its processes: NGINX's master and workers) -- the baseline;
- configured for N + 100 connections: one warm-up request, its memory, then N client
  connections that each send one keep-alive GET, read the answer and stay open and
  idle, and its memory again once they have idled for IDLE_WAIT seconds.
Reports per connection both the growth while connections open and the cost over the
small baseline (what holding N costs, a connection table allocated up front included:
NGINX allocates and touches all `worker_connections` entries when it starts), and
evenkeel's figures over the best peer's. Everything is on loopback and stops by itself.

Usage: bench/idle_connections.py [N] [WORKERS] [TARGETS] [IDLE_WAIT]
  N        connections held (default 9000: HAProxy needs two descriptors per
           connection, and a container may cap them at 20,000)
  WORKERS  worker threads/processes of every proxy (default 1)
  TARGETS  comma list of evenkeel,nginx,haproxy (default all three)
  IDLE_WAIT  seconds the connections idle before the second reading (default 15: past
           khugepaged's 10-second scan, which once folded evenkeel's allocator arena into
           huge pages about ten seconds in, after a 5-second reading had been taken)
With IDLE_TLS=1 in the environment every proxy terminates TLS (a self-signed P-256
certificate for `localhost`, made with openssl into a temporary folder) and the
connections are HTTPS ones: one TLS 1.3 handshake and one request each, then idle.
Needs a prior `cargo build --release` (or EVENKEEL_BINARY=path), nginx and haproxy installed, and a hard limit on
open files above N + 200 (the script raises its own soft limit to it).
"""
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from procs import start_evenkeel as run_evenkeel, start_nginx as run_nginx, family, free_port, wait_port

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# EVENKEEL_BINARY measures another build (a baseline kept aside) in the same way.
binary = os.environ.get("EVENKEEL_BINARY") or os.path.join(root, "target", "release", "evenkeel")
count = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
targets = (sys.argv[3] if len(sys.argv) > 3 else "evenkeel,nginx,haproxy").split(",")
idle_wait = float(sys.argv[4]) if len(sys.argv) > 4 else 15.0
SMALL = 512
tls_folder = None
if os.environ.get("IDLE_TLS") == "1":
    tls_folder = tempfile.mkdtemp(prefix="evenkeel-idle-tls-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", os.path.join(tls_folder, "site.key"),
                    "-out", os.path.join(tls_folder, "site.pem")],
                   check=True, capture_output=True)
    with open(os.path.join(tls_folder, "combined.pem"), "w") as combined:
        for part in ("site.pem", "site.key"):
            with open(os.path.join(tls_folder, part)) as f:
                combined.write(f.read())
    os.chmod(tls_folder, 0o755)
    for part in ("site.pem", "site.key", "combined.pem"):
        os.chmod(os.path.join(tls_folder, part), 0o644)
    client_tls = ssl.create_default_context(cafile=os.path.join(tls_folder, "site.pem"))

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


def start_evenkeel(folder, backend_port, room):
    return run_evenkeel(
        binary, folder,
        '[[listener]]\nname = "public"\nlisten = "127.0.0.1:0"\nheader_timeout = "120s"\n'
        + (f'tls = {{ certificates = [{{ cert = "{tls_folder}/site.pem", '
           f'key = "{tls_folder}/site.key" }}] }}\n' if tls_folder else '')
        + f'max_connections = {room}\n[[route]]\npool = "web"\n'
        f'[pool.web]\nbackends = [{{ address = "127.0.0.1:{backend_port}" }}]\n'
        '[pool.web.health]\npath = "/"\n',
        workers,
    )


def start_nginx(folder, backend_port, room):
    port = free_port()
    proxy = run_nginx(folder, "nginx",
                      f"master_process on;\nworker_processes {workers};\n"
                      f"worker_rlimit_nofile {room + 1000};", room + 400, f"""
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream backends {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096{" ssl" if tls_folder else ""};
        {f"ssl_certificate {tls_folder}/site.pem; ssl_certificate_key {tls_folder}/site.key;" if tls_folder else ""}
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""")
    return proxy, port


def start_haproxy(folder, backend_port, room):
    port = free_port()
    conf = os.path.join(folder, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
    nbthread {workers}
    maxconn {room}

defaults
    mode http
    maxconn {room}
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    option http-keep-alive

frontend fe
    bind 127.0.0.1:{port}{f" ssl crt {tls_folder}/combined.pem" if tls_folder else ""}
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
    if tls_folder:
        s = client_tls.wrap_socket(s, server_hostname="localhost")
    s.sendall(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
    if not s.recv(4096).startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"a request through port {port} failed")
    return s


def measure(name, start, backend_port, room, hold):
    """RSS (KiB) of proxy `name` configured for `room` connections: after a warm-up
    request, and after `hold` idle keep-alive connections have been open for
    `idle_wait` seconds."""
    folder = tempfile.mkdtemp(prefix=f"evenkeel-idle-{name}-")
    os.chmod(folder, 0o755)
    proxy, port = start(folder, backend_port, room)
    held = []
    try:
        wait_port(port)
        time.sleep(1.0)
        # One request first, so upstream connections and buffers exist before the baseline.
        get(port).close()
        time.sleep(0.5)
        before = rss_kib(family(proxy.pid))
        for _ in range(hold):
            held.append(get(port))
        time.sleep(idle_wait if hold else 0)
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


def start_backend(folder):
    """An NGINX answering every request with 200 and 3 bytes, sized for every
    connection a proxy could open to it; (process, port)."""
    port = free_port()
    backend = run_nginx(folder, "backend",
                        f"master_process off;\nworker_rlimit_nofile {count + 1000};",
                        count + 500, f"""
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}""")
    wait_port(port)
    return backend, port


starters = {"evenkeel": start_evenkeel, "nginx": start_nginx, "haproxy": start_haproxy}
backend_folder = tempfile.mkdtemp(prefix="evenkeel-idle-backend-")
os.chmod(backend_folder, 0o755)
backend, backend_port = start_backend(backend_folder)
results = {}
try:
    for name in targets:
        _, small = measure(name, starters[name], backend_port, SMALL, 0)
        before, after = measure(name, starters[name], backend_port, count + 100, count)
        growth = (after - before) * 1024 / count
        cost = (after - small) * 1024 / count
        results[name] = (small, before, after, growth, cost)
        kind = "TLS keep-alive" if tls_folder else "keep-alive"
        print(f"{name:9} {count} idle {kind} connections, {workers} worker(s): RSS "
              f"{small / 1024:.1f} MiB (room for {SMALL}), {before / 1024:.1f} MiB (room "
              f"for {count + 100}) -> {after / 1024:.1f} MiB holding them: {growth:.0f} B "
              f"growth, {cost:.0f} B over the small baseline, per connection", flush=True)
finally:
    backend.terminate()
    backend.wait(timeout=15)
    shutil.rmtree(backend_folder, ignore_errors=True)
    if tls_folder:
        shutil.rmtree(tls_folder, ignore_errors=True)
peers = [p for p in ("nginx", "haproxy") if p in results]
if "evenkeel" in results and peers:
    ours = results["evenkeel"]
    for label, i in (("growth", 3), ("over the small baseline", 4)):
        best = min(peers, key=lambda p: results[p][i])
        print(f"evenkeel / best peer, per connection, {label}: "
              f"{ours[i] / results[best][i]:.2f} ({ours[i]:.0f} vs {best} {results[best][i]:.0f} B)")
    best = min(peers, key=lambda p: results[p][2])
    print(f"evenkeel / best peer, RSS holding them: {ours[2] / results[best][2]:.2f} "
          f"({ours[2] / 1024:.1f} vs {best} {results[best][2] / 1024:.1f} MiB)")
