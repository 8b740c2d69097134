"""The bare-metal harness: instruction counters, exit codes, faults and
timeouts on every emulated target (firmware/mcu_build.py)."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "firmware"))
import mcu_build  # noqa: E402

pytestmark = pytest.mark.emulated

TARGETS = sorted(mcu_build.TARGETS)

# A counted loop of exactly 2 instructions per iteration, then a fault or an
# exit code chosen at compile time.
PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
#include "mcu_harness.h"

static void spin(uint32_t n)
{
#if defined(__riscv)
    __asm__ volatile("1: addi %0, %0, -1\n\tbnez %0, 1b" : "+r"(n));
#else
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
#endif
}

int main(void)
{
    mcu_counter_start();
    const uint64_t a = mcu_counter_read();
    const uint64_t b = mcu_counter_read();
    spin(SPIN);
    const uint64_t c = mcu_counter_read();
    printf("COUNT empty=%llu spin=%llu\n", (unsigned long long)(b - a),
           (unsigned long long)(c - b));
#if defined(FAULT)
#if defined(__riscv)
    __asm__ volatile(".word 0");  /* illegal instruction */
#else
    __asm__ volatile("udf #0");   /* undefined instruction: UsageFault/HardFault */
#endif
#endif
#if defined(HANG)
    for (;;) {
    }
#endif
    return EXIT_CODE;
}
"""


def require(target):
    missing = mcu_build.missing_tools(target)
    if missing:
        pytest.skip(f"{target}: toolchain/emulator not installed ({', '.join(missing)}); "
                    "scripts/install.sh installs them")


def build(tmp_path, target, *defines):
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    elf = tmp_path / f"{target}.elf"
    return mcu_build.build(target, [src], elf, defines=["SPIN=500000", "EXIT_CODE=0", *defines])


@pytest.mark.parametrize("target", TARGETS)
def test_counter_counts_instructions(tmp_path, target):
    require(target)
    result = mcu_build.run(target, build(tmp_path, target, "EXIT_CODE=7"), timeout=60)
    assert result.returncode == 7, result.output  # exit code passes through semihosting
    (row,) = result.records("COUNT")
    spin = mcu_build.counts_to_instructions(target, row["spin"])
    resolution = mcu_build.get_target(target).counter_resolution
    # 2 instructions per iteration, plus the counter read and the call
    assert abs(spin - 2 * 500000) <= resolution + 64, (spin, resolution)
    if target == "rv32imac":
        assert resolution == 1.0 and row["spin"] - 2 * 500000 < 64


@pytest.mark.parametrize("target", TARGETS)
def test_fault_ends_run_with_error(tmp_path, target):
    require(target)
    result = mcu_build.run(target, build(tmp_path, target, "FAULT"), timeout=30)
    assert result.returncode != 0
    assert "COUNT" in result.output  # ran up to the fault
    assert ("MCU FAULT" in result.output) or ("fault" in result.output.lower())


def test_hang_is_stopped_by_the_timeout(tmp_path):
    require("cortex-m7")
    elf = build(tmp_path, "cortex-m7", "HANG")
    with pytest.raises(mcu_build.McuError, match="did not finish within"):
        mcu_build.run("cortex-m7", elf, timeout=3)


def test_build_errors_name_the_file(tmp_path):
    require("cortex-m4")
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undefined_symbol; }\n")
    with pytest.raises(mcu_build.McuError, match="bad.c"):
        mcu_build.build("cortex-m4", [bad], tmp_path / "bad.elf")


def test_unknown_target_and_backend_are_rejected():
    with pytest.raises(ValueError, match="unknown MCU target"):
        mcu_build.get_target("cortex-m99")
    with pytest.raises(ValueError, match="unknown backend"):
        mcu_build.kernel_sources("avx512")


def test_backend_sources_replace_portable_files_by_name():
    portable = {p.name for p in mcu_build.kernel_sources("portable")}
    for backend in ("cortex_m", "riscv"):
        paths = mcu_build.kernel_sources(backend)
        names = [p.name for p in paths]
        assert len(names) == len(set(names)), names  # no file twice
        own = {p.name for p in paths if p.parent.name == backend}
        assert own  # the backend provides files
        # every portable kernel is either replaced or kept
        assert portable <= set(names)
        assert all(p.parent.name != "portable" for p in paths if p.name in own)


def test_parse_records():
    out = "noise\nCALL index=1 op=squash count=42 first=-1 PASS\nCALL index=2 op=x\n"
    assert mcu_build.parse_records(out, "CALL") == [
        {"index": 1, "op": "squash", "count": 42, "first": -1},
        {"index": 2, "op": "x"}]
