"""TFLM host runtime: run converted models in the tflite_micro wheel with
the tflm-caps operators, size the tensor arena, check model files.

Importing this package is light; TFLM and the native library are loaded
when a runner is created.
"""
from tflm_caps.runtime._library import PROVIDED_OPS, REGISTERER
from tflm_caps.runtime.arena import find_min_arena_size
from tflm_caps.runtime.runner import (MIN_SAFE_ARENA, ArenaTooSmallError, TFLMError, TFLMRunner,
                                      default_arena_size, quantize_like_tflite)
# The model check is tflm_caps.tflite's; the runner raises its ModelFormatError.
from tflm_caps.tflite.reader import ModelFormatError, ModelInfo, check_model

__all__ = ["TFLMRunner", "find_min_arena_size", "check_model", "ModelInfo", "ModelFormatError",
           "TFLMError", "ArenaTooSmallError", "MIN_SAFE_ARENA", "REGISTERER", "PROVIDED_OPS",
           "default_arena_size", "quantize_like_tflite"]
