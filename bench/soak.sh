#!/usr/bin/env bash
# Soak: steady load through evenkeel while its world keeps changing, then check that no
# idempotent request failed and that memory and descriptors stayed flat.
#
# Usage: bench/soak.sh MINUTES [RATE]
#   MINUTES  how long the load runs (10 for the figure in docs/reliability.md)
#   RATE     requests a second, open loop (default 400)
# While `evenkeel loadtest` sends GETs at RATE through a release evenkeel (2 workers)
# to three NGINX backends:
#   - every 10 s the config is rewritten (a weight flips) and reloaded with SIGHUP;
#   - every 30 s backend 1 is stopped (SIGTERM: NGINX's fast shutdown, which closes its
#     connections) and started again 5 s later;
#   - every 45 s backend 2 is drained through the admin API, and enabled 15 s later.
# Every 10 s evenkeel's resident memory (VmRSS) and open descriptors are sampled.
# Pass: 0 failed requests (non-2xx statuses or errors), and after the first two
# minutes (warm-up; the whole run when shorter) neither RSS nor descriptors grew: the
# peak of the second half within 10% of the first half's. Prints one summary line, exits 1 on a failure.
# Needs: nginx (Debian package), cargo build --release. Loopback only.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 MINUTES [RATE]" >&2; exit 2; }
minutes=$1 rate=${2:-400}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${EVENKEEL_BIN:-$here/target/release/evenkeel}
[[ -x $bin ]] || { echo "$bin is missing: run cargo build --release" >&2; exit 2; }
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || { echo "nginx is missing (apt-get install nginx)" >&2; exit 2; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
seconds=$(awk -v m="$minutes" 'BEGIN { print int(m * 60) }')
dir=$(mktemp -d "${TMPDIR:-/tmp}/evenkeel-soak.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for b in 1 2 3; do
    [[ -f $dir/nginx$b.pid ]] && kill -TERM "$(cat "$dir/nginx$b.pid")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ports=()
for b in 1 2 3; do
  port=$(free_port)
  ports+=("$port")
  mkdir -p "$dir/nginx$b"
  cat >"$dir/nginx$b.conf" <<CONF
worker_processes 1;
pid $dir/nginx$b.pid;
error_log $dir/nginx$b/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/nginx$b;
  proxy_temp_path $dir/nginx$b;
  fastcgi_temp_path $dir/nginx$b;
  uwsgi_temp_path $dir/nginx$b;
  scgi_temp_path $dir/nginx$b;
  server {
    listen 127.0.0.1:$port;
    location / { return 200 "backend $b\n"; }
  }
}
CONF
done
start_backend() { "$nginx_bin" -c "$dir/nginx$1.conf" -p "$dir/nginx$1" 2>/dev/null; }
stop_backend() { [[ -f $dir/nginx$1.pid ]] && kill -TERM "$(cat "$dir/nginx$1.pid")" 2>/dev/null || true; }
for b in 1 2 3; do start_backend "$b"; done

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s' "$token" >"$dir/admin.token"
admin_port=$(free_port)
proxy_port=$(free_port)
write_config() { # $1: weight of backend 3
  cat >"$dir/evenkeel.toml.new" <<CONF
state_dir = "state"
[admin]
listen = "127.0.0.1:$admin_port"
token_file = "admin.token"

[[listener]]
name = "soak"
listen = "127.0.0.1:$proxy_port"

[[route]]
pool = "web"

[pool.web]
algorithm = "round_robin"
retries = { attempts = 2, budget_percent = 50 }
backends = [
  { address = "127.0.0.1:${ports[0]}" },
  { address = "127.0.0.1:${ports[1]}" },
  { address = "127.0.0.1:${ports[2]}", weight = $1 },
]
[pool.web.health]
path = "/"
interval = "1s"
timeout = "500ms"

[guard]
watch = "5s"
min_requests = 1000000
CONF
  mv "$dir/evenkeel.toml.new" "$dir/evenkeel.toml"
}
write_config 1
"$bin" serve -c "$dir/evenkeel.toml" --workers 2 --no-access-log >"$dir/serve.out" 2>"$dir/serve.err" &
serve=$!
pids+=("$serve")
for _ in $(seq 100); do grep -q "^listening" "$dir/serve.out" 2>/dev/null && break; sleep 0.1; done
grep -q "^listening" "$dir/serve.out" || { echo "evenkeel did not start:" >&2; cat "$dir/serve.err" >&2; exit 1; }

"$bin" loadtest "http://127.0.0.1:$proxy_port/" -d "${seconds}s" --rate "$rate" -c 256 \
  --timeout 5s --format json >"$dir/load.json" 2>/dev/null &
load=$!
pids+=("$load")

admin() { curl -sS -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:$admin_port$1"; }
sample() { # RSS in KiB and open descriptors of evenkeel
  local rss fds
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$serve/status")
  fds=$(find "/proc/$serve/fd" -mindepth 1 -maxdepth 1 | wc -l)
  echo "$1 $rss $fds" >>"$dir/samples"
}
warmup=$(( seconds > 240 ? 120 : 0 ))
reloads=0 kills=0 drains=0
for ((t = 1; t <= seconds; t++)); do
  sleep 1
  kill -0 "$serve" 2>/dev/null || { echo "evenkeel exited during the soak" >&2; cat "$dir/serve.err" >&2; exit 1; }
  if ((t % 10 == 0)); then
    write_config $(( (t / 10) % 2 + 1 ))
    kill -HUP "$serve"
    reloads=$((reloads + 1))
    sample "$t"
  fi
  if ((t % 30 == 0)); then stop_backend 1; kills=$((kills + 1)); fi
  if ((t % 30 == 5 && t > 30)); then start_backend 1; fi
  if ((t % 45 == 0)); then admin "/backends/web/127.0.0.1:${ports[1]}/drain" >/dev/null; drains=$((drains + 1)); fi
  if ((t % 45 == 15 && t > 45)); then admin "/backends/web/127.0.0.1:${ports[1]}/enable" >/dev/null; fi
done
wait "$load" || true
pids=("$serve")

summary=$(python3 - "$dir/load.json" "$dir/samples" "$warmup" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
if isinstance(report, list):  # findings array: the report is the summary entry
    report = next((r for r in report if isinstance(r, dict) and "requests" in r), report[0])
statuses = report.get("statuses", {})
errors = report.get("errors", {})
ok = sum(n for s, n in statuses.items() if str(s).startswith("2"))
failed = sum(n for s, n in statuses.items() if not str(s).startswith("2")) + sum(errors.values())
samples = [tuple(map(int, l.split())) for l in open(sys.argv[2])]
warm = [s for s in samples if s[0] > int(sys.argv[3])] or samples
rss = [s[1] for s in warm]
fds = [s[2] for s in warm]
def spread(v):
    # Growth: the second half's peak over the first half's (connections come and go,
    # so single samples swing; a leak raises the peaks).
    half = len(v) // 2
    if half == 0 or max(v[:half]) == 0:
        return 0.0
    return (max(v[half:]) - max(v[:half])) / max(v[:half])
flat = spread(rss) <= 0.10 and spread(fds) <= 0.10
print(f"{ok} {failed} {min(rss)} {max(rss)} {min(fds)} {max(fds)} {spread(rss):+.3f} {spread(fds):+.3f} {'flat' if flat else 'GROWING'} {json.dumps(errors)}")
PY
)
read -r ok failed rss_min rss_max fds_min fds_max rss_growth fds_growth verdict errors <<<"$summary"
echo "soak ${minutes} min at ${rate}/s: $ok ok, $failed failed $errors; $reloads reloads, $kills backend kills, $drains drains; after warm-up RSS ${rss_min}-${rss_max} KiB (peak growth $rss_growth), descriptors ${fds_min}-${fds_max} (peak growth $fds_growth): $verdict"
[[ $failed -eq 0 && $verdict == flat ]]
