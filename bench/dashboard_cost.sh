#!/usr/bin/env bash
# What the dashboard costs the proxy: evenkeel's CPU time (utime + stime from /proc)
# over ROUNDS alternating windows of SECONDS with the page closed and with it open in
# headless Chromium (tests/dashboard/hold.mjs), in the same run. The config has 3 pools
# of 8 backends (a bigger /status than most); there is no client traffic, so what is
# measured is the page's polling alone (GET /status and /events every second).
#
# Usage: bench/dashboard_cost.sh [SECONDS] [ROUNDS]     (defaults 30 and 2)
# Needs: chromium, node, npm ci --prefix tests/dashboard; builds --release.
set -euo pipefail
seconds=${1:-30} rounds=${2:-2}
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
token=bench-dashboard-token-0123456789
echo "$token" > "$work/admin.token"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
admin_port=$(port)
{
  printf '[admin]\nlisten = "127.0.0.1:%s"\ntoken_file = "admin.token"\n\n' "$admin_port"
  printf '[[listener]]\nname = "public"\nlisten = "127.0.0.1:0"\n\n'
  for p in a b c; do
    printf '[[route]]\npath_prefix = "/%s"\npool = "%s"\n\n' "$p" "$p"
  done
  for p in a b c; do
    printf '[pool.%s]\nalgorithm = "weighted_round_robin"\nbackends = [\n' "$p"
    for i in 1 2 3 4 5 6 7 8; do printf '  { address = "127.0.0.%s:%s", weight = %s },\n' "$i" "$((20000 + i))" "$i"; done
    printf ']\n\n'
  done
} > "$work/evenkeel.toml"
"$root/target/release/evenkeel" serve -c "$work/evenkeel.toml" --no-access-log >"$work/out.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$admin_port/healthz" >/dev/null && break; sleep 0.1; done
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
closed_total=0 open_total=0
for round in $(seq "$rounds"); do
  a=$(cpu); sleep "$seconds"; b=$(cpu)
  closed=$((b - a))
  a=$(cpu)
  calls=$(ADMIN="http://127.0.0.1:$admin_port" TOKEN="$token" SECONDS="$seconds" node tests/dashboard/hold.mjs)
  b=$(cpu)
  open=$((b - a))
  closed_total=$((closed_total + closed)) open_total=$((open_total + open))
  echo "round $round: page closed $closed ticks, page open $open ticks over ${seconds}s ($calls)"
done
awk -v c="$closed_total" -v o="$open_total" -v s="$seconds" -v r="$rounds" -v t="$ticks" 'BEGIN {
  closed = c / t / (s * r); open = o / t / (s * r)
  printf "evenkeel CPU: page closed %.4f core, page open %.4f core: the page costs %.4f core\n", closed, open, open - closed
}'
