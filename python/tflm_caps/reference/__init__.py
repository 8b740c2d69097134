"""Numpy reference of the capsule kernels (no TensorFlow).

- ``quant``: quantize_multiplier, scale choice, the integer params of each
  op (single source for the converter), ClassCapsQuant, calibration;
- ``int8``: the integer kernels, bit-exact with tflm_caps_ops (``_s4``: packed
  int4 class-capsule weights);
- ``float_ref``: float reference with routing intermediates;
- ``fixedpoint``: the shared fixed-point primitives.

Arithmetic contract: docs/quantization.md.
"""
from tflm_caps.reference import fixedpoint, float_ref, int8, quant  # noqa: F401
from tflm_caps.reference.float_ref import class_caps_float, self_attention_float  # noqa: F401
from tflm_caps.reference.int8 import (class_caps_s4, class_caps_s8,  # noqa: F401
                                      dynamic_routing_s8, efficient_squash_s8, length_s8,
                                      predictions_s4, predictions_s8, self_attention_s8,
                                      squash_s8)
from tflm_caps.reference.quant import (ClassCapsDims, ClassCapsParams, ClassCapsQuant,  # noqa: F401
                                       LengthParams, PredictionsParams, RoutingParams,
                                       SquashParams, calibrate_class_caps, class_caps_params,
                                       length_params, pack_int4, predictions_params,
                                       quantize_multiplier, routing_params, squash_params,
                                       unpack_int4)
from tflm_caps.reference.quant import (EfficientSquashParams, SelfAttentionParams,  # noqa: F401
                                       SelfAttentionQuant, calibrate_self_attention,
                                       efficient_squash_params, quantize_attention_bias,
                                       self_attention_params)
