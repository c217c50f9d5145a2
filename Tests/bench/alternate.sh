#!/usr/bin/env bash
# Old binary against new, alternated, for a change too small to see through this machine's noise
# in one run: each round starts each binary on the bench script (CPU 0), drives it with one wsload
# run (CPU 1), and records the rate; the summary gives each side's median and the median of the
# pairwise new/old ratios.
#
#   usage: Tests/bench/alternate.sh OLD_BINARY NEW_BINARY ROUNDS WSLOAD_ARGS...
#   e.g.   Tests/bench/alternate.sh /tmp/old .build/release/moongate 6 broadcast -c 1000 -r max -w 1 --size 200 -W 1 -d 4
#
# WSLOAD (default ../shared/wsload/wsload) and PORT (default 9311) may be set. Not part of the test run.
set -euo pipefail
old=$1 new=$2 rounds=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
wsload=${WSLOAD:-$here/../../../shared/wsload/wsload}
port=${PORT:-9311}
scripts=$(mktemp -d)
cp "$here/../../scripts/bench.lua" "$scripts/"
rows=$(mktemp)
trap 'rm -rf "$scripts" "$rows"' EXIT

rate() {
  taskset -c 0 "$1" serve "$scripts" --log-level warning --port "$port" > /dev/null 2>&1 &
  local server=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  taskset -c 1 "$wsload" "${@:2}" "ws://127.0.0.1:$port/bench" 2>/dev/null \
    | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("deliveries_per_s") or d.get("replies_per_s"))'
  kill "$server"
  wait "$server" 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
  echo "old $(rate "$old" "$@")" | tee -a "$rows"
  echo "new $(rate "$new" "$@")" | tee -a "$rows"
done

python3 - "$rows" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
old = [float(r[1]) for r in rows if r[0] == "old"]
new = [float(r[1]) for r in rows if r[0] == "new"]
ratios = [n / o for o, n in zip(old, new)]
print(f"old median {statistics.median(old):,.0f}  new median {statistics.median(new):,.0f}  "
      f"new/old per round {[round(r, 2) for r in ratios]}  median {statistics.median(ratios):.2f}")
PY
