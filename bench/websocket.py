#!/usr/bin/env python3
"""bench/websocket.py -- WebSocket echo through evenkeel, NGINX and HAProxy in the same
run: messages per second, and the proxy's CPU per message.

Starts one WebSocket echo server (Python `websockets`, compression off) on 127.0.0.1,
then each proxy (release evenkeel; Debian's nginx with the usual Upgrade/Connection
lines; haproxy in http mode, which carries WebSocket by itself), all with the same worker
count. A client process opens C sessions through the proxy and has each send a 32-byte
text message and wait for its echo, over and over, for S seconds; rounds alternate the
proxies so drift on a shared machine hits them alike. The proxy's CPU is utime + stime
from /proc over all its processes (NGINX's master and workers) during the round.
The client and echo server are Python and bound the rate: what compares the proxies is
CPU per message, measured at the same load. Everything is on loopback and stops by
itself.

Usage: bench/websocket.py [SECONDS] [SESSIONS] [ROUNDS] [WORKERS] [TARGETS]
  SECONDS   per round and proxy (default 10)
  SESSIONS  sessions open at once (default 50)
  ROUNDS    default 3
  WORKERS   worker threads/processes of every proxy (default 1)
  TARGETS   comma list of evenkeel,nginx,haproxy (default all three)
Needs `cargo build --release`, nginx, haproxy, and `pip install websockets`.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from procs import start_evenkeel as run_evenkeel, start_nginx as run_nginx, cpu_seconds, family, free_port, start_all, stop_all, wait_port

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "evenkeel")
seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 50
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
workers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
targets = (sys.argv[5] if len(sys.argv) > 5 else "evenkeel,nginx,haproxy").split(",")

ECHO = """
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "127.0.0.1", 0, compression=None, ping_interval=None,
                     max_queue=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"""

CLIENT = """
import asyncio, sys, time
from websockets.asyncio.client import connect
port, sessions, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
async def one(end, counts, i):
    async with connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None) as ws:
        message = "x" * 32
        while time.monotonic() < end:
            await ws.send(message)
            await ws.recv()
            counts[i] += 1
async def main():
    counts = [0] * sessions
    end = time.monotonic() + seconds
    await asyncio.gather(*(one(end, counts, i) for i in range(sessions)))
    print(sum(counts), flush=True)
asyncio.run(main())
"""


def start_evenkeel(folder, backend):
    return run_evenkeel(binary, folder,
                        '[[listener]]\nname = "public"\nlisten = "127.0.0.1:0"\n'
                        '[[route]]\npool = "ws"\n'
                        f'[pool.ws]\nbackends = [{{ address = "127.0.0.1:{backend}" }}]\n'
                        '[pool.ws.health]\ntype = "tcp"\n',
                        workers)


def start_nginx(folder, backend):
    port = free_port()
    proxy = run_nginx(folder, "nginx", f"master_process on;\nworker_processes {workers};", 4096,
                      f"""    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
    }}""")
    return proxy, port


def start_haproxy(folder, backend):
    port = free_port()
    conf = os.path.join(folder, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
    nbthread {workers}

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server b1 127.0.0.1:{backend}
""")
    proxy = subprocess.Popen(["haproxy", "-f", conf, "-db"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proxy, port


def run_client(port):
    out = subprocess.run([sys.executable, "-c", CLIENT, str(port), str(sessions), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise SystemExit(f"the client failed through port {port}: {out.stderr[-2000:]}")
    return int(out.stdout.strip())


def main():
    if not os.path.exists(binary):
        raise SystemExit("build first: cargo build --release")
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    started = []
    folder = tempfile.mkdtemp(prefix="evenkeel-ws-bench-")
    try:
        backend = int(echo.stdout.readline())
        starters = {"evenkeel": start_evenkeel, "nginx": start_nginx, "haproxy": start_haproxy}
        proxies = start_all(targets, starters, folder, backend, started)
        time.sleep(0.5)
        direct = run_client(backend)
        print(f"direct to the echo server: {direct / seconds:,.0f} messages/s")
        totals = {name: [0, 0.0] for name in targets}
        for r in range(rounds):
            for name in targets:
                proxy, port = proxies[name]
                pids = family(proxy.pid)
                before = cpu_seconds(pids)
                messages = run_client(port)
                cpu = cpu_seconds(pids) - before
                totals[name][0] += messages
                totals[name][1] += cpu
                print(f"round {r + 1} {name:9} {messages / seconds:9,.0f} messages/s "
                      f"{cpu * 1e6 / max(messages, 1):6.2f} µs CPU per message")
        print()
        best = min((totals[n][1] / max(totals[n][0], 1), n) for n in targets if n != "evenkeel") \
            if len(targets) > 1 else None
        print("| proxy | messages/s | proxy CPU µs per message | CPU per message vs the better peer |")
        print("| --- | ---: | ---: | ---: |")
        for name in targets:
            messages, cpu = totals[name]
            per = cpu / max(messages, 1)
            ratio = f"{per / best[0]:.2f}" if best else "-"
            print(f"| {name} | {messages / (seconds * rounds):,.0f} | {per * 1e6:.2f} | {ratio} |")
    finally:
        stop_all(started + [echo])
        shutil.rmtree(folder, ignore_errors=True)


main()
