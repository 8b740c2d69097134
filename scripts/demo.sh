#!/usr/bin/env bash
# Install everything, then run the main job end to end on the bundled data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
mkdir -p out
tflm-caps demo --workdir out --report out/report.json "$@"
