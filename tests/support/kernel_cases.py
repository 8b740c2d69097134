"""Stress cases for the kernel tests (the benchmark's realistic cases are
in tflm_caps.baremetal.cases)."""
import math

import numpy as np

from tflm_caps.reference import quant as q


def random_class_caps(rng, n_in, dim_in, n_out, dim_out, routings=3, per_capsule=True,
                      weight_bits=8):
    """Uniform random int8 data with log-uniform random scales: saturation,
    odd multipliers, logits far apart (couplings of exactly 2^15).
    weight_bits 4: W uniform over every int4 code, -8 included."""
    def logu(lo, hi, size=None):
        return np.exp(rng.uniform(math.log(lo), math.log(hi), size=size))

    quant = q.ClassCapsQuant(float(logu(1e-3, 0.1)), int(rng.integers(-128, 128)),
                             logu(1e-3, 1e-1, n_out if per_capsule else 1),
                             float(logu(1e-3, 1.0)), logu(1e-4, 0.4, routings),
                             logu(1e-3, 2.0, routings - 1))
    u = rng.integers(-128, 128, size=(n_in, dim_in)).astype(np.int8)
    lim = 1 << (weight_bits - 1)
    W = rng.integers(-lim, lim, size=(n_in, n_out, dim_out, dim_in)).astype(np.int8)
    return u, W, q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)


def random_self_attention(rng, n_in, dim_in, n_out, dim_out, per_capsule=True, bias_kind=1):
    """Uniform random int8 u and W, log-uniform random scales and a random
    Q15 bias (0: zero, 1: small, 2: beyond 2^15 so couplings are shifted,
    3: up to the limit): saturated votes, sums and couplings."""
    def logu(lo, hi, size=None):
        return np.exp(rng.uniform(math.log(lo), math.log(hi), size=size))

    quant = q.SelfAttentionQuant(float(logu(1e-3, 0.1)), int(rng.integers(-128, 128)),
                                 logu(1e-3, 1e-1, n_out if per_capsule else 1),
                                 float(logu(1e-3, 2.0)), float(logu(1e-3, 2.0)))
    limit = (0, 1 << 13, 1 << 16, q.MAX_ATTENTION_BIAS)[bias_kind]
    bias = rng.integers(-limit, limit + 1, (n_in, n_out)).astype(np.int32)
    u = rng.integers(-128, 128, size=(n_in, dim_in)).astype(np.int8)
    W = rng.integers(-128, 128, size=(n_in, n_out, dim_out, dim_in)).astype(np.int8)
    return u, W, bias, q.self_attention_params((n_in, dim_in, n_out, dim_out), quant, bias)
