#!/usr/bin/env bash
# Every test Moongate has: syntax checks of the Lua and JavaScript it ships, the Swift suites (unit and real-socket integration), the acceptance
# tests driving the built binary with Python's `websockets` client and headless Chromium (Selenium)
# (the cluster tests on a throwaway PostgreSQL they start themselves),
# and Autobahn's protocol cases against /echo (via kosoku) on the release build. Ends with one line: "moongate: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-deps --tests
python3 -m pip install --quiet --disable-pip-version-check websockets pytest kosoku selenium hypothesis 2>&1 \
  | grep -v "Running pip as the 'root' user" || true

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

bash Tests/check-assets.sh 2>&1 | tee "$logs/assets.log"

swift build --build-tests
swift test --skip-build --disable-swift-testing 2>&1 | tee "$logs/swift.log"

export MOONGATE_BIN="$PWD/.build/debug/moongate"
python3 -m pytest -q Tests/acceptance 2>&1 | tee "$logs/pytest.log"

# Autobahn against the release build, the one users run; the unit tests above stay in debug.
swift build -c release --product moongate
MOONGATE_BIN="$PWD/.build/release/moongate" bash Tests/autobahn.sh 2>&1 | tee "$logs/autobahn.log"

swift_passed=$(sed -n 's/.*Executed \([0-9]*\) tests, with 0 failures.*/\1/p' "$logs/swift.log" | tail -n 1)
pytest_passed=$(sed -n 's/^\([0-9]*\) passed.*/\1/p' "$logs/pytest.log" | tail -n 1)
autobahn_passed=$(sed -n 's/^\([0-9]*\) cases passed.*/\1/p' "$logs/autobahn.log" | tail -n 1)
assets_passed=$(sed -n 's/^\([0-9]*\) assets passed.*/\1/p' "$logs/assets.log" | tail -n 1)
echo "assets: ${assets_passed:-0}, swift: ${swift_passed:-0}, acceptance: ${pytest_passed:-0}, autobahn cases: ${autobahn_passed:-0}"
echo "moongate: $(( ${assets_passed:-0} + ${swift_passed:-0} + ${pytest_passed:-0} + ${autobahn_passed:-0} )) passed, 0 failed"
