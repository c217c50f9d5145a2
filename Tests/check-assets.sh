#!/usr/bin/env bash
# Syntax checks for the code Moongate ships that the Swift compiler never reads: `luac -p` on every
# Lua file (the prelude, the bundled scripts, the test pages' scripts) and `node --check` on every
# JavaScript file and on each inline <script> of the HTML pages. Ends with "N assets passed".
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
checked=0

while IFS= read -r -d '' file; do
  luac5.4 -p -o /dev/null "$file"
  checked=$((checked + 1))
done < <(find Sources scripts docs Tests -name '*.lua' -not -path '*/.build*' -print0)

while IFS= read -r -d '' file; do
  node --check "$file"
  checked=$((checked + 1))
done < <(find Sources docs Tests -name '*.js' -not -path '*/.build*' -print0)

while IFS= read -r -d '' page; do
  # Each inline script (no src attribute) as a file of its own, with its page's name in errors.
  python3 - "$page" "$work" <<'PY'
import pathlib, re, sys
page, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
scripts = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", page.read_text(), re.S)
for index, body in enumerate(scripts):
    (work / f"{page.stem}.{index}.js").write_text(body)
PY
  for script in "$work"/*.js; do
    [ -e "$script" ] || continue
    node --check "$script" || { echo "in $page"; exit 1; }
    rm "$script"
  done
  checked=$((checked + 1))
done < <(find Sources docs Tests -name '*.html' -not -path '*/.build*' -print0)

echo "$checked assets passed"
