#!/usr/bin/env bash
# Headless Chromium for tests/browser: Debian's `chromium` package, driven by Playwright
# (Playwright's own browser download needs a CDN; the distribution's package does not).
# Never fails the caller: where it cannot be installed, tests/browser skip and say why.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "note: chromium is not installed and apt-get needs root: tests/browser will be skipped"
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get here to install chromium: tests/browser will be skipped"
    exit 0
fi
echo "installing chromium for the browser tests (apt-get)..."
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium \
        fonts-dejavu-core >/dev/null; }; then
    echo "warning: could not install chromium: tests/browser will be skipped"
fi
exit 0
