#!/usr/bin/env bash
# The console's browser tests (tests/console) drive Debian's Chromium through Playwright's wheel,
# which brings its own driver: nothing is downloaded at test time. Installs chromium once.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser: no chromium and no apt-get; install Chromium and put it on PATH as 'chromium'" >&2
    exit 1
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    SUDO="sudo"
fi
echo "browser: installing Debian's chromium for the console tests"
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
