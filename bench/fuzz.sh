#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while and prints what it found.
#
# Usage: bench/fuzz.sh TARGET MINUTES [LIBFUZZER-FLAG...]
#        bench/fuzz.sh all MINUTES     (every target, one after the other)
#   TARGET   request_head | response_head | chunked_body | config | proxy_header |
#            nginx_config | haproxy_config
#            (fuzz/fuzz_targets/)
#   MINUTES  how long (decimals allowed: 0.5 is 30 s)
# The corpus grows in fuzz/corpus/TARGET (not committed), seeded from fuzz/seeds/TARGET
# (committed); a crash or failed property leaves its input in fuzz/artifacts/TARGET/
# and exits non-zero. Builds with debug assertions and overflow checks on, without a
# sanitizer (the crate forbids unsafe code; the targets reach no C).
# cargo-fuzz needs nightly features: RUSTC_BOOTSTRAP=1 lets the stable toolchain
# build them. Install it once with: cargo install cargo-fuzz --locked
# Example: bench/fuzz.sh request_head 10
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 TARGET|all MINUTES [LIBFUZZER-FLAG...]" >&2; exit 2; }
target=$1 minutes=$2
shift 2
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1
targets=(request_head response_head chunked_body config proxy_header nginx_config haproxy_config)
if [[ $target == all ]]; then
  for t in "${targets[@]}"; do "$self" "$t" "$minutes" "$@"; done
  exit 0
fi
[[ " ${targets[*]} " == *" $target "* ]] || { echo "unknown target $target (one of: ${targets[*]})" >&2; exit 2; }
seconds=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60); print (s < 1 ? 1 : s) }')
cargo fuzz build -s none "$target"
mkdir -p "corpus/$target"
cp -n "seeds/$target/"* "corpus/$target/" 2>/dev/null || true
log=$(mktemp "${TMPDIR:-/tmp}/evenkeel-fuzz-$target.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
started=$SECONDS
# -rss_limit_mb: a leak or a huge allocation is a finding too. -max_len: heads are
# at most 64 KiB; configs are small.
cargo fuzz run -s none "$target" "corpus/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "$@" \
  2>"$log" || status=$?
execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
per_second=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
units=$(find "corpus/$target" -type f | wc -l)
found=$(find "artifacts/$target" -type f 2>/dev/null | wc -l)
echo "fuzz $target: $((SECONDS - started))s of ${seconds}s, ${execs:-?} runs, ${per_second:-?} exec/s, corpus $units inputs, $found findings (exit $status)"
if ((status != 0)); then
  tail -40 "$log" >&2
fi
exit "$status"
