#!/usr/bin/env bash
# bench/slow_clients.sh -- evenkeel and NGINX under slow-client attacks (issue 12).
#
# One backend (NGINX on 127.0.0.1) and two reverse proxies in front of it, started
# in the same run with the same limits:
#   evenkeel  serve --workers 1 --no-access-log; one pool, limits.max_connections = 100
#   nginx     worker_processes 1; upstream server max_conns=100, keepalive 64;
#             default buffering and timeouts
# For every attack (slowhttptest from Debian) and every proxy, in turn:
#   slow headers  slowhttptest -H               GET /        (Slowloris)
#   slow body     slowhttptest -B  -u .../upload POST /upload (R-U-Dead-Yet)
#   slow read     slowhttptest -X  -u .../big    GET /big, 1 MiB, small TCP window
# slowhttptest opens --connections connections (200 a second) and holds them for
# --attack-seconds; after --ramp seconds a normal client (evenkeel loadtest, open loop,
# 50 requests/s over 8 connections, GET / with a 13-byte answer) measures for
# attack - ramp - 10 seconds while the attack holds. A baseline (no attack) is measured
# per proxy first. Between runs the attack is stopped and the proxy left to settle.
#
# Criteria (issue 12), per attack:
#   1. at least 95% of the normal client's requests get a 2xx through evenkeel;
#   2. evenkeel's p99 for the normal client is at most 1.5x NGINX's under the same attack.
# The script exits 0 whether they pass or not (it is a measurement); a run that could
# not measure (setup failed, a tool missing) exits non-zero.
#
# Everything listens on and connects to 127.0.0.1 only. Every process the script
# starts is tracked by PID and stopped on exit (trap); nothing else is touched. The
# temp dir is removed at exit (--out DIR keeps a copy of the results and logs). The
# whole run has a hard time limit (watchdog). Missing tools (nginx, slowhttptest) are
# installed with apt-get (root), without starting the packages' own services.
#
# Usage: bench/slow_clients.sh [options]
#   --attack-seconds S  length of each attack, slowhttptest -l (default 40, min 25)
#   --connections N     slowhttptest -c, connections per attack (default 1000)
#   --ramp S            seconds between the attack's start and the client's (default 10)
#   --rate R            normal client requests/s (default 50)
#   --evenkeel PATH     evenkeel binary (default target/release/evenkeel)
#   --out DIR           copy summary.md, raw results, configs and logs into DIR
#   --keep              keep the temp dir
#   --max-time S        hard limit for the whole run (default: 2 x estimate + 120 s)
#   -h, --help
#
# Output: a markdown summary on stdout (a table per attack: target, the normal
# client's success %, p50, p99, p99 ratio evenkeel/NGINX, its statuses and errors,
# the connections slowhttptest held while the client measured, PASS/FAIL); progress
# and logs on stderr.

set -uo pipefail

HOST=127.0.0.1
BACKEND_PORT=19301 EVENKEEL_PORT=19311 NGINX_PORT=19312
SLOW_RATE=200        # slowhttptest -r: new connections per second
CLIENT_CONNS=8       # normal client connections
CLIENT_TIMEOUT=10s   # normal client: a request unanswered after this is an error
SETTLE_MAX=30        # seconds to wait, after a run, for the attack's connections to go

die() { echo "slow_clients: error: $*" >&2; exit 1; }
log() { echo "[slow_clients $(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- arguments
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ATTACK=40 CONNS=1000 RAMP=10 RATE=50 EVENKEEL="$ROOT/target/release/evenkeel"
OUTDIR="" KEEP=0 MAX_TIME_ARG=""
ORIG_CMDLINE="$0"; for a in "$@"; do ORIG_CMDLINE+=" $(printf '%q' "$a")"; done
need() { [[ $# -ge 2 ]] || die "option $1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --attack-seconds) need "$@"; ATTACK=$2; shift 2;;
    --connections) need "$@"; CONNS=$2; shift 2;;
    --ramp) need "$@"; RAMP=$2; shift 2;;
    --rate) need "$@"; RATE=$2; shift 2;;
    --evenkeel) need "$@"; EVENKEEL=$2; shift 2;;
    --out) need "$@"; OUTDIR=$2; shift 2;;
    --keep) KEEP=1; shift;;
    --max-time) need "$@"; MAX_TIME_ARG=$2; shift 2;;
    -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    *) die "unknown option: $1 (see --help)";;
  esac
done
isint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in ATTACK CONNS RAMP RATE; do isint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"; done
[[ -z $MAX_TIME_ARG ]] || isint "$MAX_TIME_ARG" || die "--max-time must be a number of seconds"
((CONNS >= 1 && CONNS <= 10000)) || die "--connections must be 1..10000"
((RATE >= 1 && RATE <= 10000)) || die "--rate must be 1..10000"
((RAMP >= 1)) || die "--ramp must be >= 1"
CLIENT=$((ATTACK - RAMP - 10))
((CLIENT >= 5)) || die "--attack-seconds must be at least --ramp + 15 (client runs attack - ramp - 10 s)"
((ATTACK <= 3600)) || die "--attack-seconds must be <= 3600"
[[ -x $EVENKEEL ]] || die "$EVENKEEL is missing or not executable: run cargo build --release (or pass --evenkeel PATH)"
EVENKEEL=$(cd "$(dirname "$EVENKEEL")" && pwd)/$(basename "$EVENKEEL")

# ---------------------------------------------------------------- tools
ensure_tools() {
  local pkgs=() before after p made_policy=0 rc
  command -v nginx        >/dev/null || pkgs+=(nginx)
  command -v slowhttptest >/dev/null || pkgs+=(slowhttptest)
  command -v curl         >/dev/null || pkgs+=(curl)
  command -v python3      >/dev/null || pkgs+=(python3)
  command -v ss           >/dev/null || pkgs+=(iproute2)
  command -v ps           >/dev/null || pkgs+=(procps)
  ((${#pkgs[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing ${pkgs[*]} and not root"
  log "installing: ${pkgs[*]}"
  # the packages' own services (nginx on port 80) must not start: a policy-rc.d that
  # denies starts, only if none exists; then stop any nginx the install started anyway
  before=" $(ps -C nginx -o pid= | tr -s ' \n' '  ') "
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2; }
  rc=$?
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  after=$(ps -C nginx -o pid=,ppid= | awk '$2 == 1 {print $1}')
  for p in $after; do
    [[ $before == *" $p "* ]] && continue
    log "stopping nginx PID $p started by the package install"
    kill -TERM "$p" 2>/dev/null
  done
  ((rc == 0)) || die "apt-get install failed"
  for p in nginx slowhttptest curl python3 ss; do command -v $p >/dev/null || die "$p still missing"; done
}
ensure_tools
NGINX_BIN=$(command -v nginx); SLOW_BIN=$(command -v slowhttptest)
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=$(command -v python3)

# open files: 1,000 attack connections + the client + upstream connections per process
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]] || ((hard >= 65536)); then want_nofile=65536; else want_nofile=$hard; fi
ulimit -n "$want_nofile" 2>/dev/null || log "warning: could not raise the open-files limit to $want_nofile"
NOFILE=$(ulimit -n)
((NOFILE >= CONNS + 500)) || die "open-files limit $NOFILE is too low for $CONNS connections (hard limit $hard)"

# ---------------------------------------------------------------- process tracking
declare -a STARTED_PIDS=()
declare -A PID_OF=() START_OF=()
TMP="" FG_PID=""

alive() { # running and not a zombie
  local s
  s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $s && ${s:0:1} != Z ]]
}
start_time() { local s; s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) && set -- $s && echo "${20}"; }
ours() { # PID is still the process we started (guards against PID reuse)
  [[ -n ${START_OF[$1]:-} ]] && alive "$1" && [[ $(start_time "$1") == "${START_OF[$1]}" ]]
}
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' '; }
wait_gone() { # SECONDS PID... -> returns when none is alive or time is up
  local deadline=$((SECONDS + $1)) p left; shift
  while ((SECONDS < deadline)); do
    left=0; for p in "$@"; do alive "$p" && { left=1; break; }; done
    ((left)) || return 0
    sleep 0.1
  done
  return 1
}
stop_pid() { # PID [grace seconds]: TERM, then KILL, only if it is still ours
  local pid=$1 grace=${2:-6} k
  local -A kid_start=()
  ours "$pid" || return 0
  for k in $(children "$pid"); do kid_start[$k]=$(start_time "$k"); done  # an NGINX master's workers
  kill -TERM "$pid" 2>/dev/null
  wait_gone "$grace" "$pid" || { log "SIGKILL $pid"; kill -KILL "$pid" 2>/dev/null; }
  for k in "${!kid_start[@]}"; do   # a worker left behind by its master (same process, not a reused PID)
    alive "$k" && [[ $(start_time "$k") == "${kid_start[$k]}" ]] && kill -KILL "$k" 2>/dev/null
  done
  wait "$pid" 2>/dev/null
  return 0
}
track() { # NAME PID
  STARTED_PIDS+=("$2"); PID_OF[$1]=$2; START_OF[$2]=$(start_time "$2")
}
start_bg() { # NAME LOGFILE CMD...: runs CMD in the background, records its PID
  local name=$1 logf=$2; shift 2
  "$@" >"$logf" 2>&1 &
  track "$name" $!
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  [[ -n $FG_PID ]] && stop_pid "$FG_PID" 2
  if ((${#STARTED_PIDS[@]})); then
    log "stopping the processes this run started (PIDs: ${STARTED_PIDS[*]})"
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${STARTED_PIDS[i]}" 6; done
  fi
  if [[ -n $TMP && -d $TMP ]]; then
    if ((KEEP)); then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
wait_ready() { # NAME PORT TIMEOUT_S -> until GET / answers 200
  local name=$1 port=$2 deadline=$((SECONDS + $3)) code
  while ((SECONDS < deadline)); do
    alive "${PID_OF[$name]}" || { log "$name exited during startup; its log:"; tail -n 30 "$TMP/logs/$name.log" >&2; return 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$HOST:$port/" 2>/dev/null)
    [[ $code == 200 ]] && return 0
    sleep 0.2
  done
  log "$name did not answer 200 on $HOST:$port within ${3}s"; return 1
}
established() { # PORT -> client connections established to that local port
  ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l
}
sampler() { # PORT PROC T0: once a second "t est_at_proxy closing_at_proxy proxy_to_backend"
  local port=$1 proc=$2 t0=$3 est other up
  while :; do
    read -r est other < <(ss -Htn "( sport = :$port )" 2>/dev/null |
      awk '$1 == "ESTAB" {e++} $1 != "ESTAB" && $1 != "LISTEN" {o++} END {print e+0, o+0}')
    up=$(ss -Htnp state established "( dport = :$BACKEND_PORT )" 2>/dev/null | grep -c "\"$proc\"")
    echo "$((SECONDS - t0)) $est $other $up"
    sleep 1
  done
}

# ---------------------------------------------------------------- setup
TMP=$(mktemp -d -t slow_clients.XXXXXX) || die "mktemp failed"
chmod 755 "$TMP"   # nginx workers run as an unprivileged user
mkdir -p "$TMP/logs" "$TMP/conf" "$TMP/runs" "$TMP/www"

for p in $BACKEND_PORT $EVENKEEL_PORT $NGINX_PORT; do
  port_in_use "$p" && die "port $HOST:$p is already in use"
done

ATTACKS=(headers body read)
TARGETS=(evenkeel nginx)
declare -A PORT_OF=([evenkeel]=$EVENKEEL_PORT [nginx]=$NGINX_PORT)
# per run: attack + settle (<= SETTLE_MAX, usually a few s) + slack; plus baselines and startup
EST=$(( ${#ATTACKS[@]} * ${#TARGETS[@]} * (ATTACK + 15) + ${#TARGETS[@]} * (CLIENT + 5) + 30 ))
MAX_TIME=${MAX_TIME_ARG:-$(( EST * 2 + 120 ))}
mkfifo "$TMP/watchdog.fifo" || die "mkfifo failed"
( exec 3<>"$TMP/watchdog.fifo"; read -r -t "$MAX_TIME" <&3
  echo "slow_clients: watchdog: run exceeded ${MAX_TIME}s, aborting" >&2; kill -TERM $$ ) &
track watchdog $!
log "attacks: ${ATTACKS[*]} x targets: ${TARGETS[*]} | $CONNS connections, ${ATTACK}s each, client ${CLIENT}s at ${RATE}/s after ${RAMP}s | open files $NOFILE | est. ${EST}s (hard limit ${MAX_TIME}s)"

# the backend: / (13 bytes), /big (1 MiB), /upload (POST, body up to 10 MiB discarded)
printf 'hello world!\n' >"$TMP/www/index.txt"
head -c 1048576 /dev/zero | tr '\0' x >"$TMP/www/big"
nginx_common() { # dir
  cat <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
EOF
}
nginx_temp_paths() { # dir
  cat <<EOF
    client_body_temp_path $1/tmp/client_body;
    proxy_temp_path       $1/tmp/proxy;
    fastcgi_temp_path     $1/tmp/fastcgi;
    uwsgi_temp_path       $1/tmp/uwsgi;
    scgi_temp_path        $1/tmp/scgi;
EOF
}
d="$TMP/conf/backend"; mkdir -p "$d/tmp"
cat >"$d/nginx.conf" <<EOF
# backend -- small body on /, 1 MiB on /big, POST bodies accepted on /upload
$(nginx_common "$d")
http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
$(nginx_temp_paths "$d")
    server {
        listen $HOST:$BACKEND_PORT backlog=4096;
        default_type text/plain;
        location = / { root $TMP/www; try_files /index.txt =404; }
        location = /big { root $TMP/www; }
        location /upload { client_max_body_size 10m; return 200 "ok\n"; }
    }
}
EOF
start_bg backend "$TMP/logs/backend.log" "$NGINX_BIN" -p "$d" -e "$d/error.log" -c "$d/nginx.conf"

# NGINX reverse proxy: defaults for buffering and timeouts
d="$TMP/conf/nginx"; mkdir -p "$d/tmp"
cat >"$d/nginx.conf" <<EOF
# NGINX reverse proxy -- one upstream, max_conns=100, keepalive 64, default buffering/timeouts
$(nginx_common "$d")
http {
    access_log off;
    server_tokens off;
    client_max_body_size 10m;
$(nginx_temp_paths "$d")
    upstream backend {
        server $HOST:$BACKEND_PORT max_conns=100;
        keepalive 64;
    }
    server {
        listen $HOST:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
start_bg nginx "$TMP/logs/nginx.log" "$NGINX_BIN" -p "$d" -e "$d/error.log" -c "$d/nginx.conf"

# evenkeel: one listener, one route, one pool; defaults otherwise (header_timeout 10s, ...)
d="$TMP/conf/evenkeel"; mkdir -p "$d"
cat >"$d/evenkeel.toml" <<EOF
state_dir = "$d/state"

[[listener]]
name = "bench"
listen = "$HOST:$EVENKEEL_PORT"

[[route]]
pool = "bench"

[pool.bench]
backends = [{ address = "$HOST:$BACKEND_PORT" }]
limits = { max_connections = 100 }
EOF
"$EVENKEEL" check -c "$d/evenkeel.toml" >"$TMP/logs/evenkeel-check.log" 2>&1 ||
  { cat "$TMP/logs/evenkeel-check.log" >&2; die "evenkeel check rejected the config"; }
start_bg evenkeel "$TMP/logs/evenkeel.log" "$EVENKEEL" serve -c "$d/evenkeel.toml" --workers 1 --no-access-log

wait_ready backend $BACKEND_PORT 20 || die "the backend did not start"
wait_ready nginx $NGINX_PORT 20 || die "the NGINX proxy did not start"
wait_ready evenkeel $EVENKEEL_PORT 30 || die "evenkeel did not start"
for t in evenkeel nginx; do
  n=$(curl -s --max-time 5 "http://$HOST:${PORT_OF[$t]}/big" | wc -c)
  [[ $n == 1048576 ]] || die "$t: GET /big returned $n bytes, expected 1048576"
  c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --data-binary @"$TMP/www/index.txt" "http://$HOST:${PORT_OF[$t]}/upload")
  [[ $c == 200 ]] || die "$t: POST /upload answered $c, expected 200"
done
log "backend :$BACKEND_PORT, evenkeel :$EVENKEEL_PORT (PID ${PID_OF[evenkeel]}), nginx :$NGINX_PORT (PID ${PID_OF[nginx]}) ready"

# ---------------------------------------------------------------- one measurement
# run ATTACK TARGET: ATTACK is none|headers|body|read. Writes $TMP/runs/ATTACK-TARGET.*
run() {
  local attack=$1 target=$2 port=${PORT_OF[$2]} base="$TMP/runs/$1-$2"
  local url="http://$HOST:$port" spid="" t0 ek_lines0 ek_lines1 conn_before conn_client
  if ! alive "${PID_OF[$target]}"; then
    log "$target is no longer running: $attack skipped"; echo "target_dead=1" >"$base.meta"; return
  fi
  ek_lines0=$(wc -l <"$TMP/logs/evenkeel.log")
  local ng_lines0; ng_lines0=$(cat "$TMP/conf/nginx/error.log" 2>/dev/null | wc -l)
  conn_before=$(established "$port")
  t0=$SECONDS
  sampler "$port" "$target" "$t0" >"$base.ss" 2>/dev/null &
  local sam=$!; track "sampler-$attack-$target" "$sam"
  case $attack in
    none) ;;
    headers) args=(-H -u "$url/" -i 10);;
    body)    args=(-B -u "$url/upload" -i 10);;
    read)    args=(-X -u "$url/big" -w 512 -y 1024 -n 5 -z 32 -k 1);;
  esac
  if [[ $attack != none ]]; then
    log "$attack -> $target: slowhttptest ${args[*]} -c $CONNS -r $SLOW_RATE -l $ATTACK"
    # -p: slowhttptest's own probe timeout; -o: its per-second CSV (closed/pending/connected)
    "$SLOW_BIN" "${args[@]}" -c "$CONNS" -r "$SLOW_RATE" -l "$ATTACK" -p 5 -g -o "$base.slow" \
      >"$base.slow.log" 2>&1 </dev/null &
    spid=$!; track "slow-$attack-$target" "$spid"
    sleep "$RAMP"
  fi
  conn_client=$(established "$port")
  log "$attack -> $target: normal client ${CLIENT}s at ${RATE}/s ($conn_client connections established at the proxy)"
  "$EVENKEEL" loadtest "$url/" -d "${CLIENT}s" --rate "$RATE" -c "$CLIENT_CONNS" --timeout "$CLIENT_TIMEOUT" \
    --format json >"$base.json" 2>"$base.client.err" </dev/null &
  FG_PID=$!; START_OF[$FG_PID]=$(start_time "$FG_PID")
  wait "$FG_PID"; echo "client_rc=$?" >"$base.meta"; FG_PID=""
  local conn_after; conn_after=$(established "$port")
  if [[ -n $spid ]]; then
    # let slowhttptest end by itself (it prints its summary), else stop it
    local deadline=$((t0 + ATTACK + 15))
    while alive "$spid" && ((SECONDS < deadline)); do sleep 0.5; done
    alive "$spid" && { log "slowhttptest did not end in time: stopping PID $spid"; stop_pid "$spid" 3; }
    wait "$spid" 2>/dev/null
  fi
  # settle: the attack's connections gone from the proxy (or SETTLE_MAX s), then 2 s
  local s0=$SECONDS
  while (($(established "$port") > 2 && SECONDS - s0 < SETTLE_MAX)); do sleep 0.5; done
  sleep 2
  stop_pid "$sam" 2
  ek_lines1=$(wc -l <"$TMP/logs/evenkeel.log")
  {
    echo "conn_before=$conn_before"; echo "conn_client_start=$conn_client"; echo "conn_client_end=$conn_after"
    echo "settle_s=$((SECONDS - s0))"; echo "conn_after_settle=$(established "$port")"
    echo "target_alive=$(alive "${PID_OF[$target]}" && echo 1 || echo 0)"
    echo "evenkeel_log_lines=$((ek_lines1 - ek_lines0))"
  } >>"$base.meta"
  [[ $target == evenkeel ]] && sed -n "$((ek_lines0 + 1)),${ek_lines1}p" "$TMP/logs/evenkeel.log" >"$base.evenkeel.log"
  [[ $target == nginx ]] && sed -n "$((ng_lines0 + 1)),\$p" "$TMP/conf/nginx/error.log" >"$base.nginx-error.log" 2>/dev/null
  log "$attack -> $target: done ($(tr '\n' ' ' <"$base.meta"))"
}

# baselines, then each attack on each target (order alternates between attacks)
for t in "${TARGETS[@]}"; do run none "$t"; done
i=0
for a in "${ATTACKS[@]}"; do
  if ((i % 2 == 0)); then order=(evenkeel nginx); else order=(nginx evenkeel); fi
  for t in "${order[@]}"; do run "$a" "$t"; done
  i=$((i + 1))
done

# ---------------------------------------------------------------- summary
cat >"$TMP/summary.py" <<'PYEOF'
import csv, json, os, re, sys
runs, attack_s, conns, client_s, rate, cmdline = sys.argv[1:7]
conns = int(conns)
names = {"none": "baseline (no attack)", "headers": "slow headers (slowhttptest -H)",
         "body": "slow body (slowhttptest -B, POST /upload)", "read": "slow read (slowhttptest -X, GET /big 1 MiB)"}

def meta(base):
    m = {}
    try:
        for line in open(base + ".meta"):
            k, _, v = line.strip().partition("=")
            m[k] = v
    except OSError:
        pass
    return m

def client(base):
    try:
        return json.load(open(base + ".json"))
    except (OSError, ValueError):
        return None

def slow_stats(base, ramp_end, client_end):
    """connections slowhttptest reported connected: peak, and min/max while the client ran"""
    try:
        rows = list(csv.DictReader(open(base + ".slow.csv")))
    except OSError:
        return None
    out = {"peak": 0, "during": []}
    for r in rows:
        r = {k.strip().lower(): v for k, v in r.items() if k}
        try:
            sec, con = int(float(r["seconds"])), int(float(r["connected"]))
        except (KeyError, ValueError):
            continue
        out["peak"] = max(out["peak"], con)
        if ramp_end <= sec <= client_end:
            out["during"].append(con)
        out["closed_end"] = r.get("closed")
    return out

def ss_stats(base, ramp_end, client_end):
    """from the 1 Hz sampler: (established at the proxy min-max, other states max, proxy->backend max)"""
    est, oth, up = [], [], []
    try:
        for line in open(base + ".ss"):
            f = line.split()
            if len(f) != 4 or not ramp_end <= int(f[0]) <= client_end:
                continue
            est.append(int(f[1])); oth.append(int(f[2])); up.append(int(f[3]))
    except (OSError, ValueError):
        return None
    if not est:
        return None
    return f"{min(est)}-{max(est)} / {max(oth)} / {max(up)}"

def slow_summary(base):
    try:
        txt = open(base + ".slow.log", errors="replace").read()
    except OSError:
        return ""
    txt = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", txt)
    m = re.findall(r"slow HTTP test status on (\d+)th second:\s*initializing:\s*(\d+)\s*pending:\s*(\d+)\s*connected:\s*(\d+)\s*error:\s*(\d+)\s*closed:\s*(\d+)\s*service available:\s*(\w+)", txt, re.S)
    if not m:
        return ""
    s = m[-1]
    return f"at {s[0]} s: connected {s[3]}, pending {s[2]}, closed {s[5]}, error {s[4]}, service available {s[6]}"

def fmt_ms(x):
    return "-" if x is None else (f"{x:.1f}" if x >= 10 else f"{x:.2f}")

ramp = int(os.environ.get("RAMP", "10"))
print(f"# evenkeel and NGINX under slow-client attacks\n")
print(f"{conns} attack connections per run (slowhttptest, 200 new/s, {attack_s} s), a normal client "
      f"(evenkeel loadtest, open loop, {rate} req/s, 8 connections, GET / 13 bytes, 10 s timeout) for "
      f"{client_s} s starting {ramp} s into the attack. One NGINX backend; evenkeel (1 worker, pool "
      f"max_connections 100) and NGINX (1 worker, upstream max_conns=100, keepalive 64) in front of it.\n")
print(f"Command: `{cmdline}`\n")
print("Criteria (issue 12): through evenkeel >= 95% of the normal client's requests succeed (2xx), and its p99 <= 1.5x NGINX's p99 under the same attack.\n")
print("Columns: slowhttptest's own count of connected attack connections (its -g CSV) while the client ran; "
      "then, sampled once a second with ss while the client ran, the TCP connections at the proxy's port "
      "(established; in a closing state such as FIN-WAIT, i.e. closed by the proxy but not yet by the attacker) "
      "and the proxy's established connections to the backend.\n")

verdicts = []
for attack in ["none", "headers", "body", "read"]:
    rows = {}
    for t in ["evenkeel", "nginx"]:
        base = os.path.join(runs, f"{attack}-{t}")
        rows[t] = (meta(base), client(base), slow_stats(base, ramp, ramp + int(client_s)), slow_summary(base),
                   ss_stats(base, ramp if attack != "none" else 0, (ramp if attack != "none" else 0) + int(client_s)))
    print(f"## {names[attack]}\n")
    print("| target | client ok % | p50 ms | p99 ms | p99 ratio evenkeel/NGINX | statuses / errors | slowhttptest connected while client ran (min-max; peak) | at the proxy while client ran: estab min-max / closing max / to backend max | verdict |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |")
    p99 = {}
    ok = {}
    for t in ["evenkeel", "nginx"]:
        m, c, s, _, _ = rows[t]
        if c is None or not c.get("requests"):
            p99[t] = None; ok[t] = None
            continue
        good = sum(n for k, n in c["statuses"].items() if k.startswith("2"))
        ok[t] = 100.0 * good / c["requests"]
        p99[t] = c["latency_ms"]["p99"]
    ratio = (p99["evenkeel"] / p99["nginx"]) if p99["evenkeel"] is not None and p99["nginx"] else None
    for t in ["evenkeel", "nginx"]:
        m, c, s, _, sst = rows[t]
        if c is None or not c.get("requests"):
            why = "target had died" if m.get("target_dead") else "no client result"
            print(f"| {t} | - | - | - | - | {why} | - | - | {'FAIL' if t == 'evenkeel' and attack != 'none' else '-'} |")
            if t == "evenkeel" and attack != "none":
                verdicts.append((attack, False, False))
            continue
        st = ", ".join(f"{k}: {n}" for k, n in c["statuses"].items())
        er = ", ".join(f"{k}: {n}" for k, n in c["errors"].items())
        se = st + ("; errors " + er if er else "") + f" (of {c['requests']})"
        if s is None:
            held = "-"
        elif s["during"]:
            held = f"{min(s['during'])}-{max(s['during'])}; {s['peak']}"
        else:
            held = f"?; {s['peak']}"
        if t == "evenkeel":
            c1 = ok[t] >= 95.0
            c2 = ratio is not None and ratio <= 1.5
            if attack == "none":
                verdict = ("ok" if c1 else "FAIL") + " (baseline, not a criterion)"
            else:
                verdict = ("PASS" if c1 and c2 else "FAIL") + f" (success {'ok' if c1 else 'FAIL'}, p99 {'ok' if c2 else 'FAIL'})"
                verdicts.append((attack, c1, c2))
            rt = "-" if ratio is None else f"{ratio:.2f}x"
        else:
            verdict, rt = "reference", ""
        if m.get("target_alive") == "0":
            verdict += " -- target DIED during the run"
        print(f"| {t} | {ok[t]:.1f} | {fmt_ms(c['latency_ms']['p50'])} | {fmt_ms(c['latency_ms']['p99'])} | {rt} | {se} | {held} | {sst or '-'} | {verdict} |")
    print()
    for t in ["evenkeel", "nginx"]:
        m, c, s, summ, _ = rows[t]
        bits = []
        if m.get("conn_client_start"):
            bits.append(f"connections established at the proxy's port at client start {m['conn_client_start']}, at its end {m.get('conn_client_end')}, after settling {m.get('conn_after_settle')} ({m.get('settle_s')} s)")
        if summ:
            bits.append(f"slowhttptest's last status {summ}")
        if t == "evenkeel" and m.get("evenkeel_log_lines") not in (None, "0"):
            bits.append(f"evenkeel wrote {m['evenkeel_log_lines']} stderr lines (in the --out logs)")
        if bits:
            print(f"- {t}: " + "; ".join(bits))
    print()

print("## Verdict\n")
allpass = True
for attack, c1, c2 in verdicts:
    p = c1 and c2
    allpass &= p
    print(f"- {names[attack]}: **{'PASS' if p else 'FAIL'}** (>= 95% success: {'yes' if c1 else 'no'}; p99 <= 1.5x NGINX: {'yes' if c2 else 'no'})")
print(f"\nOverall: **{'PASS' if allpass and verdicts else 'FAIL'}** ({sum(1 for a, x, y in verdicts if x and y)} of {len(verdicts)} attacks pass both criteria)")
PYEOF
RAMP=$RAMP "$PY" "$TMP/summary.py" "$TMP/runs" "$ATTACK" "$CONNS" "$CLIENT" "$RATE" "$ORIG_CMDLINE" >"$TMP/summary.md" ||
  die "could not build the summary (raw results in $TMP/runs; use --keep)"
if [[ -n $OUTDIR ]]; then
  mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
  cp "$TMP/summary.md" "$OUTDIR/"
  cp -r "$TMP/runs" "$TMP/logs" "$OUTDIR/"
  mkdir -p "$OUTDIR/conf"
  cp "$TMP/conf/backend/nginx.conf" "$OUTDIR/conf/backend-nginx.conf"
  cp "$TMP/conf/nginx/nginx.conf" "$OUTDIR/conf/proxy-nginx.conf"
  cp "$TMP/conf/evenkeel/evenkeel.toml" "$OUTDIR/conf/evenkeel.toml"
  log "results copied to $OUTDIR"
fi
cat "$TMP/summary.md"
exit 0
