"""Where the profiler finds this project's C sources.

The operators (``tflm_caps_ops/``, shipped in the package as
``tflm_caps.ops_sources()``) and the bare-metal harness (startup, SysTick
counter, linker script: ``tflm_caps.baremetal``'s package data, board table
``tflm_caps.baremetal.targets``).  Each location is named by exactly one
function here; ``--source-root`` points the operators at another checkout
(for example one with local kernel changes).
"""
from pathlib import Path


class SourcesNotFoundError(FileNotFoundError):
    """The project's C sources are not where the profiler looks."""


def ops_dir(root=None):
    """``tflm_caps_ops/``: kernels, TFLM glue and Makefile_internal.inc."""
    if root is None:
        from tflm_caps import ops_sources
        return ops_sources()
    ops = Path(root).expanduser() / "tflm_caps_ops"
    if not (ops / "Makefile_internal.inc").is_file():
        raise SourcesNotFoundError(
            f"--source-root {root}: no tflm_caps_ops/Makefile_internal.inc there; point it at "
            "a checkout of the repository or leave it out to use the installed sources")
    return ops.resolve()


def harness_dir(root=None):
    """The bare-metal harness: ``common/mcu_harness.h`` and
    ``cortex_m/{startup_cortex_m.c,counter_systick.c,cortex_m.ld}``."""
    from tflm_caps.baremetal.build import HARNESS_DIR
    return HARNESS_DIR


def harness_boards(root=None):
    """The board table module (``TARGETS``: QEMU board, memory map)."""
    from tflm_caps.baremetal import targets
    return targets
