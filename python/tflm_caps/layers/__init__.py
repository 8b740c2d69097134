"""Keras 3 capsule layers, losses and the capsule math they share.

Importing this package registers every layer and loss with Keras
serialization (package ``tflm_caps``), so ``.keras`` files load without a
``custom_objects`` argument.  Requires TensorFlow (the Keras backend used).
"""
from tflm_caps.layers import capsule_math
from tflm_caps.layers.capsule_math import efficient_squash, squash
from tflm_caps.layers.capsules import (CapsuleInitializer, ClassCaps, Decoder, Length, Mask,
                                       PrimaryCaps, Squash)
from tflm_caps.layers.efficient import DepthwisePrimaryCaps, EfficientSquash, SelfAttentionCaps
from tflm_caps.layers.losses import MarginLoss, SumSquaredError, margin_loss, sum_squared_error

__all__ = [
    "capsule_math", "squash", "Squash", "PrimaryCaps", "ClassCaps", "CapsuleInitializer",
    "Length", "Mask", "Decoder", "MarginLoss", "SumSquaredError", "margin_loss",
    "sum_squared_error", "efficient_squash", "EfficientSquash", "DepthwisePrimaryCaps",
    "SelfAttentionCaps",
]
