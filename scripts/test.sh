#!/usr/bin/env bash
# Set up a virtual environment with every dev extra, then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PACKSERVE_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3.11 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[dev]'
./scripts/install-chromium.sh   # headless browser for tests/browser (Debian's chromium)
ruff check src tests benchmarks examples
mypy
python -m pytest "$@"
