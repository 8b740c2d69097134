"""Keras 3 capsule layers, losses and the capsule math they share.

Importing this package registers every layer and loss with Keras
serialization (package ``tflm_caps``), so ``.keras`` files load without a
``custom_objects`` argument.  Requires TensorFlow (the Keras backend used).
"""
from tflm_caps.layers import ops
from tflm_caps.layers.capsules import (CapsuleInitializer, ClassCaps, Decoder, Length, Mask,
                                       PrimaryCaps, Squash)
from tflm_caps.layers.losses import MarginLoss, SumSquaredError, margin_loss
from tflm_caps.layers.ops import squash

__all__ = [
    "ops", "squash", "Squash", "PrimaryCaps", "ClassCaps", "CapsuleInitializer", "Length",
    "Mask", "Decoder", "MarginLoss", "SumSquaredError", "margin_loss",
]
