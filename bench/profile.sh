#!/usr/bin/env bash
# bench/profile.sh — where evenkeel's CPU goes per proxied request.
#
# Starts three NGINX backends (fixed 13-byte body, like ../shared/bench/anchors.sh),
# evenkeel in front of them (bench/evenkeel-target.sh: round robin, 1 worker, no access
# log) and drives it with wrk on 127.0.0.1. Two modes:
#
#   callgrind  evenkeel runs under valgrind's callgrind; counters are zeroed after a
#              warm-up, wrk runs for DURATION seconds, and the report gives
#              instructions per request (total Ir ÷ requests wrk completed) and the
#              top functions (inclusive and self). Instruction counts do not depend
#              on what else the machine does, so before/after figures are comparable
#              across runs of the same scenario.
#   perf       perf record (cpu-clock, call graphs) on the running evenkeel for
#              DURATION seconds; prints the top of the flat profile.
#
# Usage: bench/profile.sh [callgrind|perf] [DURATION] [CONNECTIONS] [POST_BYTES]
#        (defaults: callgrind 10 16 0). POST_BYTES > 0 makes every request a POST with
#        a body of that many bytes (a wrk Lua script, as bench/uploads.sh sends).
#        BROWSER_FIELDS=1 adds the eleven fields of a browser's page request.
#        Needs nginx, wrk, valgrind / perf and a prior
#        `cargo build --release` (or EVENKEEL_BINARY=path). Output files stay in
#        bench/results/profile-*.
# Every process it starts listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail
mode=${1:-callgrind} duration=${2:-10} conns=${3:-16} post_bytes=${4:-0}
root=$(cd "$(dirname "$0")/.." && pwd)
# EVENKEEL_BINARY profiles another build (a baseline kept aside) the same way.
bin=${EVENKEEL_BINARY:-$root/target/release/evenkeel}
[[ -x $bin ]] || { echo "profile.sh: $bin is missing: run cargo build --release" >&2; exit 2; }
for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
out=$root/bench/results/profile-$mode-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evenkeel-profile.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

wrk_args=()
if (( post_bytes > 0 )); then
  printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' \
    "$post_bytes" >"$tmp/post.lua"
fi
# BROWSER_FIELDS=1: every request also carries the eleven fields a browser sends with a
# page request (as Chromium's: 730 bytes of head in all), where wrk alone sends Host.
if [[ ${BROWSER_FIELDS:-0} == 1 ]]; then
  cat "$root/bench/browser-fields.lua" >>"$tmp/post.lua"
fi
[[ -s $tmp/post.lua ]] && wrk_args=(-s "$tmp/post.lua")

backends=""
for i in 1 2 3; do
  port=$((19200 + i)) d=$tmp/b$i
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $d/tmp; proxy_temp_path $d/tmp; fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  server {
    listen 127.0.0.1:$port;
    location / { add_header X-Backend b$i always; return 200 "hello, world\n"; }
  }
}
EOF
  nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" &
  pids+=($!)
  backends+="${backends:+,}127.0.0.1:$port"
done

port=18290
# evenkeel-target.sh checks the binary is executable; give it a wrapper for valgrind.
wrapper=$tmp/evenkeel
if [[ $mode == callgrind ]]; then
  printf '#!/bin/sh\nexec valgrind --quiet --tool=callgrind --callgrind-out-file=%s %s "$@"\n' \
    "$out/callgrind.out" "$bin" >"$wrapper"
else
  printf '#!/bin/sh\nexec %s "$@"\n' "$bin" >"$wrapper"
fi
chmod +x "$wrapper"
EVENKEEL_BIN=$wrapper "$root/bench/evenkeel-target.sh" "$port" "$backends" 1 &
pids+=($!)
for _ in $(seq 1 600); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$port/" || { echo "profile.sh: evenkeel did not answer" >&2; exit 1; }
if [[ $mode == callgrind ]]; then
  evpid=$(pgrep -f -n "callgrind-out-file=$out/callgrind.out")
else
  evpid=$(pgrep -f -n "^$bin serve")
fi
echo "profile.sh: evenkeel pid $evpid, backends $backends" >&2

wrk -t1 -c"$conns" -d2s "${wrk_args[@]}" "http://127.0.0.1:$port/" >/dev/null   # warm-up
case $mode in
  callgrind)
    callgrind_control -z "$evpid" >/dev/null
    wrk -t1 -c"$conns" -d"${duration}s" "${wrk_args[@]}" "http://127.0.0.1:$port/" | tee "$out/wrk.txt"
    callgrind_control -d "$evpid" >/dev/null
    sleep 1
    dump=$(ls -t "$out"/callgrind.out* | grep -v '\.out$' | head -1 || true)
    [[ -n $dump ]] || dump=$out/callgrind.out
    requests=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    echo
    echo "requests: $requests   instructions: $total   per request: $((total / requests))"
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '1,60p' >"$out/inclusive.txt"
    callgrind_annotate "$dump" 2>/dev/null | sed -n '1,70p' >"$out/self.txt"
    echo "top functions: $out/self.txt and $out/inclusive.txt"
    ;;
  perf)
    perf record -F 1999 -g -e cpu-clock -p "$evpid" -o "$out/perf.data" -- sleep "$duration" >/dev/null 2>&1 &
    rec=$!
    wrk -t1 -c"$conns" -d"${duration}s" "${wrk_args[@]}" "http://127.0.0.1:$port/" | tee "$out/wrk.txt"
    wait $rec || true
    perf report -i "$out/perf.data" --no-children --stdio --percent-limit 0.7 2>/dev/null \
      | grep -v '^$' | grep -v '^#' | grep '%' | head -60 | tee "$out/flat.txt"
    ;;
  *) echo "profile.sh: unknown mode $mode" >&2; exit 2;;
esac
