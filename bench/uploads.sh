#!/usr/bin/env bash
# bench/uploads.sh — uploads through evenkeel beside NGINX and HAProxy: every request is a
# POST with an N-byte body (wrk, from a Lua script), the backends answer 13 bytes.
#
# It runs the shared harness (../shared/bench/anchors.sh, or $ANCHORS) unchanged, with a
# `wrk` placed first on its PATH that adds the POST method and body to the harness's own
# Lua script, so the CPU accounting, the rounds and the report are the harness's. The
# backends are the harness's NGINX instances (`return 200`, which reads the body and
# drops it); the proxies run as the harness configures them — NGINX with its defaults,
# which buffer a request body larger than `client_body_buffer_size` (16 KiB) in a
# temporary file before sending it, HAProxy and evenkeel streaming it.
# Every process and every request stays on 127.0.0.1; the harness stops what it started.
#
# Usage: bench/uploads.sh [--rounds N] [--duration S] [--workers "1 2"] [--sizes "8192 65536"]
# Results: bench/results/uploads-<UTC time>/{w1-p8192,...}.md and summary.md (also printed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$root/../shared/bench/anchors.sh}
rounds=3 duration=6 workers_list="1 2" sizes="8192 65536"
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2;;
    --duration) duration=$2; shift 2;;
    --workers) workers_list=$2; shift 2;;
    --sizes) sizes=$2; shift 2;;
    -h|--help) sed -n '2,15p' "$0"; exit 0;;
    *) echo "uploads.sh: unknown option $1" >&2; exit 2;;
  esac
done
[[ -x $anchors ]] || { echo "uploads.sh: the harness $anchors is missing (set ANCHORS=path/to/anchors.sh)" >&2; exit 2; }
real_wrk=$(command -v wrk) || { echo "uploads.sh: wrk is missing (apt-get install wrk)" >&2; exit 2; }
(cd "$root" && cargo build --release -q)

shim=$(mktemp -d "${TMPDIR:-/tmp}/evenkeel-uploads.XXXXXX")
trap 'rm -rf "$shim"' EXIT
# The shim: the harness calls `wrk ... -s stats.lua URL`; this writes a script that sets
# the method and body, then appends the harness's script, and runs the real wrk on it.
cat >"$shim/wrk" <<EOF
#!/usr/bin/env bash
args=()
while [[ \$# -gt 0 ]]; do
  if [[ \$1 == -s ]]; then
    script=\$(mktemp "$shim/post.XXXXXX.lua")
    printf 'wrk.method = "POST"\\nwrk.body = string.rep("x", %d)\\nwrk.headers["Content-Type"] = "application/octet-stream"\\n' "\$UPLOAD_BYTES" >"\$script"
    cat "\$2" >>"\$script"
    args+=(-s "\$script"); shift 2
  else
    args+=("\$1"); shift
  fi
done
exec "$real_wrk" "\${args[@]}"
EOF
chmod +x "$shim/wrk"

out=$root/bench/results/uploads-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$out"
target="$root/bench/evenkeel-target.sh"
runs=()
for size in $sizes; do
  for workers in $workers_list; do
    name=w$workers-p$size
    echo "uploads.sh: $workers worker(s), POST of $size B, $rounds rounds of ${duration}s" >&2
    UPLOAD_BYTES=$size PATH="$shim:$PATH" "$anchors" --rounds "$rounds" --duration "$duration" \
      --max-steal 5 --nginx-keepalive 256 --workers "$workers" \
      --extra-name evenkeel --extra-port 18090 --extra-cmd "$target {port} {backends} {workers}" \
      --out "$out/$name" > "$out/$name.md"
    runs+=("$name")
  done
done
{
  echo "# Uploads through evenkeel beside NGINX and HAProxy ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
  for name in "${runs[@]}"; do
    echo; echo "## $name (wN: N workers; pN: a POST with an N-byte body)"; echo
    sed -n '/^| target | median/,/^$/p' "$out/$name.md"
  done
} > "$out/summary.md"
cat "$out/summary.md"
echo "full reports: $out" >&2
