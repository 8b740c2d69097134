#!/usr/bin/env bash
# Install everything tflm-caps needs on a fresh Debian machine (run as root):
# system packages with --no-install-recommends, then the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  gcc g++ libc6-dev                 # builds the host kernel library (pip install .)
  libusb-1.0-0                      # linked by tflite-support's native modules
  valgrind                          # host instruction counts (benchmarks)
  clang libclang-rt-dev             # libFuzzer harnesses with ASan/UBSan (tests/fuzz)
  make cmake                        # firmware drop-in checks (TFLM make fragment, CMake)
  gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib
  qemu-system-arm                   # Cortex-M4/M7/M55 system boards
  gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf
  qemu-system-misc                  # RISC-V virt board
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install --quiet --disable-pip-version-check ".[test]"
