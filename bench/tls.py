#!/usr/bin/env python3
"""bench/tls.py -- helpers of bench/tls.sh (not meant to be run on its own).

  tls.py handshakes PORT -- CMD...
      Runs CMD (a short wrk run) while watching the loopback interface, and prints one
      JSON line about the TLS handshakes to 127.0.0.1:PORT that it saw: how many
      ClientHellos offered a session to resume (a TLS 1.3 pre_shared_key, or a TLS 1.2
      session ticket / cached session ID), how many ServerHellos accepted one (that is
      a resumed handshake; every other one is a full handshake with a certificate
      signature and a fresh key exchange), HelloRetryRequests, and the negotiated
      version, cipher suite and key-exchange group. This is how the harness proves that
      the new-connection workload does full handshakes, whatever each server would do:
      it reads the wire, so it works the same for NGINX, HAProxy and evenkeel.
      Needs root (an AF_PACKET socket); without it prints {"error": ...} and still runs
      CMD. Only ClientHello and ServerHello are read (they are sent in the clear).

  tls.py report RUNS_CSV CHECKS_JSONL TARGETS
      Prints the Markdown tables of a run (see the header of bench/tls.sh).
"""
import collections
import csv
import json
import socket
import statistics
import struct
import subprocess
import sys
import time

# ---------------------------------------------------------------- handshake watch

HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
CIPHERS = {
    0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256", 0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305", 0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305",
}
GROUPS = {0x001D: "X25519", 0x0017: "P-256", 0x0018: "P-384", 0x0019: "P-521",
          0x001E: "X448", 0x11EC: "X25519MLKEM768"}
VERSIONS = {0x0304: "TLSv1.3", 0x0303: "TLSv1.2", 0x0302: "TLSv1.1", 0x0301: "TLSv1.0"}
EXT_PSK, EXT_TICKET, EXT_VERSIONS, EXT_KEY_SHARE = 41, 35, 43, 51


def extensions(body, off):
    """{type: data} of a hello's extension block starting at body[off]."""
    out = {}
    if off + 2 > len(body):
        return out
    end = off + 2 + struct.unpack_from("!H", body, off)[0]
    off += 2
    while off + 4 <= min(end, len(body)):
        t, n = struct.unpack_from("!HH", body, off)
        out[t] = body[off + 4: off + 4 + n]
        off += 4 + n
    return out


def parse_hello(payload):
    """(type, fields) of the first TLS record in a TCP payload if it is a Client- or
    ServerHello, else None. Raises IndexError/struct.error on a truncated one."""
    if len(payload) < 9 or payload[0] != 0x16:
        return None
    hs_type = payload[5]
    body = payload[9:]
    if hs_type == 1:  # ClientHello
        off = 2 + 32
        sid = body[off + 1: off + 1 + body[off]]
        off += 1 + body[off]
        off += 2 + struct.unpack_from("!H", body, off)[0]  # cipher suites
        off += 1 + body[off]                               # compression methods
        ext = extensions(body, off)
        return "client", {"sid": sid, "psk": EXT_PSK in ext, "ticket": len(ext.get(EXT_TICKET, b"")) > 0}
    if hs_type == 2:  # ServerHello (or HelloRetryRequest)
        legacy = struct.unpack_from("!H", body, 0)[0]
        random = body[2:34]
        off = 34
        sid = body[off + 1: off + 1 + body[off]]
        off += 1 + body[off]
        cipher = struct.unpack_from("!H", body, off)[0]
        off += 3
        ext = extensions(body, off)
        version = struct.unpack_from("!H", ext[EXT_VERSIONS])[0] if len(ext.get(EXT_VERSIONS, b"")) >= 2 else legacy
        group = struct.unpack_from("!H", ext[EXT_KEY_SHARE])[0] if len(ext.get(EXT_KEY_SHARE, b"")) >= 2 else None
        return "server", {"hrr": random == HRR_RANDOM, "sid": sid, "cipher": cipher, "version": version,
                          "group": group, "psk": EXT_PSK in ext}
    return None


def handshakes(port, cmd):
    res = {"client_hellos": 0, "offered_resumption": 0, "server_hellos": 0, "hrr": 0, "resumed": 0,
           "full": 0, "unparsed": 0, "versions": collections.Counter(), "ciphers": collections.Counter(),
           "groups": collections.Counter()}
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): no drops
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        s.bind(("lo", 0))
        s.settimeout(0.05)
    except (OSError, AttributeError) as e:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(json.dumps({"error": f"cannot watch the loopback interface: {e} (needs root)"}))
        return
    client_sid = {}
    # wrk's output is small (a pipe buffer holds it): read at the end for its request count
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stop_at = None
    buf = bytearray(70000)
    while True:
        if stop_at is None and proc.poll() is not None:
            stop_at = time.monotonic() + 0.3  # packets still queued in the socket
        if stop_at is not None and time.monotonic() > stop_at:
            break
        try:
            n, addr = s.recvfrom_into(buf)
        except socket.timeout:
            continue
        if addr[2] == 4:  # PACKET_OUTGOING: loopback shows every packet twice, keep one
            continue
        pkt = bytes(buf[:n])
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00" or pkt[23] != 6:  # IPv4 + TCP only
            continue
        ihl = (pkt[14] & 0x0F) * 4
        total = struct.unpack_from("!H", pkt, 16)[0]
        tcp = 14 + ihl
        sport, dport = struct.unpack_from("!HH", pkt, tcp)
        if port not in (sport, dport):
            continue
        payload = pkt[tcp + (pkt[tcp + 12] >> 4) * 4: 14 + total]
        if not payload or payload[0] != 0x16:
            continue
        try:
            hello = parse_hello(payload)
        except (IndexError, struct.error):
            res["unparsed"] += 1
            continue
        if hello is None:
            continue
        kind, h = hello
        if kind == "client" and dport == port:
            res["client_hellos"] += 1
            res["offered_resumption"] += h["psk"] or h["ticket"]
            client_sid[sport] = h["sid"]
        elif kind == "server" and sport == port:
            if h["hrr"]:
                res["hrr"] += 1
                continue
            res["server_hellos"] += 1
            if h["version"] == 0x0304:
                resumed = h["psk"]
            else:  # TLS 1.2: the server echoes the session ID the client offered
                resumed = bool(h["sid"]) and h["sid"] == client_sid.get(dport)
            res["resumed" if resumed else "full"] += 1
            res["versions"][VERSIONS.get(h["version"], hex(h["version"]))] += 1
            res["ciphers"][CIPHERS.get(h["cipher"], hex(h["cipher"]))] += 1
            if h["group"] is not None:
                res["groups"][GROUPS.get(h["group"], hex(h["group"]))] += 1
    out = proc.communicate()[0]
    for word in out.split():
        if word.startswith("requests="):  # the TLSBENCH line of bench/tls.sh's stats.lua
            res["responses"] = int(word.split("=")[1])
    try:  # PACKET_STATISTICS: (packets, drops) since the socket was opened
        _, drops = struct.unpack("II", s.getsockopt(263, 6, 8))
        res["drops"] = drops
    except OSError:
        pass
    res["cmd_rc"] = proc.returncode
    print(json.dumps(res))


# ---------------------------------------------------------------- report

PEERS = ("nginx", "haproxy")


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def ms(us):
    return "-" if us is None else f"{us / 1000:.2f} ms"


def report(csv_path, checks_path, targets):
    rows = list(csv.DictReader(open(csv_path)))
    blocks = []  # (cert, workload, workers) in the order they ran
    for r in rows:
        key = (r["cert"], r["workload"], r["workers"])
        if key not in blocks:
            blocks.append(key)
    peers = [t for t in PEERS if t in targets]
    others = [t for t in targets if t not in PEERS]

    def col(key, t, field):
        return [float(r[field]) for r in rows
                if (r["cert"], r["workload"], r["workers"]) == key and r["target"] == t and r[field] != ""]

    def per_round(key, field):
        out = collections.defaultdict(dict)
        for r in rows:
            if (r["cert"], r["workload"], r["workers"]) == key and r[field] != "":
                out[r["round"]][r["target"]] = float(r[field])
        return out

    def paired(key, t, against):
        """median over rounds of t's CPU per request ÷ the lowest of `against` in the same round"""
        ratios = []
        for by_t in per_round(key, "proxy_cpu_us").values():
            base = [by_t[p] for p in against if p in by_t]
            if t in by_t and base and min(base) > 0:
                ratios.append(by_t[t] / min(base))
        return (med(ratios), min(ratios), max(ratios), len(ratios)) if ratios else None

    def unit(workload):
        return "conn" if workload == "newconn" else "req"

    # ---- the summary: one line per cert kind × workload × workers
    head = ["cert", "workload", "workers"] + [f"{t} µs/{{u}}" for t in targets]
    if len(peers) == 2:
        head.append("haproxy ÷ nginx")
    head += [f"{t} ÷ best peer" for t in others]
    head += [f"{t} req/s" for t in targets] + [f"{t} p99" for t in targets]
    print("| " + " | ".join(h.replace("{u}", "req or conn") for h in head) + " |")
    print("|" + "---|" * 3 + "---:|" * (len(head) - 3))
    for key in blocks:
        cert, wl, w = key
        cells = [cert, "keep-alive" if wl == "keepalive" else "new conn", w]
        cells += [fmt(med(col(key, t, "proxy_cpu_us"))) for t in targets]
        if len(peers) == 2:
            p = paired(key, "haproxy", ["nginx"])
            cells.append(f"{p[0]:.2f}" if p else "-")
        for t in others:
            p = paired(key, t, peers)
            cells.append(f"**{p[0]:.2f}**" if p else "-")
        cells += [fmt(med(col(key, t, "rps")), 0) for t in targets]
        cells += [ms(med(col(key, t, "p99_us"))) for t in targets]
        print("| " + " | ".join(cells) + " |")
    print()
    print("µs/req (keep-alive) and µs/conn (new conn: one request per connection, full handshake) are the "
          "medians over rounds of the proxy's on-CPU time (all its processes and threads) per "
          "response. Ratios are medians over rounds of per-round ratios of that figure (same round, "
          "so the same machine load); \"best peer\" is the lower of NGINX's and HAProxy's in that round. "
          "Lower is better. req/s and p99 are wrk's (closed loop, shared 2 cores: they measure "
          "contention as much as the proxy); in the new-connection workload wrk's latency starts "
          "after the handshake, so p99 there leaves the handshake out.")

    # ---- warnings
    stolen = [float(r["steal_pct"]) for r in rows]
    noisy = sum(1 for x in stolen if x >= 5)
    errs = sum(int(r["errors"]) + int(r["non2xx"]) for r in rows)
    if noisy:
        print()
        print(f"**Warning: {noisy} of {len(rows)} runs had ≥5% CPU steal (max {max(stolen):.0f}%).**")
    if errs:
        print()
        print(f"**Warning: {errs} socket errors or non-2xx answers in total (see the per-run table).**")

    # ---- handshake checks
    checks = [json.loads(line) for line in open(checks_path) if line.strip()] if checks_path else []
    if checks:
        print()
        print("Handshake checks (short wrk runs watched on the loopback interface; the same client, options "
              "and library as the measured runs):")
        print()
        print("| cert | target | served certificate | new-conn workload: handshakes seen, resumed, "
              "offered resumption (responses) | negotiated (wrk's handshakes) | plain wrk + Connection: close would "
              "have resumed | HRR | s_client: peer signature, key exchange |")
        print("|---|---|---|---|---|---|---:|---|")
        for c in checks:
            nr, pl = c.get("noresume", {}), c.get("plain", {})
            if "error" in nr:
                hs = f"not checked: {nr['error']}"
            else:
                bad = "" if nr.get("resumed") == 0 and nr.get("offered_resumption") == 0 else " **RESUMED: new-conn figures invalid**"
                hs = (f"{nr.get('server_hellos')}, {nr.get('resumed')}, {nr.get('offered_resumption')} "
                      f"({nr.get('responses', '?')}){bad}")
                if nr.get("drops"):
                    hs += f" ({nr['drops']} packets dropped)"
            neg = " ".join("/".join(f"{k}" + (f" ×{v}" if len(nr.get(f, {})) > 1 else "")
                                    for k, v in nr.get(f, {}).items()) for f in ("versions", "ciphers", "groups"))
            if "error" in pl or not pl.get("server_hellos"):
                plain = "-"
            else:
                plain = f"{100 * pl['resumed'] / pl['server_hellos']:.0f}% of {pl['server_hellos']}"
            print(f"| {c['cert']} | {c['target']} | {c.get('served', '-')} | {hs} | {neg or '-'} | {plain} | "
                  f"{nr.get('hrr', '-')} | {c.get('s_client', '-')} |")

    # ---- details per target
    print()
    print("Details (medians over rounds, min–max in brackets):")
    print()
    print("| cert | workload | workers | target | µs per req/conn | ÷ best peer per round (min–max) | "
          "req/s | p50 | p99 | proxy CPU % of a core | utime+stime µs (cross-check) | backend µs/req | "
          "wrk CPU % | idle % | steal % | backend conns opened/run | errors+non2xx | rounds |")
    print("|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in blocks:
        for t in targets:
            cpu = col(key, t, "proxy_cpu_us")
            if not cpu:
                print(f"| {key[0]} | {key[1]} | {key[2]} | {t} | no successful run |" + " |" * 13)
                continue
            p = paired(key, t, peers) if peers else None
            ps = f"{p[0]:.3f} ({p[1]:.3f}–{p[2]:.3f})" if p else "-"
            e = int(sum(col(key, t, "errors")) + sum(col(key, t, "non2xx")))
            print(f"| {key[0]} | {key[1]} | {key[2]} | {t} | {fmt(med(cpu))} ({fmt(min(cpu))}–{fmt(max(cpu))}) | "
                  f"{ps} | {fmt(med(col(key, t, 'rps')), 0)} | {ms(med(col(key, t, 'p50_us')))} | "
                  f"{ms(med(col(key, t, 'p99_us')))} | {fmt(med(col(key, t, 'proxy_cpu_pct')))} | "
                  f"{fmt(med(col(key, t, 'proxy_ticks_us')))} | {fmt(med(col(key, t, 'backend_cpu_us')))} | "
                  f"{fmt(med(col(key, t, 'wrk_cpu_pct')))} | {fmt(med(col(key, t, 'idle_pct')))} | "
                  f"{fmt(med(col(key, t, 'steal_pct')))} | {fmt(med(col(key, t, 'backend_conns_opened')), 0)} | "
                  f"{e} | {len(cpu)} |")

    print()
    print("Per run (in execution order):")
    print()
    print("| cert | workers | workload | round | pos | target | req/s | p50 | p99 | proxy µs | utime+stime µs | "
          "backend µs | wrk CPU % | idle % | steal % | errors | non2xx |")
    print("|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cert']} | {r['workers']} | {r['workload']} | {r['round']} | {r['pos']} | {r['target']} | "
              f"{float(r['rps']):,.0f} | {ms(float(r['p50_us']))} | {ms(float(r['p99_us']))} | "
              f"{r['proxy_cpu_us']} | {r['proxy_ticks_us']} | {r['backend_cpu_us']} | {r['wrk_cpu_pct']} | "
              f"{r['idle_pct']} | {r['steal_pct']} | {r['errors']} | {r['non2xx']} |")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "handshakes" and "--" in sys.argv:
        i = sys.argv.index("--")
        handshakes(int(sys.argv[2]), sys.argv[i + 1:])
    elif len(sys.argv) == 5 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3], sys.argv[4].split(","))
    else:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
