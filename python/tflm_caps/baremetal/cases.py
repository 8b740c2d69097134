"""Kernel cases for the bare-metal runs: the published CapsNet shapes,
calibrated layers whose routing really routes, random squash and length
inputs.

A case is a tuple of the CAPV format (``tflm_caps.baremetal.vectors``):
``("squash"|"length"|"efficient_squash", x, params)``,
``("class_caps", u, W, params, flags)`` or
``("self_attention", u, W, bias, params)``.
"""
import math

import numpy as np

from tflm_caps.reference import float_ref
from tflm_caps.reference import quant as q


# Published CapsNet class-capsule layers: (n_in, dim_in, n_out, dim_out).
SHAPES = {
    "costa2022-mnist": (1024, 4, 10, 6),
    "sabour2017-mnist": (1152, 8, 10, 16),
}

# Efficient-CapsNet (mazzia2021-mnist): the self-attention capsule layer
# (n_in, dim_in, n_out, dim_out) and its primary capsules' squash (n, dim).
ATTENTION_SHAPES = {"mazzia2021-mnist": (16, 8, 10, 16)}
EFFICIENT_SQUASH_SHAPES = {"mazzia2021-mnist": (16, 8)}


def calibrated_class_caps(rng, n_in, dim_in, n_out, dim_out, routings=3, per_capsule=True,
                          batch=2, weight_bits=8):
    """(u int8 [n_in, dim_in], W int8, ClassCapsParams) of a layer whose
    float predictions agree on one class, quantized with scales calibrated
    on a small batch: a routing that actually routes.  weight_bits 4: W
    values in [-7, 7] (pack them: vectors.F_INT4)."""
    u = float_ref.squash(rng.normal(size=(batch, n_in, dim_in)))
    W = rng.normal(size=(n_in, n_out, dim_out, dim_in)) / math.sqrt(dim_in)
    target = rng.normal(size=dim_out)
    W[:, 0] += 0.5 * np.einsum("d,k->dk", target, np.ones(dim_in)) / dim_in
    quant = q.calibrate_class_caps(u, W, routings, 1.0 / 128, 0, per_capsule=per_capsule,
                                   weight_bits=weight_bits)
    Wq = q.quantize_weights(W, quant.weight_scales, weight_bits)
    uq = q.quantize(u[0], 1.0 / 128)
    return uq, Wq, q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)


def squash_case(rng, n_caps, dim, scale=0.05, zp=3):
    x = rng.integers(-128, 128, size=(n_caps, dim)).astype(np.int8)
    return ("squash", x, q.squash_params(scale, zp))


def length_case(rng, n_caps, dim, scale=1.0 / 128, zp=0):
    x = rng.integers(-128, 128, size=(n_caps, dim)).astype(np.int8)
    return ("length", x, q.length_params(scale, zp))


def calibrated_self_attention(rng, n_in, dim_in, n_out, dim_out, per_capsule=True, batch=2):
    """(u int8, W int8, bias int32 Q15, SelfAttentionParams) of a layer whose
    float votes agree on output capsule 0, with scales calibrated on a small
    batch (uneven couplings, a learned bias of realistic size)."""
    u = float_ref.efficient_squash(rng.normal(size=(batch, n_in, dim_in)) * 2.0)
    W = rng.normal(size=(n_in, n_out, dim_out, dim_in)) / math.sqrt(dim_in)
    W[:, 0] += 0.5 * np.einsum("d,k->dk", rng.normal(size=dim_out), np.ones(dim_in)) / dim_in
    b = rng.normal(0, 0.2, (n_in, n_out))
    quant = q.calibrate_self_attention(u, W, b, 1.0 / 128, 0, per_capsule=per_capsule)
    bias = q.quantize_attention_bias(b)
    params = q.self_attention_params((n_in, dim_in, n_out, dim_out), quant, bias)
    return q.quantize(u[0], 1.0 / 128), q.quantize_weights(W, quant.weight_scales), bias, params


def efficient_squash_case(rng, n_caps, dim, scale=0.05, zp=3):
    x = rng.integers(-128, 128, size=(n_caps, dim)).astype(np.int8)
    return ("efficient_squash", x, q.efficient_squash_params(scale, zp))
