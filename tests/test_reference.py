"""The numpy reference against independent math: exact rational arithmetic
for the fixed-point primitives, textbook loops / TensorFlow for the float
reference, and validation of the quantization description."""
import math
from fractions import Fraction

import numpy as np
import pytest

from tflm_caps.baremetal import vectors as V
from tflm_caps.reference import fixedpoint as fp
from tflm_caps.reference import float_ref
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q


def _round_half_away(fr):
    """Round a Fraction to the nearest integer, ties away from zero."""
    mag = abs(fr)
    n = math.floor(mag + Fraction(1, 2))
    return n if fr >= 0 else -n


# ---------------------------------------------------------------------------
# quantize_multiplier / requantize
# ---------------------------------------------------------------------------

def test_quantize_multiplier_against_math_frexp():
    rng = np.random.default_rng(0)
    for real in np.exp(rng.uniform(math.log(2.0 ** -30), math.log(2.0 ** 29), 3000)):
        real = float(real)
        m, s = q.quantize_multiplier(real)
        mant, e = math.frexp(real)
        expect = _round_half_away(Fraction(mant) * 2 ** 31)
        if expect == 2 ** 31:
            expect, e = expect // 2, e + 1
        assert (m, s) == (expect, e)
        assert 2 ** 30 <= m < 2 ** 31
        assert abs(Fraction(m) * Fraction(2) ** (s - 31) - Fraction(real)) <= \
            Fraction(real) * Fraction(1, 2 ** 31)
    assert q.quantize_multiplier(0.0) == (0, 0)
    assert q.quantize_multiplier(2.0 ** -40) == (0, 0)
    assert q.quantize_multiplier(2.0 ** 35) == (2 ** 31 - 1, 30)
    assert q.quantize_multiplier(1.0) == (2 ** 30, 1)
    assert q.frexp_q31(2.0 ** -100) == (2 ** 30, -99)


def _requantize_exact(x, m, s):
    """TFLite's two rounding steps in exact rational arithmetic."""
    left, right = max(s, 0), max(-s, 0)
    xs = max(-2 ** 31, min(2 ** 31 - 1, x * 2 ** left))
    if xs == -2 ** 31 and m == -2 ** 31:
        high = 2 ** 31 - 1
    else:  # gemmlowp's asymmetric nudge: ties round toward +inf
        high = math.floor(Fraction(xs * m, 2 ** 31) + Fraction(1, 2))
    return _round_half_away(Fraction(high, 2 ** right))


def test_requantize_against_exact_rounding():
    rng = np.random.default_rng(1)
    x = rng.integers(-2 ** 31, 2 ** 31, 4000)
    m = rng.integers(2 ** 30, 2 ** 31, 4000)
    s = rng.integers(-31, 31, 4000)
    x[:50] = rng.integers(-40, 40, 50)  # small values hit the ties
    s[:50] = rng.integers(-3, 1, 50)
    m[:50] = 2 ** 30
    got = fp.requantize(x, m, s)
    for k in range(len(x)):
        assert got[k] == _requantize_exact(int(x[k]), int(m[k]), int(s[k])), (x[k], m[k], s[k])


def test_requantize_approximates_real_product():
    """Within 0.75 LSB (double rounding) of x * real when nothing saturates."""
    rng = np.random.default_rng(2)
    for real in np.exp(rng.uniform(-20, 3, 200)):
        m, s = q.quantize_multiplier(float(real))
        x = rng.integers(-2 ** 20, 2 ** 20, 50)
        err = np.abs(fp.requantize(x, m, s) - x * float(real))
        assert err.max() <= 0.75 + 1e-6 * np.abs(x * real).max()


# ---------------------------------------------------------------------------
# Other primitives
# ---------------------------------------------------------------------------

def test_isqrt_and_norm():
    rng = np.random.default_rng(3)
    n = np.concatenate([rng.integers(0, 2 ** 62, 2000), [0, 1, 2, 3, 2 ** 62 - 1,
                                                         (2 ** 31 - 1) ** 2, (2 ** 31) ** 2 - 1]])
    assert [int(v) for v in fp.isqrt(n)] == [math.isqrt(int(v)) for v in n]
    sq = rng.integers(0, 2 ** 30, 500)
    assert [int(v) for v in fp.norm_q16(sq)] == [math.isqrt(int(v) << 32) for v in sq]


def test_exp2_neg_q30_accuracy():
    w = np.arange(0, 31 << 16, 97)
    got = fp.exp2_neg_q30(w).astype(np.float64)
    exact = 2.0 ** (30 - w / 65536.0)
    assert np.all(np.abs(got - exact) <= 1.3e-7 * exact + 1.0)
    assert fp.exp2_neg_q30(0) == 2 ** 30
    assert np.all(fp.exp2_neg_q30(np.arange(1, 65536)) < 2 ** 30)  # max term stays the max
    assert fp.exp2_neg_q30(31 << 16) == 0
    assert np.all(np.diff(got) <= 0)  # monotone


def test_exp_table_and_softmax_against_float():
    rng = np.random.default_rng(4)
    for b_scale in np.exp(rng.uniform(math.log(1e-4), math.log(2.0), 40)):
        b_scale = float(np.float32(b_scale))
        beta = q.quantize_multiplier((b_scale * q.LOG2E) * 65536.0)
        table = fp.exp_table(*beta).astype(np.float64)
        exact = 2.0 ** 30 * np.exp(-np.arange(256) * b_scale)
        # Q16 exponent rounding: 2^-17 * ln 2 relative, plus one unit
        assert np.all(np.abs(table - exact) <= 1e-5 * exact + 1.0)
        logits = rng.integers(-128, 128, size=(64, int(rng.integers(1, 12))))
        c = fp.softmax_q15(logits, fp.exp_table(*beta)) / 2.0 ** 15
        c_float = float_ref.softmax(logits * b_scale)
        assert np.abs(c - c_float).max() <= 2.0 ** -15 + 2e-5
        assert np.all(np.abs(c.sum(axis=1) - 1.0) <= logits.shape[1] * 2.0 ** -15)


def test_uniform_logits_give_equal_couplings():
    table = fp.exp_table(*q.quantize_multiplier((0.05 * q.LOG2E) * 65536.0))
    for n_out in (1, 2, 3, 10, 1024):
        for value in (-128, 0, 127):
            c = fp.softmax_q15(np.full((2, n_out), value), table)
            assert np.all(c == c[0, 0]) and abs(c[0, 0] - 2 ** 15 / n_out) <= 0.5


def test_routing_acc_shift_bound():
    for n_in in (1, 255, 256, 257, 512, 1024, 1152, 5000, 2 ** 20):
        p = fp.routing_acc_shift(n_in)
        assert n_in * 2 ** 22 <= 2 ** (30 + p)
        assert p == 0 or n_in * 2 ** 22 > 2 ** (29 + p)


# ---------------------------------------------------------------------------
# Float reference
# ---------------------------------------------------------------------------

def _routing_loops(u_hat, routings):
    """Textbook dynamic routing, one sample, plain Python loops."""
    n_in, n_out, dim = u_hat.shape
    b = [[0.0] * n_out for _ in range(n_in)]
    v = None
    for r in range(routings):
        c = []
        for i in range(n_in):
            e = [math.exp(x - max(b[i])) for x in b[i]]
            c.append([x / sum(e) for x in e])
        v = []
        for j in range(n_out):
            s = [sum(c[i][j] * u_hat[i, j, d] for i in range(n_in)) for d in range(dim)]
            n2 = sum(x * x for x in s)
            norm = math.sqrt(n2)
            v.append([x * n2 / (1 + n2) / norm if norm else 0.0 for x in s])
        if r < routings - 1:
            for i in range(n_in):
                for j in range(n_out):
                    b[i][j] += sum(u_hat[i, j, d] * v[j][d] for d in range(dim))
    return np.array(v)


def test_float_routing_against_loops():
    rng = np.random.default_rng(5)
    for routings in (1, 2, 3, 5):
        u_hat = rng.normal(size=(7, 4, 3))
        np.testing.assert_allclose(float_ref.dynamic_routing(u_hat, routings),
                                   _routing_loops(u_hat, routings), rtol=1e-12, atol=1e-14)
    u = rng.normal(size=(3, 6, 2))
    W = rng.normal(size=(6, 4, 3, 2))
    v, inter = float_ref.class_caps_float(u, W, 3)
    for b in range(3):
        u_hat = np.einsum("ijdk,ik->ijd", W, u[b])
        np.testing.assert_allclose(inter["u_hat"][b], u_hat, rtol=1e-12)
        np.testing.assert_allclose(v[b], _routing_loops(u_hat, 3), rtol=1e-12, atol=1e-14)
    assert [len(inter[k]) for k in ("s", "v", "c", "b")] == [3, 3, 3, 2]
    # b[u] is the logit after update u: b[0] = u_hat . v_0
    np.testing.assert_allclose(inter["b"][0], np.einsum("bijd,bjd->bij", inter["u_hat"],
                                                        inter["v"][0]))
    np.testing.assert_allclose(float_ref.squash(np.zeros((2, 3))), 0.0)


def test_float_reference_matches_keras_layer_math():
    import tensorflow as tf

    from tflm_caps.layers import capsule_math as cm

    rng = np.random.default_rng(6)
    u = rng.normal(size=(2, 9, 4)).astype(np.float32)
    W = (rng.normal(size=(9, 5, 6, 4)) * 0.3).astype(np.float32)
    u_hat = cm.predictions(tf.constant(u), tf.constant(W))
    v, trace = cm.dynamic_routing(u_hat, routings=3, return_intermediates=True)
    v_ref, inter = float_ref.class_caps_float(u, W, 3)
    np.testing.assert_allclose(v.numpy(), v_ref, rtol=1e-4, atol=1e-6)
    # the layer's trace holds the logits *used* by each iteration: b[r+1] == ours b[r]
    for k in range(2):
        np.testing.assert_allclose(trace["b"][k + 1].numpy(), inter["b"][k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cm.length(v).numpy(), float_ref.length(v_ref), rtol=1e-4)


# ---------------------------------------------------------------------------
# Integer reference: properties that do not depend on the C code
# ---------------------------------------------------------------------------

def test_first_iteration_is_exactly_uniform():
    """R = 1: s = requant(sum_i u_hat) with 1/N_out folded into the multiplier."""
    rng = np.random.default_rng(7)
    u_hat = rng.integers(-128, 128, size=(50, 4, 3)).astype(np.int8)
    params = q.routing_params((50, 1, 4, 3), 0.02, [0.05])
    v, trace = ref.dynamic_routing_s8(u_hat, params, return_intermediates=True)
    s_exact = u_hat.astype(np.float64).sum(axis=0) * (np.float32(0.02) / 4) / np.float32(0.05)
    assert np.abs(trace["s"][0] - np.clip(s_exact, -128, 127)).max() <= 0.75


def test_squash_int8_handles_every_input_at_extreme_zero_points():
    for zp in (-128, 127):
        x = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)
        v = ref.squash_s8(x, q.squash_params(1.0 / 16, zp))
        target = float_ref.squash((x.astype(np.float64) - zp) / 16)
        assert np.abs(v / 128.0 - np.clip(target, -1, 127 / 128)).max() <= 0.75 / 128 + 1e-7


# ---------------------------------------------------------------------------
# Quantization description and validation
# ---------------------------------------------------------------------------

def test_class_caps_quant_validation():
    good = dict(input_scale=1 / 128, input_zero_point=0, weight_scales=[0.01] * 10,
                uhat_scale=0.02, s_scales=[0.1, 0.1, 0.1], b_scales=[0.2, 0.3])
    quant = q.ClassCapsQuant(**good)
    assert quant.routings == 3
    assert q.ClassCapsQuant.from_dict(quant.to_dict()) == quant
    bad_cases = [
        (dict(uhat_scale=0.0), "uhat_scale"),
        (dict(uhat_scale=-1.0), "uhat_scale"),
        (dict(uhat_scale=float("nan")), "uhat_scale"),
        (dict(input_scale=float("inf")), "input_scale"),
        (dict(input_scale=None), "missing"),
        (dict(s_scales=[0.1, 0.0, 0.1]), r"s_scales\[1\]"),
        (dict(s_scales=[]), "s_scales"),
        (dict(s_scales=[0.1] * 9, b_scales=[0.1] * 8), "routing iteration"),
        (dict(b_scales=[0.2]), "b_scales: need routings-1 = 2"),
        (dict(b_scales=[0.2, -0.3]), r"b_scales\[1\]"),
        (dict(weight_scales=[]), "weight_scales"),
        (dict(input_zero_point=128), "input_zero_point"),
        (dict(input_zero_point=1.5), "input_zero_point"),
        (dict(uhat_scale=1e-50), "float32"),
    ]
    for change, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            q.ClassCapsQuant(**{**good, **change})
    with pytest.raises(ValueError, match="N_out=7"):
        q.class_caps_params((5, 4, 7, 3), quant)
    with pytest.raises(ValueError, match="missing uhat_scale"):
        q.ClassCapsQuant.from_dict({k: v for k, v in good.items() if k != "uhat_scale"})
    assert q.ClassCapsQuant(**{**good, "s_scales": [0.1], "b_scales": None}).b_scales == ()


def test_dims_validation():
    with pytest.raises(ValueError, match="n_out"):
        q.ClassCapsDims(10, 4, 0, 4).check()
    with pytest.raises(ValueError, match="dim_out"):
        q.ClassCapsDims(10, 4, 10, 16385).check()
    with pytest.raises(ValueError, match="N_in=10"):
        q.ClassCapsDims.from_shapes((2, 9, 4), (10, 10, 4, 4))
    with pytest.raises(ValueError, match="int8"):
        ref.squash_s8(np.zeros((2, 3), np.float32), q.squash_params(0.1))
    with pytest.raises(ValueError, match="params"):
        ref.dynamic_routing_s8(np.zeros((3, 2, 2), np.int8),
                               q.routing_params((4, 1, 2, 2), 0.1, [0.1]))


def test_scale_helpers():
    assert q.symmetric_scale(127.0) == 1.0
    assert q.symmetric_scale(0.0) > 0
    scale, zp = q.asymmetric_params(-1.0, 3.0)
    assert abs(scale - 4.0 / 255) < 1e-8 and -128 <= zp <= 127
    assert np.all(q.dequantize(q.quantize([-1.0, 0.0, 3.0], scale, zp), scale, zp)
                  - np.array([-1.0, 0.0, 3.0]) <= scale / 2 + 1e-9)
    W = np.random.default_rng(8).normal(size=(5, 3, 2, 4))
    ws = q.weight_scales(W, per_capsule=True)
    np.testing.assert_allclose(ws, np.abs(W).max(axis=(0, 2, 3)) / 127, rtol=1e-6)
    Wq = q.quantize_weights(W, ws)
    assert Wq.dtype == np.int8 and np.abs(Wq).max() == 127 and Wq.min() >= -127
    assert q.weight_scales(W, per_capsule=False).shape == (1,)


def test_calibration_uses_max_abs_of_float_intermediates():
    rng = np.random.default_rng(9)
    u = float_ref.squash(rng.normal(size=(20, 6, 3)))
    W = rng.normal(size=(6, 4, 5, 3))
    quant = q.calibrate_class_caps(u, W, 3, 1.0 / 128, 0, batch_size=7)
    ws = np.array(quant.weight_scales)
    Wd = q.quantize_weights(W, ws) * ws.reshape(1, -1, 1, 1)
    ud = q.dequantize(q.quantize(u, 1.0 / 128), 1.0 / 128)
    _, inter = float_ref.class_caps_float(ud, Wd, 3)
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    assert quant.uhat_scale == f32(np.abs(inter["u_hat"]).max() / 127)
    assert quant.s_scales == tuple(f32(np.abs(s).max() / 127) for s in inter["s"])
    assert quant.b_scales == tuple(f32(np.abs(b).max() / 127) for b in inter["b"])


def test_vector_encoding_sizes():
    rng = np.random.default_rng(10)
    x = rng.integers(-128, 128, size=(3, 5)).astype(np.int8)
    blob = V.encode_case(("squash", x, q.squash_params(0.1)))
    assert len(blob) == 6 * 4 + 15
    with pytest.raises(ValueError, match="needs SquashParams"):
        V.encode_case(("squash", x, q.length_params(0.1)))
