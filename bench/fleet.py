#!/usr/bin/env python3
"""bench/fleet.py -- how fast an apply reaches a whole fleet, and what it costs etcd.

Starts one etcd (Debian's etcd-server, /usr/bin/etcd) on free loopback ports with a
temporary data folder, and N `evenkeel serve` nodes sharing one `[store] kind = "etcd"`
prefix, each with its own `[admin]` on 127.0.0.1:0, token file, `state_dir` and node
id, a listener on 127.0.0.1:0 and a pool of one backend that never gets a request (no
health check; the two lints that say so are allowed with a reason). Then:

  1. an idle window as long as the apply phase will be: etcd's request counter moves
     only with the nodes' heartbeats (each node renews its lease and rewrites its
     report every 2 s) and their watches -- the background;
  2. K applies, one every SPACING seconds, alternating the backend's weight 1 <-> 2,
     each a POST /config with the bearer token to node 0. For each, the time from
     sending the POST to the moment every node's GET /status says the new "version"
     (one polling thread per node, a kept-alive connection each, a GET every POLL ms),
     and etcd's requests from just before the POST to SETTLE seconds after the last
     node had it (time for each node's report of its new version to be written).

etcd's requests are `grpc_server_started_total` from its /metrics, summed over
grpc_method: every call evenkeel makes through the JSON gateway (/v3/kv/range, /v3/kv/txn,
/v3/lease/keepalive, /v3/watch, ...) is forwarded to etcd's own gRPC server and counted
there once, when it starts (a watch stream when it opens). Printed: the idle and apply
phases' totals (their difference is what applying adds to the background), each
apply's window (what one apply costs; the background that could have fallen in it is
printed beside it), and both by grpc_method.

The pollers are Python threads on the same cores as etcd and the nodes: they cost CPU
and bound the resolution (the time between two polls of a node is printed). A second,
polling-free figure comes from the nodes' own log timestamps: node 0's "config applied"
line to each follower's "fleet version put in force" line. Everything is on 127.0.0.1;
everything started is stopped by PID (the nodes first, so they end their leases, then
etcd) and the temporary folder removed, also on Ctrl-C or SIGTERM. The nodes' stderr
is searched for ERROR and ALARM lines, printed verbatim.

Usage: bench/fleet.py [--nodes N] [--applies K] [--spacing S] [--poll-ms MS]
                      [--settle S] [--timeout S] [--keep]
Defaults: 10 nodes, 20 applies, 2 s apart (so about 90 s in all). Needs /usr/bin/etcd (apt install etcd-server); builds target/release/evenkeel when
it is missing.
"""
import argparse
import datetime
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from procs import free_port

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "evenkeel")
PREFIX = "/evenkeel/bench"

# The part of the config every node shares (and every apply sends): one listener, pool
# `web` of one backend at WEIGHT. Nothing listens at the backend's address and nothing is
# sent there.
SHARED = """[[listener]]
name = "public"
listen = "127.0.0.1:0"

[[route]]
pool = "web"

[pool.web]
backends = [{{ address = "127.0.0.1:{backend}", weight = {weight} }}]

[lint.allow]
single-backend-pool = "bench/fleet.py: a stand-in backend that gets no request"
no-health-check = "bench/fleet.py: the backend is never asked anything"
"""

# A node's own file: its state_dir, the shared part, its [admin] and [store].
NODE = """state_dir = "{state}"
{shared}
[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"

[store]
kind = "etcd"
endpoints = ["http://127.0.0.1:{etcd}"]
prefix = "{prefix}"
node = "{node}"
"""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=10, help="evenkeel nodes (default 10)")
    p.add_argument("--applies", type=int, default=20, help="applies on node 0 (default 20)")
    p.add_argument("--spacing", type=float, default=2.0,
                   help="seconds from one apply's start to the next's (default 2.0); the "
                        "idle window lasts applies x spacing")
    p.add_argument("--poll-ms", type=float, default=5.0,
                   help="pause between two GET /status to one node (default 5 ms)")
    p.add_argument("--settle", type=float, default=0.3,
                   help="seconds after the last node has the version before etcd's counter "
                        "is read (default 0.3: the nodes look for a change to report every "
                        "100 ms)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="give up on one apply's propagation after this (default 30 s)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary folder (configs, logs) and print its path")
    return p.parse_args()


# ---------------------------------------------------------------------------------------
# Processes


class Node:
    """One `evenkeel serve`: its folder, process, admin address and token."""

    def __init__(self, index, folder):
        self.index = index
        self.name = f"n{index:02d}"
        self.folder = folder
        self.token = secrets.token_hex(16)
        self.process = None
        self.admin = None
        self.stderr_path = os.path.join(folder, "stderr.log")

    def start(self, etcd_port, backend_port):
        os.makedirs(os.path.join(self.folder, "state"))
        with open(os.path.join(self.folder, "admin.token"), "w") as f:
            f.write(self.token)
        config = os.path.join(self.folder, "evenkeel.toml")
        with open(config, "w") as f:
            f.write(NODE.format(state=os.path.join(self.folder, "state"),
                                shared=SHARED.format(backend=backend_port, weight=1),
                                etcd=etcd_port, prefix=PREFIX, node=self.name))
        with open(self.stderr_path, "w") as stderr:
            # A session of its own: Ctrl-C reaches this script only, which stops the
            # nodes (so they end their leases) before etcd.
            self.process = subprocess.Popen(
                [binary, "serve", "-c", config, "--workers", "1", "--no-access-log"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                text=True, start_new_session=True)

    def wait_admin(self, limit=30.0):
        """Reads stdout until `admin http://ADDR` (as tests/util.rs does), then drains
        the rest in a thread so the pipe never fills."""
        found = threading.Event()

        def read():
            for line in self.process.stdout:
                if line.startswith("admin http://"):
                    self.admin = line.strip()[len("admin http://"):]
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(limit) or self.admin is None:
            raise SystemExit(f"node {self.name} printed no admin address; exit "
                             f"{self.process.poll()}; stderr:\n{tail(self.stderr_path)}")

    def connection(self):
        host, port = self.admin.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=5)

    def request(self, method, path, body=None, connection=None):
        """(status, JSON answer); a connection of its own unless one is given."""
        conn = connection or self.connection()
        try:
            headers = {"Authorization": f"Bearer {self.token}"}
            if body is not None:
                headers["Content-Type"] = "application/toml"
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            return answer.status, json.loads(data) if data else None
        finally:
            if connection is None:
                conn.close()


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def start_etcd(folder, started):
    client, peer = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    log = open(os.path.join(folder, "etcd.log"), "w")
    process = subprocess.Popen(
        ["/usr/bin/etcd", "--name", "bench", "--data-dir", os.path.join(folder, "data"),
         "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"bench={peer_url}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    started.append(process)
    log.close()
    end = time.time() + 20
    while time.time() < end:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{client_url}/health", timeout=1) as answer:
                if b'"health":"true"' in answer.read():
                    return client
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"etcd did not become healthy:\n{tail(os.path.join(folder, 'etcd.log'))}")


def stop(processes):
    """SIGTERM to each (by PID), then SIGKILL to what is still running 10 s later."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------
# etcd's request counter

COUNTER = "grpc_server_started_total"
LINE = re.compile(r'^' + COUNTER + r'\{([^}]*)\}\s+(\S+)$')


def etcd_requests(port):
    """{grpc_method: calls started so far} from etcd's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    counts = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            method = re.search(r'grpc_method="([^"]*)"', m.group(1)).group(1)
            counts[method] = counts.get(method, 0) + float(m.group(2))
    return counts


def delta(after, before):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)
            if after.get(k, 0) - before.get(k, 0)}


# ---------------------------------------------------------------------------------------
# Propagation


class Pollers:
    """One thread per node asking GET /status every `pause` s while a target is set,
    noting when each node first says that version."""

    def __init__(self, nodes, pause):
        self.nodes = nodes
        self.pause = pause
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.target = None
        self.seen = {}          # node index -> time.monotonic() it first had the target
        self.polls = [0] * len(nodes)
        self.gaps = []          # seconds between two polls of one node for one target
        self.polling_time = 0.0  # seconds a target was set, summed
        self.errors = []
        self.stopped = False
        for node in nodes:
            threading.Thread(target=self.poll, args=(node,), daemon=True).start()

    def poll(self, node):
        conn = node.connection()
        previous = (None, 0.0)  # (target, time) of this node's last poll
        while True:
            with self.lock:
                while self.target is None and not self.stopped:
                    self.changed.wait()
                if self.stopped:
                    return
                target = self.target
                if node.index in self.seen:
                    self.changed.wait(0.05)
                    continue
            try:
                status, answer = node.request("GET", "/status", connection=conn)
                version = answer.get("version") if status == 200 else None
            except (OSError, http.client.HTTPException, ValueError) as e:
                conn.close()
                conn = node.connection()
                version = None
                with self.lock:
                    self.errors.append(f"{node.name}: {e!r}")
            now = time.monotonic()
            with self.lock:
                self.polls[node.index] += 1
                if previous[0] == target:
                    self.gaps.append(now - previous[1])
                previous = (target, now)
                if version is not None and version >= target and self.target == target \
                        and node.index not in self.seen:
                    self.seen[node.index] = now
                    self.changed.notify_all()
            time.sleep(self.pause)

    def begin(self, target):
        with self.lock:
            self.target = target
            self.seen = {}
            self.began = time.monotonic()
            self.changed.notify_all()

    def wait_all(self, limit):
        """{node index: time it had the target} once all have it, or at `limit`."""
        end = time.monotonic() + limit
        with self.lock:
            while len(self.seen) < len(self.nodes) and time.monotonic() < end:
                self.changed.wait(end - time.monotonic())
            seen = dict(self.seen)
            self.target = None
            self.polling_time += time.monotonic() - self.began
            return seen

    def close(self):
        with self.lock:
            self.stopped = True
            self.changed.notify_all()


def percentile(values, p):
    """The nearest-rank percentile of `values` (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(seconds):
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


# ---------------------------------------------------------------------------------------


def run(args, folder, started):
    backend_port = free_port()
    etcd_port = start_etcd(folder, started["etcd"])
    nodes = [Node(i, os.path.join(folder, f"n{i:02d}")) for i in range(args.nodes)]
    # Node 0 seeds the fleet's version 1 from its file; the others read it.
    nodes[0].start(etcd_port, backend_port)
    started["nodes"].append(nodes[0].process)
    nodes[0].wait_admin()
    for node in nodes[1:]:
        node.start(etcd_port, backend_port)
        started["nodes"].append(node.process)
    for node in nodes[1:]:
        node.wait_admin()
    end = time.time() + 30
    while True:
        versions = [node.request("GET", "/status")[1].get("version") for node in nodes]
        if all(v == versions[0] and v for v in versions):
            break
        if time.time() > end:
            raise SystemExit(f"the nodes never agreed on a version: {versions}")
        time.sleep(0.2)
    version = versions[0]
    print(f"{args.nodes} nodes on fleet version {version}; etcd {etcd_version()} on "
          f"127.0.0.1:{etcd_port}; {evenkeel_version()}", flush=True)

    # Let the start-up calls (seeding, first reports, leases) pass, then the background.
    time.sleep(3.0)
    phase = args.applies * args.spacing
    print(f"idle window: {phase:.0f} s (applies x spacing)...", flush=True)
    before, t_before = etcd_requests(etcd_port), time.monotonic()
    time.sleep(phase)
    idle = delta(etcd_requests(etcd_port), before)
    idle_time = time.monotonic() - t_before
    background = sum(idle.values()) / idle_time

    pollers = Pollers(nodes, args.poll_ms / 1000)
    admin0 = nodes[0].connection()
    results = []
    phase_before, phase_start = etcd_requests(etcd_port), time.monotonic()
    print(f"{'apply':>5} {'version':>7} {'POST answered':>13} {'all nodes':>10} "
          f"{'last node':>9} {'etcd requests':>13}", flush=True)
    for i in range(args.applies):
        slot = phase_start + i * args.spacing
        time.sleep(max(0.0, slot - time.monotonic()))
        weight = 2 if i % 2 == 0 else 1
        text = SHARED.format(backend=backend_port, weight=weight)
        target = version + 1
        counts_before, window_start = etcd_requests(etcd_port), time.monotonic()
        pollers.begin(target)
        sent = time.monotonic()
        status, answer = nodes[0].request("POST", "/config", body=text.encode(),
                                          connection=admin0)
        answered = time.monotonic() - sent
        if status != 200 or answer.get("result") != "applied":
            raise SystemExit(f"apply {i + 1} failed: {status} {answer}")
        version = answer["version"]
        if version != target:
            raise SystemExit(f"apply {i + 1} made version {version}, expected {target}")
        seen = pollers.wait_all(args.timeout)
        time.sleep(args.settle)
        counts = delta(etcd_requests(etcd_port), counts_before)
        window = time.monotonic() - window_start
        lags = {n: t - sent for n, t in seen.items()}
        missing = [nodes[n].name for n in range(args.nodes) if n not in seen]
        slowest = max(lags, key=lags.get) if lags else None
        total = max(lags.values()) if not missing else float("inf")
        results.append({"answered": answered, "all": total, "lags": lags,
                        "missing": missing, "requests": counts, "window": window})
        print(f"{i + 1:>5} {version:>7} {ms(answered):>13} "
              f"{ms(total) if not missing else 'TIMEOUT':>10} "
              f"{nodes[slowest].name if slowest is not None else '-':>9} "
              f"{sum(counts.values()):>13.0f}"
              + (f"  missing: {', '.join(missing)}" if missing else ""), flush=True)
    # The phase lasts as long as the idle window (unless an apply overran its slot).
    time.sleep(max(0.0, phase_start + phase - time.monotonic()))
    phase_time = time.monotonic() - phase_start
    phase_counts = delta(etcd_requests(etcd_port), phase_before)
    pollers.close()
    admin0.close()
    report(args, nodes, results, pollers, idle, idle_time, background, phase_counts,
           phase_time)
    report_logs(nodes, [version - args.applies + i + 1 for i in range(args.applies)])


def report(args, nodes, results, pollers, idle, idle_time, background, phase_counts,
           phase_time):
    n, k = args.nodes, args.applies
    done = [r["all"] for r in results if not r["missing"]]
    print()
    print(f"## {n} nodes, {k} applies (weight 1 <-> 2) on node 0, one every "
          f"{args.spacing:g} s")
    print()
    print("| propagation (POST sent -> every node's /status has the version) | p50 | p99 | max |")
    print("| --- | ---: | ---: | ---: |")
    if done:
        print(f"| all {n} nodes | {ms(percentile(done, 50))} | {ms(percentile(done, 99))} | "
              f"{ms(max(done))} |")
    answered = [r["answered"] for r in results]
    print(f"| POST /config answered by node 0 | {ms(percentile(answered, 50))} | "
          f"{ms(percentile(answered, 99))} | {ms(max(answered))} |")
    each = [lag for r in results for lag in r["lags"].values()]
    if each:
        print(f"| one node ({n} nodes x {k} applies) | {ms(percentile(each, 50))} | "
              f"{ms(percentile(each, 99))} | {ms(max(each))} |")
    if k < 100:
        print(f"\n(nearest rank: with {k} applies, p99 is the slowest apply)")
    timeouts = sum(1 for r in results if r["missing"])
    if timeouts:
        print(f"\n{timeouts} of {k} applies did not reach every node within "
              f"{args.timeout:g} s")
    verdict = "met" if done and not timeouts and percentile(done, 99) < 1.0 else "NOT met"
    print(f"\ntarget p99 < 1 s on loopback: {verdict}")
    # Which nodes were last, and how late each node usually was.
    last = {}
    for r in results:
        if r["lags"] and not r["missing"]:
            name = nodes[max(r["lags"], key=r["lags"].get)].name
            last[name] = last.get(name, 0) + 1
    per_node = {node.name: statistics.median([r["lags"][node.index] for r in results
                                              if node.index in r["lags"]] or [0])
                for node in nodes}
    print("last node to have it: " + ", ".join(
        f"{name} {count}x" for name, count in sorted(last.items(), key=lambda x: -x[1])))
    print("median per node: " + ", ".join(f"{name} {ms(v)}" for name, v in per_node.items()))

    raw = [sum(r["requests"].values()) for r in results]
    windows = statistics.mean(r["window"] for r in results)
    methods = sorted(set(idle) | set(phase_counts)
                     | {m for r in results for m in r["requests"]})
    print()
    print(f"etcd requests ({COUNTER}, summed over grpc_method):")
    print()
    print("| | requests | per second | per node per second |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| idle window, {idle_time:.1f} s (background: heartbeats, leases) | "
          f"{sum(idle.values()):.0f} | {background:.2f} | {background / n:.3f} |")
    rate = sum(phase_counts.values()) / phase_time
    print(f"| apply phase, {phase_time:.1f} s ({k} applies) | {sum(phase_counts.values()):.0f} | "
          f"{rate:.2f} | {rate / n:.3f} |")
    print()
    print(f"Per apply, from just before the POST to {args.settle:g} s after the last node "
          f"had it (mean window {windows:.2f} s):")
    print(f"  {statistics.median(raw):.0f} requests (median; min {min(raw):.0f}, max "
          f"{max(raw):.0f}), {statistics.median(raw) / n:.1f} per node; at the idle rate "
          f"{background * windows:.1f} of them could be heartbeats (the table below says "
          f"how many were: LeaseKeepAlive beyond one per node)")
    print(f"  apply phase less the idle window: "
          f"{(sum(phase_counts.values()) - sum(idle.values())) / k:.1f} per apply -- what "
          f"applying every {args.spacing:g} s adds to the background (a node's report "
          f"after an apply puts its next heartbeat 2 s later, so reports stand in for "
          f"heartbeats)")
    print()
    print("| grpc_method | idle window | apply phase | per apply (window, mean) |")
    print("| --- | ---: | ---: | ---: |")
    for method in methods:
        mean = statistics.mean(r["requests"].get(method, 0) for r in results)
        print(f"| {method} | {idle.get(method, 0):.0f} | {phase_counts.get(method, 0):.0f} | "
              f"{mean:.1f} |")
    polls = sum(pollers.polls)
    if pollers.gaps:
        print()
        print(f"Polling: {polls} GET /status in {pollers.polling_time:.1f} s of propagation "
              f"({polls / pollers.polling_time:.0f}/s from {n} Python threads, a pause of "
              f"{args.poll_ms:g} ms between two to one node); between two polls of one node: "
              f"median {ms(statistics.median(pollers.gaps))}, p99 "
              f"{ms(percentile(pollers.gaps, 99))} -- the figures above are late by up to "
              f"that. The pollers share the {os.cpu_count()} cores with etcd and the nodes, "
              f"so they also slow what they measure (the log figures below have no polling).")
    if pollers.errors:
        print(f"{len(pollers.errors)} polls failed, first: {pollers.errors[0]}")


# Node 0's line for its apply, and a follower's for a version it put in force.
LOGGED = re.compile(r"^(\S+)Z\s+INFO evenkeel::apply: (config applied origin=api|fleet version "
                    r"put in force) version=(\d+)")


def logged_times(node):
    """{version: seconds since the epoch} of the node's apply or adoption log lines."""
    times = {}
    try:
        with open(node.stderr_path, errors="replace") as f:
            for line in f:
                m = LOGGED.match(line)
                if m:
                    stamp = datetime.datetime.fromisoformat(m.group(1)).replace(
                        tzinfo=datetime.timezone.utc)
                    times[int(m.group(3))] = stamp.timestamp()
    except (OSError, ValueError):
        pass
    return times


def report_logs(nodes, versions):
    """The followers' lag from the nodes' own log timestamps (microseconds, one clock):
    node 0 logged the apply -> each other node logged the version put in force. No
    polling in this figure; it leaves out the POST itself (node 0's check and its
    compare-and-swap in etcd)."""
    if len(nodes) < 2:
        return
    times = [logged_times(node) for node in nodes]
    last, each = [], []
    for v in versions:
        if v not in times[0] or any(v not in t for t in times[1:]):
            continue
        lags = [t[v] - times[0][v] for t in times[1:]]
        each += lags
        last.append(max(lags))
    print()
    if not last:
        print("(no apply and adoption lines found in the nodes' logs)")
        return
    print(f"From the nodes' logs (no polling; node 0 logged the apply -> each follower logged "
          f"the version put in force; {len(last)} of {len(versions)} applies found):")
    print()
    print("| follower lag | p50 | p99 | max |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| last of {len(nodes) - 1} followers | {ms(percentile(last, 50))} | "
          f"{ms(percentile(last, 99))} | {ms(max(last))} |")
    print(f"| one follower ({len(each)}) | {ms(percentile(each, 50))} | "
          f"{ms(percentile(each, 99))} | {ms(max(each))} |")


def etcd_version():
    try:
        out = subprocess.run(["/usr/bin/etcd", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
        return out.split("\n")[0].split(":")[-1].strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def evenkeel_version():
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "evenkeel ?"


def log_findings(folder, nodes):
    """ERROR and ALARM lines of the nodes' stderr, verbatim (at most 20 per node)."""
    found = []
    for name in nodes:
        path = os.path.join(folder, name, "stderr.log")
        try:
            with open(path, errors="replace") as f:
                lines = [l.rstrip("\n") for l in f if "ERROR" in l or "ALARM" in l]
        except OSError:
            continue
        found += [f"{name}: {l}" for l in lines[:20]]
        if len(lines) > 20:
            found.append(f"{name}: ... and {len(lines) - 20} more")
    return found


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    args = parse_args()
    if args.nodes < 1 or args.applies < 1:
        raise SystemExit("--nodes and --applies must be at least 1")
    if not os.path.exists("/usr/bin/etcd"):
        raise SystemExit("needs /usr/bin/etcd (apt install etcd-server)")
    if not os.path.exists(binary):
        print("building target/release/evenkeel...", flush=True)
        subprocess.run(["cargo", "build", "--release"], cwd=root, check=True)
    # SIGTERM and SIGHUP end the run as Ctrl-C does: through the cleanup below (a signal
    # the script was started ignoring, as under nohup or in a background job, stays so).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, interrupted)
    folder = tempfile.mkdtemp(prefix="evenkeel-fleet-bench-")
    started = {"nodes": [], "etcd": []}
    try:
        run(args, folder, started)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what was started", file=sys.stderr)
        raise SystemExit(130)
    finally:
        # The nodes first, so each can end its lease while etcd still answers.
        stop(started["nodes"])
        stop(started["etcd"])
        names = [f"n{i:02d}" for i in range(args.nodes)]
        findings = log_findings(folder, names)
        print()
        if findings:
            print(f"ERROR/ALARM lines in the nodes' stderr ({len(findings)}):")
            for line in findings:
                print(f"  {line}")
        else:
            print("no ERROR or ALARM line in the nodes' stderr")
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
