#!/usr/bin/env bash
# Memory under a steady idle load: the bench script (pings every 20 s) on CPU 0, `wsload idle`
# holding CLIENTS connections on CPU 1 for MINUTES, the host's RSS sampled every minute. Prints
# one "minute rss_kb" line per sample, then whether RSS stayed within 2 % after the first 5 minutes.
#
#   usage: Tests/bench/rss_soak.sh BINARY [CLIENTS] [MINUTES] [PING_EVERY]
#   e.g.   Tests/bench/rss_soak.sh .build/release/moongate 10000 30
#
# WSLOAD (default ../shared/wsload/wsload) and PORT (default 9312) may be set. Not part of the test run.
set -euo pipefail
binary=$1 clients=${2:-10000} minutes=${3:-30} ping_every=${4:-20}
here=$(cd "$(dirname "$0")" && pwd)
wsload=${WSLOAD:-$here/../../../shared/wsload/wsload}
port=${PORT:-9312}
scripts=$(mktemp -d)
sed "s/^  path = \"\\/bench\",/  path = \"\\/bench\",\\n  keepalive = { ping_every = $ping_every, timeout = 10 },/" \
  "$here/../../scripts/bench.lua" > "$scripts/bench.lua"
samples=$(mktemp)
trap 'kill "$server" "$load" 2>/dev/null || true; rm -rf "$scripts" "$samples"' EXIT

taskset -c 0 "$binary" serve "$scripts" --log-level warning --port "$port" > /dev/null 2>&1 &
server=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
taskset -c 1 "$wsload" idle -c "$clients" -d $((minutes * 60)) "ws://127.0.0.1:$port/bench" > "$samples.wsload" 2>&1 &
load=$!
for minute in $(seq 0 "$minutes"); do
  [ "$minute" -eq 0 ] || sleep 60
  echo "$minute $(awk '/^VmRSS:/ {print $2}' "/proc/$server/status")" | tee -a "$samples"
done
wait "$load" || true
grep "^{" "$samples.wsload" || tail -n 3 "$samples.wsload"
python3 - "$samples" <<'PY'
import sys
rows = [tuple(map(int, line.split())) for line in open(sys.argv[1])]
after = [rss for minute, rss in rows if minute >= 5]
low, high = min(after), max(after)
print(f"after minute 5: {low / 1024:.1f}-{high / 1024:.1f} MB, spread {100 * (high - low) / low:.2f} % "
      f"({'plateau' if high <= low * 1.02 else 'NOT a plateau'} within 2 %)")
PY
rm -f "$samples.wsload"
