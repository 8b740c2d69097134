#!/usr/bin/env bash
# Install everything, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# install.sh installed every toolchain and emulator: a test that finds one
# missing fails instead of skipping (TFLM_CAPS_REQUIRE_TOOLCHAINS=0 allows skips).
export TFLM_CAPS_REQUIRE_TOOLCHAINS="${TFLM_CAPS_REQUIRE_TOOLCHAINS:-1}"
# The tests import the installed package (pip install . above), not python/.
python3 -m pytest -q "$@"
