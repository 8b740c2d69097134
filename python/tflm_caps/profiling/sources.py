"""Where the profiler finds this project's C sources.

The operators (``tflm_caps_ops/``) and the bare-metal harness (startup,
SysTick counter, linker script, board table) are read from a source
checkout.  Each location is named by exactly one function here so that a
change of layout is a one-line change.
"""
import importlib.util
import os
import sys
from pathlib import Path

SOURCE_ROOT_ENV = "TFLM_CAPS_SOURCE_ROOT"


class SourcesNotFoundError(FileNotFoundError):
    """The project's C sources are not where the profiler looks."""


def source_root(root=None):
    """The checkout holding ``tflm_caps_ops/`` and the harness: `root`, else
    $TFLM_CAPS_SOURCE_ROOT, else the repository of an editable install,
    else the current directory."""
    candidates = [root] if root else []
    if os.environ.get(SOURCE_ROOT_ENV):
        candidates.append(os.environ[SOURCE_ROOT_ENV])
    if not root:
        candidates += [Path(__file__).resolve().parents[3], Path.cwd()]
    for cand in candidates:
        cand = Path(cand).expanduser()
        if (cand / "tflm_caps_ops" / "Makefile_internal.inc").is_file():
            return cand.resolve()
    raise SourcesNotFoundError(
        f"tflm-caps C sources not found (looked for tflm_caps_ops/Makefile_internal.inc in "
        f"{', '.join(str(c) for c in candidates)}); run from a checkout of the repository or "
        f"pass --source-root DIR (or set {SOURCE_ROOT_ENV})")


def ops_dir(root=None):
    """``tflm_caps_ops/``: kernels, TFLM glue and Makefile_internal.inc."""
    return source_root(root) / "tflm_caps_ops"


def harness_dir(root=None):
    """The bare-metal harness: ``common/mcu_harness.h``,
    ``cortex_m/{startup_cortex_m.c,counter_systick.c,cortex_m.ld}`` and the
    board table ``mcu_build.py``."""
    return source_root(root) / "firmware"


def harness_boards(root=None):
    """The harness's board table module (``TARGETS``: QEMU board, memory map)."""
    path = harness_dir(root) / "mcu_build.py"
    name = "tflm_caps_profiling_mcu_build"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
