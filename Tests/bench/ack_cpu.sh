#!/usr/bin/env bash
# Server CPU per ack for one binary, at window 1 and 8: the binary serves scripts/bench.lua on
# CPU 0, wsload drives 100 connections on CPU 1, and the server's CPU (user + system, from /proc)
# is sampled for 5 s inside the measured window. Quicker than compare.sh for an A/B of the ack
# path; alternate the binaries, the machine's speed drifts.
#
#   usage: Tests/bench/ack_cpu.sh NAME BINARY     e.g. Tests/bench/ack_cpu.sh new .build/release/moongate
#
# WSLOAD (default ../shared/wsload/wsload) and PORT (default 9331) may be set. Not part of the test run.
set -euo pipefail
name=$1 binary=$2
here=$(cd "$(dirname "$0")" && pwd)
wsload=${WSLOAD:-$here/../../../shared/wsload/wsload}
port=${PORT:-9331}
scripts=$(mktemp -d) report=$(mktemp)
cp "$here/../../scripts/bench.lua" "$scripts/"
trap 'rm -rf "$scripts" "$report"' EXIT
taskset -c 0 "$binary" serve "$scripts" --log-level warning --port "$port" > /dev/null 2>&1 &
server=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
ticks() { awk '{print $14+$15}' "/proc/$server/stat"; }
for window in 1 8; do
  taskset -c 1 "$wsload" ack -c 100 -w "$window" -W 2 -d 8 "ws://127.0.0.1:$port/bench" > "$report" 2>/dev/null &
  load=$!
  sleep 3; c0=$(ticks); t0=$(date +%s.%N); sleep 5; c1=$(ticks); t1=$(date +%s.%N)
  wait "$load"
  python3 - "$report" "$c0" "$c1" "$t0" "$t1" "$name" "$window" <<'PY'
import json, sys
rate = json.load(open(sys.argv[1]))["replies_per_s"]
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / 100 / (float(sys.argv[5]) - float(sys.argv[4]))
print(f"{sys.argv[6]} w{sys.argv[7]}: {rate:,.0f} replies/s, server CPU {cpu:.2f}, {cpu / rate * 1e6:.2f} us per reply")
PY
done
kill "$server"
wait "$server" 2>/dev/null || true
