#!/usr/bin/env bash
# bench/syscalls.sh — where a proxied request's CPU goes, beside NGINX and HAProxy: per
# request, the system calls each proxy makes (by kind), its user and system CPU time,
# and the same for the backends behind it.
#
# Starts three NGINX backends (13-byte body, as ../shared/bench/anchors.sh), an NGINX
# proxy (upstream keepalive 64) and HAProxy (`http-reuse always`) configured as the
# harness configures them, and evenkeel (bench/evenkeel-target.sh) — or each build named
# in EVENKEEL_BINS (space-separated paths) — all with 1 worker. For each proxy in turn:
# a 2 s wrk warm-up, then DURATION seconds of wrk -c CONNS while `perf stat` counts the
# system calls of the proxy and of the backends, and /proc gives their CPU times.
# Counting adds its own overhead to the system time; compare proxies within one run.
#
# Usage: bench/syscalls.sh [DURATION] [CONNS]   (defaults 5 64)
# Needs nginx, haproxy, wrk, perf (linux-perf) and a prior `cargo build --release`.
# Every process it starts listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail
duration=${1:-5} conns=${2:-64}
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in nginx haproxy wrk perf; do
  command -v "$tool" >/dev/null || { echo "syscalls.sh: $tool is missing" >&2; exit 2; }
done
bins=${EVENKEEL_BINS:-$root/target/release/evenkeel}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evenkeel-syscalls.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

http_common() { # dir
  echo "access_log off; keepalive_requests 1000000; client_body_temp_path $1/tmp;" \
       "proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp; uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;"
}
start_nginx() { # dir server-block
  mkdir -p "$1/tmp"
  cat >"$1/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $1/nginx.pid; error_log $1/error.log warn;
events { worker_connections 4096; }
http { $(http_common "$1") $2 }
EOF
  nginx -p "$1" -e "$1/error.log" -c "$1/nginx.conf" &
  pids+=($!)
}

backends="" backend_pids=""
for i in 1 2 3; do
  port=$((19400 + i))
  start_nginx "$tmp/b$i" "server { listen 127.0.0.1:$port; location / { default_type text/plain; add_header X-Backend b$i always; return 200 \"hello world!\n\"; } }"
  backends+="${backends:+,}127.0.0.1:$port" backend_pids+="${backend_pids:+,}$!"
done
start_nginx "$tmp/proxy" "upstream backends { server 127.0.0.1:19401; server 127.0.0.1:19402; server 127.0.0.1:19403; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:18481; location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
targets=("nginx:18481:$!")
cat >"$tmp/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8192
defaults
    mode http
    maxconn 8192
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:18482
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:19401
    server b2 127.0.0.1:19402
    server b3 127.0.0.1:19403
EOF
haproxy -db -f "$tmp/haproxy.cfg" &
pids+=($!)
targets+=("haproxy:18482:$!")
port=18483
for bin in $bins; do
  [[ -x $bin ]] || { echo "syscalls.sh: $bin is missing: run cargo build --release" >&2; exit 2; }
  EVENKEEL_BIN=$bin "$root/bench/evenkeel-target.sh" "$port" "$backends" 1 >"$tmp/evenkeel-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
  targets+=("evenkeel@$(basename "$bin"):$port:$(pgrep -f -n "^$bin serve")")
  port=$((port + 1))
done
sleep 1

events=raw_syscalls:sys_enter
for call in recvfrom sendto writev read write readv epoll_wait epoll_ctl; do
  events+=",syscalls:sys_enter_$call"
done
cpu_ticks() { # comma list of pids -> "user system" clock ticks, summed
  local user=0 system=0 pid
  for pid in ${1//,/ }; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    user=$((user + u)) system=$((system + s))
  done
  echo "$user $system"
}
per_request() { # perf-stat-csv requests -> "kind=N ..." per request, non-zero only
  awk -F, -v r="$2" '/sys_enter/ && $1 > 0 {
    n = $3; sub(/.*:sys_enter_?/, "", n); if (n == "") n = "all";
    printf "%s=%.2f ", n, $1 / r }' "$1"
}
tick_us=$((1000000 / $(getconf CLK_TCK)))
echo "| proxy | req/s | user µs | system µs | system calls per request | backends: user + system µs | backends: calls per request |"
echo "| --- | ---: | ---: | ---: | --- | ---: | --- |"
for target in "${targets[@]}"; do
  IFS=: read -r name port pid <<<"$target"
  wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$port/" >/dev/null
  perf stat -x, -e "$events" -p "$pid" -o "$tmp/proxy.csv" -- sleep "$duration" 2>/dev/null &
  proxy_stat=$!
  perf stat -x, -e "$events" -p "$backend_pids" -o "$tmp/backends.csv" -- sleep "$duration" 2>/dev/null &
  backend_stat=$!
  read -r pu0 ps0 < <(cpu_ticks "$pid")
  read -r bu0 bs0 < <(cpu_ticks "$backend_pids")
  out=$(wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$port/")
  wait "$proxy_stat" "$backend_stat" || true
  read -r pu1 ps1 < <(cpu_ticks "$pid")
  read -r bu1 bs1 < <(cpu_ticks "$backend_pids")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v n="$name" -v r="$requests" -v d="$duration" -v t="$tick_us" \
      -v pu=$((pu1 - pu0)) -v ps=$((ps1 - ps0)) -v b=$((bu1 - bu0 + bs1 - bs0)) \
      -v pc="$(per_request "$tmp/proxy.csv" "$requests")" -v bc="$(per_request "$tmp/backends.csv" "$requests")" \
      'BEGIN { printf "| %s | %d | %.2f | %.2f | %s | %.2f | %s |\n", n, r / d, pu * t / r, ps * t / r, pc, b * t / r, bc }'
done
