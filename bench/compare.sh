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
# Results: bench/results/<UTC time>/{w1,w2}.md and summary.md (also printed).
# Not part of the test suite; see docs/benchmarks.md for how to read the figures.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$root/../shared/bench/anchors.sh}
rounds=8 duration=4 workers_list="1 2"
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2;;
    --duration) duration=$2; shift 2;;
    --workers) workers_list=$2; shift 2;;
    -h|--help) sed -n '2,13p' "$0"; exit 0;;
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
for workers in $workers_list; do
  echo "compare.sh: $workers worker(s), $rounds rounds of ${duration}s" >&2
  "$anchors" --rounds "$rounds" --duration "$duration" --max-steal 5 --nginx-keepalive 256 \
    --workers "$workers" \
    --extra-name evenkeel --extra-port 18090 --extra-cmd "$target {port} {backends} {workers}" \
    --extra-name evenkeel-log --extra-port 18091 --extra-cmd "$target {port} {backends} {workers} log" \
    --extra-name evenkeel-nomon --extra-port 18092 --extra-cmd "$target {port} {backends} {workers} nomonitor" \
    --out "$out/w$workers" > "$out/w$workers.md"
done
{
  echo "# evenkeel beside NGINX and HAProxy ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
  for workers in $workers_list; do
    echo; echo "## $workers worker(s)"; echo
    sed -n '/^| target | median/,/^$/p' "$out/w$workers.md"
  done
} > "$out/summary.md"
cat "$out/summary.md"
echo "full reports: $out" >&2
