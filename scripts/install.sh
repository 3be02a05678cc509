#!/usr/bin/env bash
# Create .venv and install the project's Python dependencies (CPU torch from requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --disable-pip-version-check -q -r requirements-dev.txt
