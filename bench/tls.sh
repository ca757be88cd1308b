#!/usr/bin/env bash
# bench/tls.sh -- TLS termination benchmark: NGINX, HAProxy and evenkeel on loopback.
#
# Each proxy terminates TLS with the SAME certificate and forwards plain HTTP/1.1 to the
# same backends (NGINX instances answering GET / with a 13-byte body, as in
# ../shared/bench/anchors.sh). Two certificate kinds, made fresh at start with
# `openssl req -x509` (SAN DNS:localhost, IP:127.0.0.1):
#   ecdsa   ECDSA P-256          rsa   RSA 2048
# Two workloads, measured in alternating rounds (the targets' order rotates each round):
#   keepalive  wrk -c64 over TLS, keep-alive: the cost of the record layer (AES-GCM)
#              on top of proxying. Figure: proxy CPU µs per request; req/s, p99.
#   newconn    one request per connection, every connection a FULL handshake
#              (certificate signature + key exchange, no session resumption).
#              Figure: proxy CPU µs per connection (handshake + one proxied request).
#              On 2 cores wrk runs out of CPU before the proxy does, so the connection
#              rate says little; the CPU per connection is the figure to compare.
# ... at each worker count of --workers (NGINX worker_processes, HAProxy nbthread,
# evenkeel --workers). Every proxy runs with TLS 1.2 and 1.3 enabled and its default
# ciphers; clients negotiate TLS 1.3 by default (the handshake check shows what they
# did).
#
# Full handshakes, and why wrk needs help for them: wrk with `-H 'Connection: close'`
# opens a new connection per request, but it RESUMES the TLS session on it. Its
# ssl_close() is SSL_shutdown() + SSL_clear() on the same SSL object, and SSL_clear()
# keeps the session of a cleanly shut down connection, so the next SSL_connect() offers
# it (a TLS 1.3 PSK from the server's ticket). Measured here: ~99.8% of such
# handshakes are resumed. So for this workload wrk runs with a 10-line LD_PRELOAD shim
# (compiled at start with cc) that drops the kept session before a handshake starts
# (SSL_set_session(ssl, NULL) while SSL_in_before()). Everything else about the client
# (wrk, its OpenSSL, its options, its latency figures) stays the same in both
# workloads. Before measuring, per certificate kind and target, a short wrk run is
# watched on the loopback interface (bench/tls.py handshakes: ClientHello/ServerHello
# are in the clear) to count full vs resumed handshakes and record the negotiated
# version, cipher and group -- with the shim (must be 0 resumed) and without it (what
# plain wrk would have measured; this also shows the check can see resumptions).
# Needs root for the AF_PACKET socket; without root the check says "not checked".
# `openssl s_client` also confirms each target serves the generated certificate.
#
# What the servers do with sessions is left as in production: NGINX
# `ssl_session_cache shared:SSL:10m` (+ its default session tickets), HAProxy its
# defaults (session cache + tickets), evenkeel its defaults. In the newconn workload
# each server therefore still pays for issuing tickets that are never used, as it
# would for a browser's first visit.
#
# Everything listens on 127.0.0.1 only and every request goes to 127.0.0.1. Every
# process the script starts is tracked by PID (with its start time, against PID reuse)
# and stopped by PID: proxies when their block ends, everything at exit (trap).
# Certificates, configs, logs and raw data live in a temp dir removed at exit unless
# --keep.
#
# Usage: bench/tls.sh [options]
#   --rounds N        measured rounds per block; a round runs every workload on every
#                     target once (default 3)
#   --duration S      seconds per measured wrk run (default 8)
#   --warmup S        seconds of wrk warm-up per target and workload (default 2)
#   --conns C         wrk connections (default 64)   --threads T  wrk threads (default 1)
#   --workers LIST    comma list of worker counts (default 1,2)
#   --certs LIST      comma list of ecdsa, rsa (default ecdsa,rsa)
#   --workloads LIST  comma list of keepalive, newconn (default keepalive,newconn)
#   --targets LIST    comma list of nginx, haproxy, evenkeel (default all three)
#   --backends N      backend servers (default 3)   --backend-port P  first one (19201)
#   --nginx-port P (18441)  --haproxy-port P (18442)  --evenkeel-port P (18443)
#   --nginx-keepalive K  idle upstream connections kept per NGINX worker (default 256,
#                     as bench/compare.sh gives the harness)
#   --pause S         idle seconds before each measured run (default 1)
#   --no-check        skip the handshake check
#   --out FILE        report path (default bench/results/tls/<UTC date-time>.md; the raw
#                     runs go beside it as .csv and the checks as .checks.jsonl)
#   --keep            keep the temp dir
#   --max-time S      hard limit for the whole run (default: 2 x estimate + 120 s)
#   -h, --help
# Environment: EVENKEEL_BIN (default ./target/release/evenkeel), passed on to
#   bench/evenkeel-target.sh, which gets EVENKEEL_TLS_CERT / EVENKEEL_TLS_KEY.
#
# Output (stdout, markdown, also written to --out): one line per cert kind x workload
# x workers: each proxy's CPU µs per request (keep-alive) or per connection (new conn),
# the paired ratio evenkeel ÷ best peer (per round: evenkeel's CPU over the lower of
# NGINX's and HAProxy's in the same round; median over rounds; and haproxy ÷ nginx as
# a sanity line), req/s and p99 per target. Then the handshake check, details (min-max,
# utime+stime cross-check, backend CPU, machine idle/steal) and every run. Logs go to
# stderr.
#
# CPU per request is the on-CPU time of the proxy's whole process tree (all processes,
# all threads) from /proc/PID/task/TID/schedstat, as anchors.sh measures it (ns
# resolution); utime+stime from /proc/PID/stat (10 ms ticks) is kept as a cross-check.
# The machine has 2 cores shared with other work: compare only figures measured in the
# same run (same round), never absolute numbers across runs.
#
# Examples:
#   bench/tls.sh --targets nginx,haproxy --rounds 2 --duration 5
#   EVENKEEL_BIN=$PWD/target/release/evenkeel bench/tls.sh --rounds 5 --duration 8

set -uo pipefail

HOST=127.0.0.1
BODY='hello world!'   # + "\n" = 13 bytes, as the anchors harness's backends
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELPER="$ROOT/bench/tls.py"

die() { echo "tls.sh: error: $*" >&2; exit 1; }
log() { echo "[tls $(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- arguments
ROUNDS=3 DURATION=8 WARMUP=2 CONNS=64 THREADS=1 WORKERS_ARG=1,2 CERTS_ARG=ecdsa,rsa
WORKLOADS_ARG=keepalive,newconn TARGETS_ARG=nginx,haproxy,evenkeel NBACK=3 BPORT=19201
NGINX_PORT=18441 HAPROXY_PORT=18442 EVENKEEL_PORT=18443 NGINX_KEEPALIVE=256 PAUSE=1
CHECK=1 OUT="" KEEP=0 MAX_TIME_ARG=""
ORIG_CMDLINE="$0"; for a in "$@"; do ORIG_CMDLINE+=" $(printf '%q' "$a")"; done
need() { [[ $# -ge 2 ]] || die "option $1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) need "$@"; ROUNDS=$2; shift 2;;
    --duration) need "$@"; DURATION=$2; shift 2;;
    --warmup) need "$@"; WARMUP=$2; shift 2;;
    --conns) need "$@"; CONNS=$2; shift 2;;
    --threads) need "$@"; THREADS=$2; shift 2;;
    --workers) need "$@"; WORKERS_ARG=$2; shift 2;;
    --certs) need "$@"; CERTS_ARG=$2; shift 2;;
    --workloads) need "$@"; WORKLOADS_ARG=$2; shift 2;;
    --targets) need "$@"; TARGETS_ARG=$2; shift 2;;
    --backends) need "$@"; NBACK=$2; shift 2;;
    --backend-port) need "$@"; BPORT=$2; shift 2;;
    --nginx-port) need "$@"; NGINX_PORT=$2; shift 2;;
    --haproxy-port) need "$@"; HAPROXY_PORT=$2; shift 2;;
    --evenkeel-port) need "$@"; EVENKEEL_PORT=$2; shift 2;;
    --nginx-keepalive) need "$@"; NGINX_KEEPALIVE=$2; shift 2;;
    --pause) need "$@"; PAUSE=$2; shift 2;;
    --no-check) CHECK=0; shift;;
    --out) need "$@"; OUT=$2; shift 2;;
    --keep) KEEP=1; shift;;
    --max-time) need "$@"; MAX_TIME_ARG=$2; shift 2;;
    -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    *) die "unknown option: $1 (see --help)";;
  esac
done

isint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in ROUNDS DURATION WARMUP CONNS THREADS NBACK BPORT NGINX_PORT HAPROXY_PORT EVENKEEL_PORT \
         NGINX_KEEPALIVE PAUSE; do
  isint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
[[ -z $MAX_TIME_ARG ]] || isint "$MAX_TIME_ARG" || die "--max-time must be a number of seconds"
((ROUNDS >= 1 && ROUNDS <= 100)) || die "--rounds must be 1..100"
((DURATION >= 1 && DURATION <= 600)) || die "--duration must be 1..600"
((WARMUP <= 120)) || die "--warmup must be <= 120"
((CONNS >= 1 && THREADS >= 1 && CONNS >= THREADS)) || die "need conns >= threads >= 1"
((NBACK >= 1 && NBACK <= 16)) || die "--backends must be 1..16"
IFS=, read -r -a WORKERS_LIST <<<"$WORKERS_ARG"
IFS=, read -r -a CERTS <<<"$CERTS_ARG"
IFS=, read -r -a WORKLOADS <<<"$WORKLOADS_ARG"
IFS=, read -r -a TARGETS <<<"$TARGETS_ARG"
for w in "${WORKERS_LIST[@]}"; do isint "$w" && ((w >= 1 && w <= 64)) || die "bad worker count '$w'"; done
for c in "${CERTS[@]}"; do [[ $c == ecdsa || $c == rsa ]] || die "unknown cert kind '$c' (ecdsa, rsa)"; done
for l in "${WORKLOADS[@]}"; do [[ $l == keepalive || $l == newconn ]] || die "unknown workload '$l' (keepalive, newconn)"; done
for t in "${TARGETS[@]}"; do
  case $t in nginx|haproxy|evenkeel) ;; *) die "unknown target '$t' (nginx, haproxy, evenkeel)";; esac
done
((${#TARGETS[@]} >= 1 && ${#CERTS[@]} >= 1 && ${#WORKLOADS[@]} >= 1 && ${#WORKERS_LIST[@]} >= 1)) ||
  die "empty --targets, --certs, --workloads or --workers"
want() { local t; for t in "${TARGETS[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
wants_workload() { local l; for l in "${WORKLOADS[@]}"; do [[ $l == "$1" ]] && return 0; done; return 1; }

# ---------------------------------------------------------------- tools
# No installs here: bench/compare.sh and anchors.sh already install nginx, haproxy and
# wrk from Debian; this script only says what is missing.
for tool in nginx haproxy wrk openssl curl python3 cc; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install nginx haproxy wrk openssl curl python3 gcc)"
done
NGINX_BIN=$(command -v nginx); HAPROXY_BIN=$(command -v haproxy); WRK_BIN=$(command -v wrk)
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=$(command -v python3)  # real binary, not a shim
EVENKEEL_BIN=${EVENKEEL_BIN:-$ROOT/target/release/evenkeel}
export EVENKEEL_BIN
if want evenkeel; then
  [[ -x $EVENKEEL_BIN ]] || die "$EVENKEEL_BIN is missing: build evenkeel or set EVENKEEL_BIN (or leave evenkeel out of --targets)"
fi
[[ -f $HELPER ]] || die "$HELPER is missing"

# ---------------------------------------------------------------- process tracking
# (as in anchors.sh: by PID and start time, descendants included; never by name)
declare -a STARTED_PIDS=()
declare -A PID_OF=() SEEN_START=()
TMP="" FG_PID=""

tree_pids() { # PID -> PID and all its live descendants
  ps -eo pid=,ppid= | awk -v root="$1" '
    { par[$1] = $2 }
    END { if (!(root in par)) exit; inn[root] = 1; ch = 1
          while (ch) { ch = 0; for (c in par) if (!(c in inn) && (par[c] in inn)) { inn[c] = 1; ch = 1 } }
          for (k in inn) print k }'
}
alive() { local s; s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1; [[ -n $s && ${s:0:1} != Z ]]; }
start_time() { local s; s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) && set -- $s && echo "${20}"; }
ours() { # PID is still the very process we saw (not a reused PID)
  alive "$1" && [[ -n ${SEEN_START[$1]:-} && $(start_time "$1") == "${SEEN_START[$1]}" ]]
}
remember() { local p; for p in $(tree_pids "$1"); do [[ -n ${SEEN_START[$p]:-} ]] || SEEN_START[$p]=$(start_time "$p"); done; }
remember_tree() { local root; for root in "${STARTED_PIDS[@]}"; do remember "$root"; done; }

cpu_ns_tree() { # on-CPU nanoseconds of PID and its descendants, all threads (schedstat)
  local p f ns rest total=0
  for p in $(tree_pids "$1"); do
    for f in /proc/$p/task/*/schedstat; do
      read -r ns rest <"$f" 2>/dev/null && total=$((total + ns))
    done
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
ticks_tree() { # utime+stime ticks of PID and its descendants (a process's counts include all its threads)
  local p s total=0
  for p in $(tree_pids "$1"); do
    s=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $s; total=$((total + ${12} + ${13}))   # fields 14, 15 of stat (after "pid (comm)")
  done
  echo "$total"
}

wait_gone() { # SECONDS PID... -> returns when none is alive or time is up
  local deadline=$((SECONDS + $1)) p left; shift
  while ((SECONDS < deadline)); do
    left=0; for p in "$@"; do alive "$p" && { left=1; break; }; done
    ((left)) || return 0
    sleep 0.1
  done
}

stop_pids() { # ROOTS... : TERM the roots (an NGINX master stops its own workers; killing
  # workers first would only make it respawn them), then whatever descendant of theirs
  # (seen before the TERM) is still the same process, then KILL the stubborn
  local p desc=()
  for p in "$@"; do remember "$p"; desc+=($(tree_pids "$p")); done
  for p in "$@"; do ours "$p" && kill -TERM "$p" 2>/dev/null; done
  wait_gone 6 "$@"
  for p in "${desc[@]}"; do ours "$p" && kill -TERM "$p" 2>/dev/null; done
  wait_gone 4 "${desc[@]}"
  for p in "${desc[@]}"; do ours "$p" && { log "SIGKILL $p"; kill -KILL "$p" 2>/dev/null; }; done
  for p in "$@"; do wait "$p" 2>/dev/null; done
}

stop_target() { # NAME: a proxy of the block that just ended
  local pid=${PID_OF[$1]:-} p keep=()
  [[ -n $pid ]] || return 0
  stop_pids "$pid"
  for p in "${STARTED_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
  unset "PID_OF[$1]"
}

cleanup() {
  local rc=$? p all=()
  trap - EXIT INT TERM
  [[ -n $FG_PID ]] && { remember "$FG_PID"; STARTED_PIDS+=("$FG_PID"); }   # an interrupted wrk
  remember_tree
  for p in "${!SEEN_START[@]}"; do ours "$p" && all+=("$p"); done
  if ((${#all[@]})); then
    log "stopping ${#all[@]} processes started by this run (PIDs: ${all[*]})"
    stop_pids "${STARTED_PIDS[@]}"
    for p in "${all[@]}"; do ours "$p" && { log "SIGKILL $p"; kill -KILL "$p" 2>/dev/null; }; done
  fi
  if [[ -n $TMP && -d $TMP ]]; then
    if ((KEEP)); then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_bg() { # NAME LOGFILE CMD... ; runs CMD in the background, records its PID
  local name=$1 logf=$2; shift 2
  "$@" >"$logf" 2>&1 &
  local pid=$!
  SEEN_START[$pid]=$(start_time "$pid")
  STARTED_PIDS+=("$pid"); PID_OF[$name]=$pid
}

fg_run() { # OUTFILE CMD... : CMD >OUTFILE 2>&1 in the foreground, interruptible, stopped by cleanup
  local out=$1; shift
  "$@" >"$out" 2>&1 &
  FG_PID=$!
  SEEN_START[$FG_PID]=$(start_time "$FG_PID")
  local rc=0
  wait "$FG_PID" || rc=$?
  FG_PID=""
  return $rc
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_ready() { # NAME URL TIMEOUT_S [CURL OPTS...] -> waits until GET answers 200
  local name=$1 url=$2 deadline=$((SECONDS + $3)) code; shift 3
  while ((SECONDS < deadline)); do
    if [[ -n ${PID_OF[$name]:-} ]] && ! alive "${PID_OF[$name]}"; then
      log "$name exited during startup; its log:"; tail -n 30 "$TMP/logs/$name.log" >&2; return 1
    fi
    remember_tree
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null)
    [[ $code == 200 ]] && return 0
    sleep 0.2
  done
  log "$name did not answer 200 on $url within $3 s"; return 1
}

# ---------------------------------------------------------------- setup
TMP=$(mktemp -d -t tls-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$TMP"            # nginx workers run as an unprivileged user
mkdir -p "$TMP/logs" "$TMP/conf" "$TMP/certs"

declare -A PORT_OF=([nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [evenkeel]=$EVENKEEL_PORT)
BACKENDS=""
for ((i = 1; i <= NBACK; i++)); do BACKENDS+="${BACKENDS:+,}$HOST:$((BPORT + i - 1))"; done
ports=()
for ((i = 0; i < NBACK; i++)); do ports+=($((BPORT + i))); done
for t in "${TARGETS[@]}"; do ports+=("${PORT_OF[$t]}"); done
[[ $(printf '%s\n' "${ports[@]}" | sort | uniq -d) == "" ]] || die "port clash among: ${ports[*]}"
for p in "${ports[@]}"; do
  ((p >= 1024 && p <= 65535)) || die "port $p out of range 1024..65535"
  port_in_use "$p" && die "port $HOST:$p is already in use"   # never touch what listens already
done

# Certificates: one per kind, used by all three proxies. Self-signed, as the SAN is all
# that matters here (wrk does not verify; curl checks it against this very cert).
# openssl 3 writes the key as PKCS#8 ("BEGIN PRIVATE KEY"), which every proxy reads.
for c in "${CERTS[@]}"; do
  case $c in
    ecdsa) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1);;
    rsa)   newkey=(-newkey rsa:2048);;
  esac
  openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost \
    -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
    -keyout "$TMP/certs/$c.key" -out "$TMP/certs/$c.pem" >"$TMP/logs/openssl-$c.log" 2>&1 ||
    die "openssl req failed for $c: $(tail -n 3 "$TMP/logs/openssl-$c.log")"
  cat "$TMP/certs/$c.pem" "$TMP/certs/$c.key" >"$TMP/certs/$c.haproxy.pem"   # HAProxy: cert + key in one file
  chmod 644 "$TMP/certs/"*
done
fingerprint() { openssl x509 -noout -fingerprint -sha256 2>/dev/null | sed 's/.*=//'; }

# The LD_PRELOAD shim for the newconn workload (see the header): before wrk's SSL object
# starts a handshake, forget the session SSL_clear() kept, so the handshake is full.
# Declared by hand, so no OpenSSL headers are needed; the symbols bind to wrk's libssl.
cat >"$TMP/noresume.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_in_before(const SSL *s);
int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_connect(SSL *s) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    if (SSL_in_before(s)) SSL_set_session(s, 0);   /* only before a handshake starts */
    return real(s);
}
EOF
cc -shared -fPIC -O2 -o "$TMP/noresume.so" "$TMP/noresume.c" -ldl 2>"$TMP/logs/cc.log" ||
  die "cannot compile the no-resumption shim: $(tail -n 3 "$TMP/logs/cc.log")"

# global watchdog: the whole run is bounded
ntargets=${#TARGETS[@]}
nblocks=$(( ${#CERTS[@]} * ${#WORKERS_LIST[@]} ))
EST=$(( nblocks * (10 + ntargets * ${#WORKLOADS[@]} * (WARMUP + 1 + ROUNDS * (DURATION + PAUSE + 2))) \
        + CHECK * ${#CERTS[@]} * ntargets * 8 + 30 ))
MAX_TIME=${MAX_TIME_ARG:-$(( EST * 2 + 120 ))}
mkfifo "$TMP/watchdog.fifo" || die "mkfifo failed"
( exec 3<>"$TMP/watchdog.fifo"; read -r -t "$MAX_TIME" <&3
  echo "tls.sh: watchdog: run exceeded ${MAX_TIME}s, aborting" >&2; kill -TERM $$ ) &
SEEN_START[$!]=$(start_time $!); STARTED_PIDS+=($!)
log "targets: ${TARGETS[*]} | certs: ${CERTS[*]} | workloads: ${WORKLOADS[*]} | workers: ${WORKERS_LIST[*]} | rounds=$ROUNDS duration=${DURATION}s conns=$CONNS | est. ${EST}s (hard limit ${MAX_TIME}s)"

# ---------------------------------------------------------------- config writers
nginx_common_http() { # dir -- as anchors.sh
  cat <<EOF
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $1/tmp/client_body;
    proxy_temp_path       $1/tmp/proxy;
    fastcgi_temp_path     $1/tmp/fastcgi;
    uwsgi_temp_path       $1/tmp/uwsgi;
    scgi_temp_path        $1/tmp/scgi;
EOF
}

write_backend_conf() { # dir name port -- the anchors.sh backend (plain HTTP, 13-byte body)
  local dir=$1 name=$2 port=$3
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
# backend $name -- fixed body, keep-alive
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_common_http "$dir")
    server {
        listen $HOST:$port backlog=4096;
        location / {
            default_type text/plain;
            add_header X-Backend $name always;
            return 200 "$BODY\n";
        }
        # "accepts" tells how many connections the proxies opened to this backend
        location = /__anchors_status { stub_status; }
    }
}
EOF
}

write_nginx_proxy_conf() { # dir port workers cert key
  local dir=$1 port=$2 workers=$3 cert=$4 key=$5 b servers=""
  mkdir -p "$dir/tmp"
  IFS=, read -r -a _bl <<<"$BACKENDS"
  for b in "${_bl[@]}"; do servers+="        server $b;"$'\n'; done
  # TLS as a production site would have it: TLS 1.2 + 1.3, default ciphers (NGINX's
  # default "HIGH:!aNULL:!MD5"; TLS 1.3 suites are OpenSSL's), a shared session cache
  # (one for all workers) and session tickets on (the default). `http2` on the listen
  # line so that NGINX advertises h2 by ALPN like HAProxy below; wrk offers no ALPN, so
  # every measured connection is HTTP/1.1.
  cat >"$dir/nginx.conf" <<EOF
# NGINX TLS-terminating reverse proxy -- round robin, keepalive to upstreams
daemon off;
master_process on;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_common_http "$dir")
    upstream backends {
$servers        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen $HOST:$port ssl http2 backlog=4096;
        ssl_certificate     $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 10m;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

write_haproxy_conf() { # file port threads crt(cert+key)
  local f=$1 port=$2 threads=$3 crt=$4 b i=0 servers=""
  IFS=, read -r -a _bl <<<"$BACKENDS"
  for b in "${_bl[@]}"; do i=$((i+1)); servers+="    server b$i $b"$'\n'; done
  # TLS: TLS 1.2 + 1.3 (ssl-min-ver), HAProxy's default ciphers, its default session
  # cache (tune.ssl.cachesize 20000, shared by the threads) and tickets, ALPN h2 and
  # http/1.1. default-dh-param only silences the startup warning about DHE (not used:
  # clients negotiate TLS 1.3 with ECDHE).
  cat >"$f" <<EOF
# HAProxy TLS-terminating reverse proxy -- mode http, roundrobin, http-reuse always
global
    nbthread $threads
    maxconn 8192
    tune.ssl.default-dh-param 2048
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    maxconn 8192
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive

frontend fe
    bind $HOST:$port ssl crt $crt alpn h2,http/1.1
    default_backend be

backend be
    balance roundrobin
    http-reuse always
$servers
EOF
}

start_target() { # NAME CERT_KIND WORKERS
  local t=$1 c=$2 w=$3 d="$TMP/conf/$1-$2-w$3"
  mkdir -p "$d"
  case $t in
    nginx)
      write_nginx_proxy_conf "$d" "$NGINX_PORT" "$w" "$TMP/certs/$c.pem" "$TMP/certs/$c.key"
      start_bg nginx "$TMP/logs/nginx.log" "$NGINX_BIN" -p "$d" -e "$d/error.log" -c "$d/nginx.conf";;
    haproxy)
      write_haproxy_conf "$d/haproxy.cfg" "$HAPROXY_PORT" "$w" "$TMP/certs/$c.haproxy.pem"
      "$HAPROXY_BIN" -c -q -f "$d/haproxy.cfg" >&2 || die "haproxy config check failed"
      start_bg haproxy "$TMP/logs/haproxy.log" "$HAPROXY_BIN" -db -f "$d/haproxy.cfg";;
    evenkeel)
      # the same target script as bench/compare.sh (access log off), with a TLS listener
      start_bg evenkeel "$TMP/logs/evenkeel.log" env TMPDIR="$d" \
        EVENKEEL_TLS_CERT="$TMP/certs/$c.pem" EVENKEEL_TLS_KEY="$TMP/certs/$c.key" \
        "$ROOT/bench/evenkeel-target.sh" "$EVENKEEL_PORT" "$BACKENDS" "$w";;
  esac
}

# ---------------------------------------------------------------- backends
for ((i = 1; i <= NBACK; i++)); do
  d="$TMP/conf/b$i"; mkdir -p "$d"
  write_backend_conf "$d" "b$i" $((BPORT + i - 1))
  start_bg "b$i" "$TMP/logs/b$i.log" "$NGINX_BIN" -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
done
for ((i = 1; i <= NBACK; i++)); do wait_ready "b$i" "http://$HOST:$((BPORT + i - 1))/" 20 || die "backend b$i failed"; done

# ---------------------------------------------------------------- measuring
cat >"$TMP/stats.lua" <<'EOF'
-- prints one machine-readable line at the end of a wrk run (no per-request Lua)
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "TLSBENCH requests=%d duration_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d " ..
    "p50_us=%d p99_us=%d max_us=%d cpu_s=%.6f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, os.clock()))
end
EOF

wrk_cmd() { # PORT SECONDS WORKLOAD CONNS [plain] -> prints nothing; sets WRK=(...)
  # newconn: one request per connection (Connection: close; every proxy closes after
  # answering it) and, unless "plain", the shim so that every handshake is full
  WRK=(timeout -k 5 $(($2 + 30)))
  [[ $3 == newconn && ${5:-} != plain ]] && WRK+=(env "LD_PRELOAD=$TMP/noresume.so")
  WRK+=("$WRK_BIN" -t"$THREADS" -c"$4" -d"$2s" --latency -s "$TMP/stats.lua")
  [[ $3 == newconn ]] && WRK+=(-H 'Connection: close')
  WRK+=("https://$HOST:$1/")
}

backends_accepts() { # total accepted connections over all backends (each probe counts itself)
  local i a s=0
  for ((i = 1; i <= NBACK; i++)); do
    a=$(curl -s --max-time 2 "http://$HOST:$((BPORT + i - 1))/__anchors_status" | awk 'NR==3{print $1}')
    isint "${a:-x}" || { echo -1; return; }
    s=$((s + a))
  done
  echo $s
}
backends_cpu() { local i s=0; for ((i = 1; i <= NBACK; i++)); do s=$((s + $(cpu_ns_tree "${PID_OF[b$i]}"))); done; echo $s; }
read_procstat() { awk '/^cpu /{t=$2+$3+$4+$5+$6+$7+$8+$9; print t, $5+$6, $9}' /proc/stat; }

CSV="$TMP/runs.csv"
echo "cert,workers,workload,round,pos,target,rps,requests,duration_s,p50_us,p99_us,max_us,errors,non2xx,proxy_cpu_us,proxy_ticks_us,proxy_cpu_pct,backend_cpu_us,wrk_cpu_pct,idle_pct,steal_pct,backend_conns_opened" >"$CSV"

measure() { # CERT WORKERS WORKLOAD ROUND POS TARGET
  local c=$1 w=$2 wl=$3 r=$4 pos=$5 t=$6 port=${PORT_OF[$6]} pp p0 p1 k0 k1 b0 b1 s0 s1 a0 a1 line
  remember_tree
  pp=${PID_OF[$t]}
  local logf="$TMP/logs/wrk-$c-w$w-$wl-r$r-$t.log"
  wrk_cmd "$port" "$DURATION" "$wl" "$CONNS"
  a0=$(backends_accepts); b0=$(backends_cpu); s0=$(read_procstat)
  p0=$(cpu_ns_tree "$pp"); k0=$(ticks_tree "$pp")
  fg_run "$logf" "${WRK[@]}" || log "wrk exit code $? for $t (see $logf)"
  p1=$(cpu_ns_tree "$pp"); k1=$(ticks_tree "$pp")
  s1=$(read_procstat); b1=$(backends_cpu); a1=$(backends_accepts)
  ours "$pp" || { log "$t is gone (see $TMP/logs/$t.log)"; return 1; }
  line=$(grep '^TLSBENCH ' "$logf" | tail -n 1)
  [[ -n $line ]] || { log "no result from wrk for $t:"; tail -n 20 "$logf" >&2; return 1; }
  local -A v=(); local kv
  for kv in ${line#TLSBENCH }; do v[${kv%%=*}]=${kv#*=}; done
  ((v[requests] > 0)) || { log "wrk got no answer from $t"; tail -n 20 "$logf" >&2; return 1; }
  awk -v c="$c" -v w="$w" -v wl="$wl" -v r="$r" -v pos="$pos" -v t="$t" -v req="${v[requests]}" \
      -v dus="${v[duration_us]}" -v p50="${v[p50_us]}" -v p99="${v[p99_us]}" -v mx="${v[max_us]}" \
      -v cpu="${v[cpu_s]}" -v err=$(( v[err_connect] + v[err_read] + v[err_write] + v[err_timeout] )) \
      -v non2xx="${v[err_status]}" -v pd=$((p1 - p0)) -v kd=$((k1 - k0)) -v tck="$CLK_TCK" -v bd=$((b1 - b0)) \
      -v s0="$s0" -v s1="$s1" -v acc="$(( a0 < 0 || a1 < 0 ? -1 : a1 - a0 - NBACK ))" '
    BEGIN {
      split(s0, a, " "); split(s1, b, " ")
      dt = b[1] - a[1]; idle = dt > 0 ? 100 * (b[2] - a[2]) / dt : 0; steal = dt > 0 ? 100 * (b[3] - a[3]) / dt : 0
      secs = dus / 1e6
      printf "%s,%d,%s,%d,%d,%s,%.1f,%d,%.3f,%d,%d,%d,%d,%d,%.2f,%.2f,%.1f,%.2f,%.1f,%.1f,%.1f,%s\n",
        c, w, wl, r, pos, t, req / secs, req, secs, p50, p99, mx, err, non2xx,
        pd / 1000 / req, kd * 1e6 / tck / req, pd / 1e9 / secs * 100, bd / 1000 / req,
        cpu / secs * 100, idle, steal, (acc < 0 ? "" : acc)
    }' >>"$CSV"
  log "$c w$w $(printf '%-9s' "$wl") round $r  $(printf '%-8s' "$t") $(tail -n 1 "$CSV" | awk -F, '{printf "%8.0f req/s  p99 %.2fms  proxy %s us/%s  wrk cpu %s%%  idle %s%%  errors %d", $7, $11/1000, $15, ($3=="newconn"?"conn":"req"), $19, $20, $13+$14}')"
}

CHECKS="$TMP/checks.jsonl"; : >"$CHECKS"
check_target() { # CERT TARGET -- which certificate it serves; what wrk's handshakes are
  local c=$1 t=$2 port=${PORT_OF[$2]} want got served sc nr pl
  want=$(fingerprint <"$TMP/certs/$c.pem")
  # s_client with the SNI wrk sends (wrk sends the URL's host, here the IP literal)
  timeout 10 openssl s_client -connect "$HOST:$port" -servername "$HOST" </dev/null >"$TMP/logs/s_client-$c-$t.log" 2>&1
  got=$(fingerprint <"$TMP/logs/s_client-$c-$t.log")
  if [[ -z $got ]]; then served="no certificate (s_client failed)"
  elif [[ $got == "$want" ]]; then served="the generated $c cert"
  else served="**a DIFFERENT cert** ($got)"; fi
  sc=$(awk -F': ' '/^Peer signature type:/{s=$2} /^Server Temp Key:/{k=$2} END{printf "%s, %s", s, k}' "$TMP/logs/s_client-$c-$t.log")
  if ((CHECK)); then
    local cc=$((THREADS > 2 ? THREADS : 2))   # a short, light run: 2 connections
    wrk_cmd "$port" 1 newconn "$cc"
    fg_run "$TMP/logs/check-$c-$t-noresume.json" "$PY" "$HELPER" handshakes "$port" -- "${WRK[@]}"
    wrk_cmd "$port" 1 newconn "$cc" plain
    fg_run "$TMP/logs/check-$c-$t-plain.json" "$PY" "$HELPER" handshakes "$port" -- "${WRK[@]}"
    nr=$(tail -n 1 "$TMP/logs/check-$c-$t-noresume.json"); pl=$(tail -n 1 "$TMP/logs/check-$c-$t-plain.json")
    [[ $nr == "{"* ]] || nr='{"error": "the check failed"}'
    [[ $pl == "{"* ]] || pl='{"error": "the check failed"}'
  else
    nr='{"error": "skipped (--no-check)"}' pl='{}'
  fi
  printf '{"cert": "%s", "target": "%s", "served": "%s", "s_client": "%s", "noresume": %s, "plain": %s}\n' \
    "$c" "$t" "$served" "$sc" "$nr" "$pl" >>"$CHECKS"
  log "check $c $t: serves $served; s_client: $sc; new-conn handshakes (seen, resumed): $(grep -oE '"(server_hellos|resumed|error)": ("[^"]*"|[0-9]+)' <<<"$nr" | cut -d' ' -f2- | paste -sd' ')"
}

# ---------------------------------------------------------------- blocks
# One block per cert kind x worker count: the proxies start with that certificate and
# worker count, warm up, then ROUNDS rounds; in each round every workload runs on every
# target, the targets' order rotating from round to round (so no target always runs
# first or right after another one's load).
for c in "${CERTS[@]}"; do
  first_w=1
  for w in "${WORKERS_LIST[@]}"; do
    log "block: $c certificate, $w worker(s)"
    for t in "${TARGETS[@]}"; do start_target "$t" "$c" "$w"; done
    for t in "${TARGETS[@]}"; do
      # curl checks the certificate against the generated one (SAN IP:127.0.0.1)
      wait_ready "$t" "https://$HOST:${PORT_OF[$t]}/" 60 --cacert "$TMP/certs/$c.pem" ||
        { remember_tree; die "target $t failed to start with TLS (its log is above)"; }
    done
    remember_tree
    if ((first_w)); then for t in "${TARGETS[@]}"; do check_target "$c" "$t"; done; fi
    first_w=0
    if ((WARMUP > 0)); then
      for t in "${TARGETS[@]}"; do for wl in "${WORKLOADS[@]}"; do
        wrk_cmd "${PORT_OF[$t]}" "$WARMUP" "$wl" "$CONNS"
        fg_run "$TMP/logs/warmup-$c-w$w-$wl-$t.log" "${WRK[@]}" || log "warm-up wrk failed for $t $wl"
      done; done
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
      off=$(( (r - 1) % ntargets ))
      for wl in "${WORKLOADS[@]}"; do
        for ((k = 0; k < ntargets; k++)); do
          t=${TARGETS[$(( (k + off) % ntargets ))]}
          ((PAUSE > 0)) && sleep "$PAUSE"
          measure "$c" "$w" "$wl" "$r" "$((k + 1))" "$t"
        done
      done
    done
    for t in "${TARGETS[@]}"; do stop_target "$t"; done
  done
done

# ---------------------------------------------------------------- report
if [[ -z $OUT ]]; then
  OUT="$ROOT/bench/results/tls/$(date -u +%Y-%m-%d-%H%M%S).md"
fi
mkdir -p "$(dirname "$OUT")" || die "cannot create $(dirname "$OUT")"
ek_version=""
want evenkeel && ek_version=" | evenkeel $("$EVENKEEL_BIN" --version 2>&1 | head -n 1) ($EVENKEEL_BIN)"
{
  echo "## TLS termination: NGINX, HAProxy, evenkeel ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "- command: \`$ORIG_CMDLINE\`"
  echo "- wrk: \`wrk -t$THREADS -c$CONNS -d${DURATION}s --latency https://$HOST:PORT/\`; new conn adds \`-H 'Connection: close'\` and the no-resumption shim (LD_PRELOAD); ${WARMUP}s warm-up per target and workload; rounds=$ROUNDS, targets' order rotating; pause ${PAUSE}s"
  echo "- certificates: ECDSA P-256 and RSA 2048, self-signed, SAN DNS:localhost + IP:127.0.0.1, the same file for every proxy; TLS 1.2+1.3 enabled everywhere, default ciphers; NGINX \`ssl_session_cache shared:SSL:10m\`, HAProxy and evenkeel their defaults"
  echo "- backends: $NBACK x nginx (1 worker, 13-byte body, plain HTTP) at $BACKENDS; upstream keep-alive in every proxy (NGINX keepalive $NGINX_KEEPALIVE)"
  echo "- TLS libraries: NGINX $("$NGINX_BIN" -V 2>&1 | grep -o 'running with [^)]*' || "$NGINX_BIN" -V 2>&1 | grep -o 'built with OpenSSL [^ ]*'), HAProxy $("$HAPROXY_BIN" -vv 2>&1 | grep -o 'Running on OpenSSL version : .*' | sed 's/ : / /'), wrk $(openssl version | cut -d' ' -f1-2) (Debian's libssl)"
  echo "- versions: $("$NGINX_BIN" -v 2>&1) | $("$HAPROXY_BIN" -v 2>&1 | head -n 1 | cut -d' ' -f1-3) | $("$WRK_BIN" -v 2>&1 | head -n 1 | sed 's/ Copyright.*//') | $(openssl version)$ek_version | kernel $(uname -r) | $(nproc) CPUs, load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  "$PY" "$HELPER" report "$CSV" "$CHECKS" "$(IFS=,; echo "${TARGETS[*]}")"
} >"$TMP/summary.md"
cat "$TMP/summary.md"
cp "$TMP/summary.md" "$OUT" && cp "$CSV" "${OUT%.md}.csv" && cp "$CHECKS" "${OUT%.md}.checks.jsonl" &&
  log "report: $OUT (raw runs: ${OUT%.md}.csv, checks: ${OUT%.md}.checks.jsonl)"
