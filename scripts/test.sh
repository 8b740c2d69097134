#!/usr/bin/env bash
# Install everything, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Run from tests/ so the installed package (not the source tree) is imported.
python3 -m pytest -q "$@"
