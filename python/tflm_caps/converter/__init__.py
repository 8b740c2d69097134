"""Keras CapsNet -> fully int8 .tflite with capsule layers as TFLite CUSTOM ops.

``convert(model, representative_dataset, ...)`` returns the int8 model
bytes; ``convert_detailed`` also returns the float model of the same graph
and a ``ConversionSummary``; ``convert_float`` gives just the float model.
``kernels.make_interpreter`` runs our models in ``tf.lite`` with Python
capsule kernels; ``tflm_caps.tflite.summarize`` describes any .tflite.  See
docs/converter.md.
"""
from tflm_caps.converter.api import (DEFAULT_NUM_SAMPLES, IO_DTYPES, WEIGHT_GRANULARITIES,
                                     ConversionResult, convert, convert_detailed, convert_float,
                                     load_keras_model)
from tflm_caps.converter.errors import ConversionError
from tflm_caps.converter.summary import ConversionSummary

__all__ = ["convert", "convert_detailed", "convert_float", "ConversionError",
           "ConversionResult", "ConversionSummary", "DEFAULT_NUM_SAMPLES", "IO_DTYPES",
           "WEIGHT_GRANULARITIES", "load_keras_model"]
