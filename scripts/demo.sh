#!/usr/bin/env bash
# Sets up a virtualenv and runs the main job: the demo relay.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e .
rxsinks demo "$@"
