#!/usr/bin/env bash
# Profiles a server's own CPU under the ack workload: the binary serves scripts/bench.lua on CPU 0,
# wsload drives it on CPU 1, and `perf record -e cpu-clock` samples the server for 4 s in the
# middle of the run. Prints the replies/s and the share of samples per binary (dso).
#
#   usage: Tests/bench/perf_ack.sh BINARY [WINDOW]      e.g. Tests/bench/perf_ack.sh .build/release/moongate 1
#
# WSLOAD (default ../shared/wsload/wsload) and PORT (default 9320) may be set. Not part of the test run.
set -euo pipefail
binary=$1 window=${2:-1}
here=$(cd "$(dirname "$0")" && pwd)
wsload=${WSLOAD:-$here/../../../shared/wsload/wsload}
port=${PORT:-9320}
scripts=$(mktemp -d) data=$(mktemp) report=$(mktemp)
cp "$here/../../scripts/bench.lua" "$scripts/"
trap 'rm -rf "$scripts" "$data" "$report"' EXIT

taskset -c 0 "$binary" serve "$scripts" --log-level warning --port "$port" > /dev/null 2>&1 &
server=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
taskset -c 1 "$wsload" ack -c 100 -w "$window" -W 1 -d 7 "ws://127.0.0.1:$port/bench" > "$report" 2>/dev/null &
load=$!
sleep 2
perf record -e cpu-clock -F 2000 -g -p "$server" -o "$data" -- sleep 4 > /dev/null 2>&1
wait "$load"
kill "$server"
wait "$server" 2>/dev/null || true
python3 -c 'import json, sys; print("replies/s", json.load(open(sys.argv[1]))["replies_per_s"])' "$report"
perf report -i "$data" --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -6
