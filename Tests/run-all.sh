#!/usr/bin/env bash
# Every test Moongate has: the Swift suites (unit and real-socket integration), the bundled scripts
# driven by Python's `websockets` client, and Autobahn's protocol cases against /echo (via kosoku).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check websockets pytest kosoku 2>&1 | grep -v "Running pip as the 'root' user" || true

swift build --build-tests
swift test --skip-build

export MOONGATE_BIN="$PWD/.build/debug/moongate"
python3 -m pytest -q Tests/acceptance

bash Tests/autobahn.sh
