#!/usr/bin/env bash
# bench/compare.sh — evenkeel beside NGINX and HAProxy, same backends, same worker count.
#
# Builds evenkeel (release), installs nginx, haproxy and wrk from Debian when missing,
# then runs the shared harness (../shared/bench/anchors.sh, or $ANCHORS) at 1 and at 2
# worker threads with three extra targets: evenkeel with the access log off (as NGINX
# and HAProxy run in the harness), evenkeel with it on (what logging costs) and
# evenkeel with the monitor off as well (what watching costs).
# Every process and every request stays on 127.0.0.1; the harness stops what it started.
#
# Usage: bench/compare.sh [--rounds N] [--duration S] [--workers "1 2"]
#                         [--body-bytes "13 1024 8192 65536"] [--lean]
#   --body-bytes LIST  response body sizes (anchors.sh --body-bytes; the backends serve a
#                      file of that size); default: anchors.sh's fixed 13-byte body
#   --lean             evenkeel only as it ships (no access-log and no-monitor variants)
# Results: bench/results/<UTC time>/{w1,w2}.md and summary.md (also printed).
# Not part of the test suite; see docs/benchmarks.md for how to read the figures.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$root/../shared/bench/anchors.sh}
rounds=8 duration=4 workers_list="1 2" sizes=0 lean=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2;;
    --duration) duration=$2; shift 2;;
    --workers) workers_list=$2; shift 2;;
    --body-bytes) sizes=$2; shift 2;;
    --lean) lean=1; shift;;
    -h|--help) sed -n '2,17p' "$0"; exit 0;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2;;
  esac
done
[[ -x $anchors ]] || { echo "compare.sh: the harness $anchors is missing (set ANCHORS=path/to/anchors.sh)" >&2; exit 2; }

missing=()
for tool in nginx haproxy wrk; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "compare.sh: installing ${missing[*]} from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

(cd "$root" && cargo build --release -q)
out=$root/bench/results/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$out"
target="$root/bench/evenkeel-target.sh"
variants=(--extra-name evenkeel --extra-port 18090 --extra-cmd "$target {port} {backends} {workers}")
if [[ $lean == 0 ]]; then
  variants+=(--extra-name evenkeel-log --extra-port 18091 --extra-cmd "$target {port} {backends} {workers} log"
    --extra-name evenkeel-nomon --extra-port 18092 --extra-cmd "$target {port} {backends} {workers} nomonitor")
fi
runs=()
for size in $sizes; do
  for workers in $workers_list; do
    name=w$workers; body=()
    if [[ $size != 0 ]]; then name=w$workers-b$size; body=(--body-bytes "$size"); fi
    echo "compare.sh: $workers worker(s), body ${size/#0/13 (fixed)} B, $rounds rounds of ${duration}s" >&2
    "$anchors" --rounds "$rounds" --duration "$duration" --max-steal 5 --nginx-keepalive 256 \
      --workers "$workers" "${body[@]}" "${variants[@]}" --out "$out/$name" > "$out/$name.md"
    runs+=("$name")
  done
done
{
  echo "# evenkeel beside NGINX and HAProxy ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
  for name in "${runs[@]}"; do
    echo; echo "## $name (wN: N workers; bN: an N-byte response body)"; echo
    sed -n '/^| target | median/,/^$/p' "$out/$name.md"
  done
} > "$out/summary.md"
cat "$out/summary.md"
echo "full reports: $out" >&2
