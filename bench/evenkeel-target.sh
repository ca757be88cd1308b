#!/usr/bin/env bash
# Starts evenkeel in the foreground for ../shared/bench/anchors.sh, the way that
# harness starts NGINX and HAProxy: one listener, round robin over the given backends,
# no access log (NGINX and HAProxy run without one in the harness).
#
# Usage: bench/evenkeel-target.sh PORT BACKENDS WORKERS [log|nomonitor]
#   PORT       port to listen on (127.0.0.1)
#   BACKENDS   comma list of host:port
#   WORKERS    worker threads
#   log        keep the access log on (to measure what logging costs); it goes to
#              $EVENKEEL_LOG (default /dev/null) through evenkeel's background writer
#              (serve --access-log)
#   nomonitor  access log off and the monitor off (serve --no-monitor), to measure
#              what watching costs
# EVENKEEL_TLS_CERT and EVENKEEL_TLS_KEY (absolute paths, both or neither): the listener
# terminates TLS with that certificate and key (bench/tls.sh); unset: plain HTTP.
# Example (from the repo root, after cargo build --release):
#   ../shared/bench/anchors.sh --extra-name evenkeel --extra-port 18090 \
#     --extra-cmd 'bench/evenkeel-target.sh {port} {backends} {workers}'
set -euo pipefail
[[ $# -eq 3 || $# -eq 4 ]] || { echo "usage: $0 PORT BACKENDS WORKERS [log|nomonitor]" >&2; exit 2; }
port=$1 backends=$2 workers=$3 mode=${4:-}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${EVENKEEL_BIN:-$here/target/release/evenkeel}
[[ -x $bin ]] || { echo "$bin is missing: run cargo build --release" >&2; exit 2; }
tls_cert=${EVENKEEL_TLS_CERT:-} tls_key=${EVENKEEL_TLS_KEY:-}
[[ (-n $tls_cert && -n $tls_key) || (-z $tls_cert && -z $tls_key) ]] || { echo "set both EVENKEEL_TLS_CERT and EVENKEEL_TLS_KEY, or neither" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/evenkeel-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
{
  echo '[[listener]]'
  echo 'name = "bench"'
  echo "listen = \"127.0.0.1:$port\""
  [[ -z $tls_cert ]] || echo "tls = { certificates = [{ cert = \"$tls_cert\", key = \"$tls_key\" }] }"
  echo '[[route]]'
  echo 'pool = "bench"'
  echo '[pool.bench]'
  echo 'algorithm = "round_robin"'
  echo 'backends = ['
  IFS=, read -ra list <<<"$backends"
  for b in "${list[@]}"; do echo "  { address = \"$b\" },"; done
  echo ']'
  echo '[pool.bench.health]'
  echo 'path = "/"'
} >"$dir/evenkeel.toml"
# Not exec: the trap must remove the folder when evenkeel exits.
if [[ $mode == log ]]; then
  "$bin" serve -c "$dir/evenkeel.toml" --workers "$workers" --access-log "${EVENKEEL_LOG:-/dev/null}" 2>/dev/null &
elif [[ $mode == nomonitor ]]; then
  "$bin" serve -c "$dir/evenkeel.toml" --workers "$workers" --no-access-log --no-monitor &
else
  "$bin" serve -c "$dir/evenkeel.toml" --workers "$workers" --no-access-log &
fi
pid=$!
# (|| true: under set -e a failing kill or wait -- evenkeel already gone, or exiting
# non-zero -- would end the trap before the rm)
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid || true; rm -rf "$dir"' EXIT INT TERM
wait $pid
