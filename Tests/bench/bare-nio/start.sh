#!/usr/bin/env bash
# usage: start.sh PORT -- builds the bare SwiftNIO peer in release mode (only when needed), then execs it.
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
[[ ${1:-} =~ ^[0-9]+$ ]] || { echo "usage: $0 PORT" >&2; exit 2; }
bin=$dir/.build/release/bare-nio
if [ ! -x "$bin" ] || [ "$dir/Sources/bare-nio/main.swift" -nt "$bin" ] || [ "$dir/Package.swift" -nt "$bin" ]; then
  echo "[bare-nio] swift build -c release" >&2
  swift build -c release --package-path "$dir" >&2
  touch "$bin" # an unchanged binary is not relinked: mark it current
fi
exec "$bin" "$1"
