#!/usr/bin/env bash
# Sets up a virtualenv with every dev tool and runs every check: tests, ruff, mypy --strict.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[dev]'
ruff check .
ruff format --check rxsinks tests benchmarks
mypy --strict rxsinks
python -m pytest -q -p no:cacheprovider
