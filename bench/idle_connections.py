#!/usr/bin/env python3
"""bench/idle_connections.py -- resident memory evenkeel adds per idle keep-alive client
connection.

Starts a stand-in backend and `evenkeel serve` (release build) on 127.0.0.1, opens N
client connections that each send one keep-alive GET, read the answer and then stay
open and idle, and reports evenkeel's VmRSS before and after. Everything is on loopback
and stops by itself; header_timeout is raised to 120 s so idle connections are held.

Usage: bench/idle_connections.py [N] [WORKERS]   (default 10000 and 1; needs
`ulimit -n` above N + 100 and a prior `cargo build --release`)
"""
import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "evenkeel")
count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
workers = sys.argv[2] if len(sys.argv) > 2 else "1"


class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
threading.Thread(target=backend.serve_forever, daemon=True).start()
folder = tempfile.mkdtemp(prefix="evenkeel-idle-")
config = os.path.join(folder, "evenkeel.toml")
with open(config, "w") as f:
    f.write(
        '[[listener]]\nname = "public"\nlisten = "127.0.0.1:0"\nheader_timeout = "120s"\n'
        f'max_connections = {count + 100}\n[[route]]\npool = "web"\n'
        f'[pool.web]\nbackends = [{{ address = "127.0.0.1:{backend.server_address[1]}" }}]\n'
        '[pool.web.health]\npath = "/"\n'
    )
proxy = subprocess.Popen(
    [binary, "serve", "-c", config, "--workers", workers, "--no-access-log"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
)
try:
    port = int(proxy.stdout.readline().strip().rsplit(":", 1)[1])
    time.sleep(1.0)
    # One request first, so the upstream pool and buffers exist before the baseline.
    warm = socket.create_connection(("127.0.0.1", port))
    warm.sendall(b"GET / HTTP/1.1\r\nhost: idle\r\n\r\n")
    warm.recv(4096)
    before = rss_kib(proxy.pid)
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nhost: idle\r\n\r\n")
        if not s.recv(4096).startswith(b"HTTP/1.1 200"):
            raise SystemExit("a request failed")
        held.append(s)
    time.sleep(2.0)
    after = rss_kib(proxy.pid)
    per = (after - before) * 1024 / count
    print(f"{count} idle keep-alive connections, {workers} worker(s): "
          f"VmRSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB, "
          f"+{(after - before) / 1024:.1f} MiB ({per:.0f} bytes per connection)")
    for s in held:
        s.close()
finally:
    proxy.send_signal(signal.SIGTERM)
    try:
        proxy.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proxy.kill()
    backend.shutdown()
