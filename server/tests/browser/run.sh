#!/usr/bin/env bash
# Browser tests of the web pages: headless Chromium from Debian, playwright-core from npm
# (into target/browser, ignored by git), node's test runner. Installs what is missing,
# once. Expects the debug binaries (`cargo build --workspace --bins`), or
# DIEMDANH_BIN_DIR. Screenshots and the downloaded file go to target/browser-artifacts.
# The last line is "N passed, M failed" for CI's summary.
set -euo pipefail
cd "$(dirname "$0")/../../.."
if ! command -v chromium >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
command -v node >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
if [ ! -d target/browser/node_modules/playwright-core ]; then
    mkdir -p target/browser
    (cd target/browser && npm install --no-audit --no-fund --no-progress playwright-core@1)
fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
node --test --test-reporter=tap server/tests/browser/*.test.mjs 2>&1 | tee "$out" || status=$?
pass=$(awk '/^# pass / { print $3 }' "$out" | tail -1)
fail=$(awk '/^# fail / { print $3 }' "$out" | tail -1)
pass=${pass:-0}
fail=${fail:-0}
# A runner that died before its summary counts as a failure.
if [ "$status" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
