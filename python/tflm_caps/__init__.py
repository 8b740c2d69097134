"""tflm-caps: int8 Capsule Networks for TensorFlow Lite Micro.

Sub-modules are imported lazily so that ``import tflm_caps`` (and the CLI's
``--help``) does not pay for importing TensorFlow.
"""
import importlib

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY = {
    "convert": ("tflm_caps.converter", "convert"),
    "validate": ("tflm_caps.validation", "validate"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in ("layers", "models", "data", "train", "reference", "runtime", "converter",
                "native", "metadata", "export", "validation", "tflite", "ops_contract"):
        return importlib.import_module("tflm_caps." + name)
    raise AttributeError(f"module 'tflm_caps' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
