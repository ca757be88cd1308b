#!/usr/bin/env bash
# bench/browser.sh — requests as a browser sends them, through evenkeel beside NGINX and
# HAProxy: every request carries the eleven fields of Chromium's page request (User-Agent,
# Accept, Accept-Language, Accept-Encoding, Referer, Cookie, Cache-Control, ...: 730
# bytes of head), where wrk alone sends only Host. The backends answer 13 bytes.
#
# It runs the shared harness (../shared/bench/anchors.sh, or $ANCHORS) unchanged, with a
# `wrk` placed first on its PATH that adds the fields to the harness's own Lua script,
# as bench/uploads.sh adds a body; the CPU accounting, rounds and report are the
# harness's. BASE_BIN=path adds a second evenkeel build (a kept baseline) as target
# `base`, measured in the same rounds. Everything stays on 127.0.0.1.
#
# Usage: bench/browser.sh [--rounds N] [--duration S] [--workers W]
# Results: bench/results/browser-<UTC time>.md (also printed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$root/../shared/bench/anchors.sh}
rounds=5 duration=5 workers=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2;;
    --duration) duration=$2; shift 2;;
    --workers) workers=$2; shift 2;;
    -h|--help) sed -n '2,14p' "$0"; exit 0;;
    *) echo "browser.sh: unknown option $1" >&2; exit 2;;
  esac
done
[[ -x $anchors ]] || { echo "browser.sh: the harness $anchors is missing (set ANCHORS=path/to/anchors.sh)" >&2; exit 2; }
real_wrk=$(command -v wrk) || { echo "browser.sh: wrk is missing (apt-get install wrk)" >&2; exit 2; }
[[ -n ${EVENKEEL_BIN:-} ]] || (cd "$root" && cargo build --release -q)

shim=$(mktemp -d "${TMPDIR:-/tmp}/evenkeel-browser.XXXXXX")
trap 'rm -rf "$shim"' EXIT
# The shim: the harness calls `wrk ... -s stats.lua URL`; this runs the real wrk on the
# fields followed by the harness's script.
cat >"$shim/wrk" <<SH
#!/usr/bin/env bash
args=()
while [[ \$# -gt 0 ]]; do
  if [[ \$1 == -s ]]; then
    script=\$(mktemp "$shim/run.XXXXXX.lua")
    cat "$root/bench/browser-fields.lua" "\$2" >"\$script"
    args+=(-s "\$script"); shift 2
  else
    args+=("\$1"); shift
  fi
done
exec "$real_wrk" "\${args[@]}"
SH
chmod +x "$shim/wrk"

target="$root/bench/evenkeel-target.sh"
extra=(--extra-name evenkeel --extra-port 18090 --extra-cmd "$target {port} {backends} {workers}")
if [[ -n ${BASE_BIN:-} ]]; then
  extra+=(--extra-name base --extra-port 18091
          --extra-cmd "EVENKEEL_BIN=$BASE_BIN $target {port} {backends} {workers}")
fi
mkdir -p "$root/bench/results"
out=$root/bench/results/browser-$(date -u +%Y%m%d-%H%M%S).md
PATH="$shim:$PATH" "$anchors" --rounds "$rounds" --duration "$duration" --workers "$workers" \
  "${extra[@]}" > "$out"
sed -n '/^| target | median/,/^$/p' "$out"
echo "full report: $out" >&2
