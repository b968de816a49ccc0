#!/usr/bin/env bash
# Set up a virtual environment and run the end-to-end demo on a built-in example model.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PACKSERVE_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3.11 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[dev]'
packserve demo run "$@"
