#!/usr/bin/env bash
# The JSON codec against lua-cjson (the codec it replaced), same interpreter, same values:
# bash Tests/bench/json_codec.sh [ROUNDS]. Needs Debian's lua5.4, liblua5.4-dev and lua-cjson.
set -euo pipefail
cd "$(dirname "$0")/../.."
for package in lua5.4 liblua5.4-dev lua-cjson; do
  dpkg -s "$package" >/dev/null 2>&1 || { echo "apt-get install $package first" >&2; exit 1; }
done
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
gcc -O2 -shared -fPIC -I/usr/include/lua5.4 -ISources/LuaJSON/include -o "$build/moongate_json.so" Sources/LuaJSON/json.c
MOONGATE_JSON_SO_DIR="$build" lua5.4 Tests/bench/json_codec.lua "${1:-3}"
