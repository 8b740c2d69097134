"""The bare-metal harness: instruction counters, exit codes, faults and
timeouts on every emulated target (tflm_caps.baremetal)."""
import pytest
from support.toolchains import require_target

from tflm_caps.baremetal import McuError, build, qemu
from tflm_caps.baremetal.targets import TARGETS as ALL_TARGETS
from tflm_caps.baremetal.targets import counts_to_instructions, get_target

pytestmark = pytest.mark.emulated

TARGETS = sorted(ALL_TARGETS)

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


def build_program(tmp_path, target, *defines):
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    elf = tmp_path / f"{target}.elf"
    return build.build(target, [src], elf, defines=["SPIN=500000", "EXIT_CODE=0", *defines])


@pytest.mark.parametrize("target", TARGETS)
def test_counter_counts_instructions(tmp_path, target):
    require_target(target)
    result = qemu.run(target, build_program(tmp_path, target, "EXIT_CODE=7"), timeout=60)
    assert result.returncode == 7, result.output  # exit code passes through semihosting
    (row,) = result.records("COUNT")
    spin = counts_to_instructions(target, row["spin"])
    resolution = get_target(target).instructions_per_count
    # 2 instructions per iteration, plus the counter read and the call
    assert abs(spin - 2 * 500000) <= resolution + 64, (spin, resolution)
    if target == "rv32imac":
        assert resolution == 1.0 and row["spin"] - 2 * 500000 < 64


@pytest.mark.parametrize("target", TARGETS)
def test_fault_ends_run_with_error(tmp_path, target):
    require_target(target)
    result = qemu.run(target, build_program(tmp_path, target, "FAULT"), timeout=30)
    assert result.returncode != 0
    assert "COUNT" in result.output  # ran up to the fault
    assert ("MCU FAULT" in result.output) or ("fault" in result.output.lower())


def test_hang_is_stopped_by_the_timeout(tmp_path):
    require_target("cortex-m7")
    elf = build_program(tmp_path, "cortex-m7", "HANG")
    with pytest.raises(McuError, match="did not finish within"):
        qemu.run("cortex-m7", elf, timeout=3)


def test_build_errors_name_the_file(tmp_path):
    require_target("cortex-m4")
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undefined_symbol; }\n")
    with pytest.raises(McuError, match="bad.c"):
        build.build("cortex-m4", [bad], tmp_path / "bad.elf")


def test_unknown_target_and_backend_are_rejected():
    with pytest.raises(ValueError, match="unknown MCU target"):
        get_target("cortex-m99")
    with pytest.raises(ValueError, match="unknown backend"):
        build.kernel_sources("avx512")


def test_backend_sources_replace_portable_files_by_name():
    portable = {p.name for p in build.kernel_sources("portable")}
    for backend in ("cortex_m", "riscv"):
        paths = build.kernel_sources(backend)
        names = [p.name for p in paths]
        assert len(names) == len(set(names)), names  # no file twice
        own = {p.name for p in paths if p.parent.name == backend}
        assert own  # the backend provides files
        # every portable kernel is either replaced or kept
        assert portable <= set(names)
        assert all(p.parent.name != "portable" for p in paths if p.name in own)


def test_parse_records():
    out = "noise\nCALL index=1 op=squash count=42 first=-1 PASS\nCALL index=2 op=x\n"
    assert qemu.parse_records(out, "CALL") == [
        {"index": 1, "op": "squash", "count": 42, "first": -1},
        {"index": 2, "op": "x"}]
