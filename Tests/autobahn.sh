#!/usr/bin/env bash
# Runs Autobahn's cases (kosoku), the compression cases 12.* and 13.* included (517 in all), against
# the bundled /echo endpoint of the release build (or $MOONGATE_BIN), and prints how many passed in
# each section; any case that is not OK (or non-strict, informational, unimplemented where the
# suite allows it) fails the run. Reports land in reports/servers/.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${MOONGATE_BIN:-$PWD/.build/release/moongate}"
log=$(mktemp)
"$bin" serve scripts --port 0 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*listening on ws:\/\/[^:]*:\([0-9]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$port" ] && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "moongate did not start"; cat "$log"; exit 1; }
# One case at a time, as Autobahn's own fuzzing client runs them: its timing windows (0.5-1 s)
# assume it. In parallel, every case's echo queues on the /echo script's one executor, where a
# 16 MiB echo (9.x) can hold a small one (6.x) past its window (0.9 s in a debug build).
kosoku -p 1 -o reports/servers "ws://127.0.0.1:$port/echo" | tail -n 3
kill -TERM $server
wait $server
python3 Tests/autobahn_sections.py reports/servers/index.json
