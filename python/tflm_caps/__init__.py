"""tflm-caps: int8 Capsule Networks for TensorFlow Lite Micro.

Sub-modules are imported lazily so that ``import tflm_caps`` (and the CLI's
``--help``) does not pay for importing TensorFlow.
"""
import importlib
import os

__version__ = "0.1.0"

# Quiet by default (docs/architecture.md): TensorFlow's C++ INFO and WARNING
# lines, unless the user set the level or TensorFlow was imported first.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# public name -> (module, attribute)
_LAZY = {
    "convert": ("tflm_caps.converter", "convert"),
    "validate": ("tflm_caps.validation", "validate"),
    "prune": ("tflm_caps.pruning", "prune"),
}


def ops_sources():
    """Directory of the operator sources (``tflm_caps_ops``: C99 kernels,
    TFLM glue, ``Makefile_internal.inc``, ``CMakeLists.txt``).

    An installed package carries a copy (``tflm_caps/ops_src``, copied by
    setup.py at build time); an editable install or a source tree on
    ``sys.path`` uses the checkout's ``tflm_caps_ops``."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for candidate in (here / "ops_src", here.parents[1] / "tflm_caps_ops"):
        if (candidate / "include" / "tflm_caps").is_dir():
            return candidate
    raise FileNotFoundError(f"operator sources not found next to {here}: reinstall tflm-caps")


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in ("layers", "models", "data", "train", "reference", "runtime", "converter",
                "native", "metadata", "export", "validation", "baremetal", "tflite",
                "ops_contract", "pruning"):
        return importlib.import_module("tflm_caps." + name)
    raise AttributeError(f"module 'tflm_caps' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
