"""The one place that reads and writes ``.tflite`` files.

- ``tables``: file identifier, schema version, tensor type and builtin
  operator tables (no TensorFlow);
- ``reader``: bounds-checked walk of a flatbuffer before TFLM sees it
  (``check_model`` -> ``ModelInfo``; ``ModelFormatError``);
- ``summary``: ``summarize`` -> ``ModelSummary`` (operators, I/O, types, sizes),
  ``weights_by_layer`` (constant bytes per operator and per bit width);
- ``model``: ``load`` / ``dump`` of the schema's object API (``ModelT``),
  16-byte aligned buffers, operator and tensor names;
- ``graph``: editing (rewire, add, remove, ``prune``, ``strip_metadata``).

Importing this package is light: the schema module of the tflite-micro wheel
is imported when a model is loaded or an operator named.
"""
from tflm_caps.tflite.graph import prune, strip_metadata
from tflm_caps.tflite.model import dump, load
from tflm_caps.tflite.reader import (ModelFormatError, ModelInfo, OperatorInfo, TensorInfo,
                                     check_identifier, check_model)
from tflm_caps.tflite.summary import (LayerWeights, ModelSummary, TensorSummary, summarize,
                                     weights_by_layer)

__all__ = ["check_model", "check_identifier", "ModelInfo", "TensorInfo", "OperatorInfo",
           "ModelFormatError", "summarize", "ModelSummary", "TensorSummary", "load", "dump",
           "prune", "strip_metadata", "weights_by_layer", "LayerWeights"]
