"""Cores the profiler builds for, and where each runs under QEMU.

The QEMU board, its code and data memories come from the bare-metal
harness's board table (sources.harness_boards); this table adds what a
TFLM build needs: the ``TARGET_ARCH`` of TFLM's ``cortex_m_generic``
target, and a large memory for the model and the tensor arena (a model such
as sabour2017-mnist, 6.8 MB, does not fit the 4 MB code memory).
"""
import dataclasses

_MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class ProfileTarget:
    name: str            # --target value, also the harness board table key
    tflm_arch: str       # TFLM TARGET_ARCH (cortex_m_generic)
    bulk: tuple          # (origin, size): memory for the model array and the arena
    bulk_note: str


TARGETS = {
    "cortex-m4": ProfileTarget("cortex-m4", "cortex-m4+fp", (0x21000000, 16 * _MB),
                               "MPS2 AN386 PSRAM"),
    "cortex-m7": ProfileTarget("cortex-m7", "cortex-m7+fp", (0x60000000, 16 * _MB),
                               "MPS2 AN500 PSRAM"),
    "cortex-m33": ProfileTarget("cortex-m33", "cortex-m33", (0x80000000, 16 * _MB),
                                "MPS2 AN505 PSRAM"),
    "cortex-m55": ProfileTarget("cortex-m55", "cortex-m55", (0x70000000, 16 * _MB),
                                "MPS3 AN547 DDR (secure alias)"),
}


def get_target(name):
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}") \
            from None
