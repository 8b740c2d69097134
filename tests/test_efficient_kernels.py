"""Efficient-CapsNet int8 ops: C kernels and parameter derivation equal the
numpy reference bit for bit; the reference stays within its stated error
bounds against float (docs/quantization.md)."""
import math

import numpy as np
import pytest

from tflm_caps import native
from tflm_caps.ops_contract import MAX_ATTENTION_BIAS, MAX_ATTENTION_DIM_OUT
from tflm_caps.reference import fixedpoint as fp
from tflm_caps.reference import float_ref
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q

INT32_MAX = (1 << 31) - 1


def _rng(seed):
    return np.random.default_rng(seed)


def _log_uniform(rng, lo, hi, size=None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size=size))


def _random_quant(rng, n_out, per_capsule):
    ws = _log_uniform(rng, 1e-3, 1e-1, n_out if per_capsule else 1)
    return q.SelfAttentionQuant(float(_log_uniform(rng, 1e-3, 0.1)),
                                int(rng.integers(-128, 128)), ws,
                                float(_log_uniform(rng, 1e-3, 2.0)),
                                float(_log_uniform(rng, 1e-3, 2.0)))


def _random_bias(rng, n_in, n_out):
    kind = rng.integers(0, 4)
    if kind == 0:
        return np.zeros((n_in, n_out), np.int32)
    limit = (1 << 13, 1 << 16, MAX_ATTENTION_BIAS)[kind - 1]
    b = rng.integers(-limit, limit + 1, (n_in, n_out)).astype(np.int32)
    if kind == 3:
        b.flat[0] = -MAX_ATTENTION_BIAS if rng.integers(0, 2) else MAX_ATTENTION_BIAS
    return b


def _realistic_case(rng, n_in, d_in, n_out, d_out, per_capsule, batch=2):
    """Squashed capsules whose votes agree on output capsule 0, calibrated."""
    u = float_ref.efficient_squash(rng.normal(size=(batch, n_in, d_in)) * 2.0)
    W = rng.normal(size=(n_in, n_out, d_out, d_in)) / math.sqrt(d_in)
    W[:, 0] += 0.5 * np.einsum("d,k->dk", rng.normal(size=d_out), np.ones(d_in)) / d_in
    b = rng.normal(0, 0.2, (n_in, n_out))
    quant = q.calibrate_self_attention(u, W, b, 1.0 / 128, 0, per_capsule=per_capsule)
    return (q.quantize(u, 1.0 / 128), q.quantize_weights(W, quant.weight_scales),
            q.quantize_attention_bias(b), quant)


# ---------------------------------------------------------------------------
# Primitives and parameters
# ---------------------------------------------------------------------------

def test_inv_sqrt_q30_exact():
    for n in list(range(1, 300)) + [1023, 1024, 4095, 16383, 16384, 2 ** 31 - 1]:
        r = fp.inv_sqrt_q30(n)
        assert r * r * n <= 1 << 60 < (r + 1) * (r + 1) * n, n  # r = floor(2^30 / sqrt(n))
        assert native.inv_sqrt_q30(n) == r


def test_efficient_squash_gain_c_equals_numpy():
    rng = _rng(1)
    sq = np.concatenate([np.arange(0, 600), rng.integers(0, 1 << 30, 3000),
                         [(1 << 30) - 1, 16384 * 255 * 255]])
    for scale in list(_log_uniform(rng, 1e-6, 1e3, 12)) + [1.0 / 128, 1e-10, 1e9]:
        p = q.efficient_squash_params(scale, 0)
        want = fp.efficient_squash_gain(sq, p.exp_multiplier, p.exp_shift)
        got = [native.efficient_squash_gain(int(x), p.exp_multiplier, p.exp_shift) for x in sq]
        np.testing.assert_array_equal(got, want)
        assert want.max() <= 1 << 31 and want[0] == 0


def test_efficient_squash_params_c_equal_numpy():
    rng = _rng(2)
    for k, s in enumerate(list(_log_uniform(rng, 1e-9, 1e9, 400)) + [1 / 128, 3.4e38, 1e-38]):
        zp = (-128, 127, 0, int(rng.integers(-128, 128)))[k % 4]
        assert native.efficient_squash_params(s, zp) == q.efficient_squash_params(s, zp)


def test_self_attention_params_c_equal_numpy():
    rng = _rng(3)
    for k in range(300):
        n_in = int(rng.choice([1, 7, 16, 256, 257, 1000, 5000]))
        n_out = int(rng.integers(1, 17))
        dims = q.ClassCapsDims(n_in, int(rng.integers(1, 17)), n_out,
                               int(rng.choice([1, 3, 16, 100, MAX_ATTENTION_DIM_OUT])))
        quant = _random_quant(rng, n_out, bool(k % 2))
        bias = _random_bias(rng, n_in, n_out)
        want = q.self_attention_params(dims, quant, bias)
        assert native.self_attention_params(dims, quant, bias) == want
        assert want.acc_shift == fp.routing_acc_shift(n_in)
        top = (1 << 15) + int(np.abs(bias.astype(np.int64)).max())
        assert (1 << (14 + want.coupling_shift)) < top <= (1 << (15 + want.coupling_shift))


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_params_reject_bad_scales(bad):
    dims = q.ClassCapsDims(4, 3, 2, 5)
    bias = np.zeros((4, 2), np.int32)
    with pytest.raises(native.NativeError):
        native.efficient_squash_params(bad, 0)
    with pytest.raises(ValueError, match="scale"):
        q.efficient_squash_params(bad, 0)
    with pytest.raises(ValueError, match="s_scale"):
        q.SelfAttentionQuant(0.1, 0, [0.1], 0.1, bad)
    cq = q.SelfAttentionQuant(0.1, 0, [0.1], 0.1, 0.1)
    object.__setattr__(cq, "s_scale", bad)  # what a corrupt model would hand to C
    with pytest.raises(native.NativeError):
        native.self_attention_params(dims, cq, bias)


def test_params_reject_bad_dims_and_bias():
    quant = q.SelfAttentionQuant(0.1, 0, [0.1], 0.1, 0.1)
    big = q.ClassCapsDims(4, 3, 2, MAX_ATTENTION_DIM_OUT + 1)
    with pytest.raises(ValueError, match="dim_out must be <= 128"):
        q.self_attention_params(big, quant, np.zeros((4, 2), np.int32))
    with pytest.raises(native.NativeError):
        native.self_attention_params(big, quant, np.zeros((4, 2), np.int32))
    dims = q.ClassCapsDims(4, 3, 2, 5)
    over = np.zeros((4, 2), np.int32)
    over[1, 1] = -MAX_ATTENTION_BIAS - 1
    with pytest.raises(ValueError, match="bias exceeds"):
        q.self_attention_params(dims, quant, over)
    with pytest.raises(native.NativeError):
        native.self_attention_params(dims, quant, over)
    with pytest.raises(ValueError, match=r"\[N_in, N_out\]"):
        q.self_attention_params(dims, quant, np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="1 or N_out=2"):
        q.self_attention_params(dims, q.SelfAttentionQuant(0.1, 0, [0.1] * 3, 0.1, 0.1),
                                np.zeros((4, 2), np.int32))
    with pytest.raises(ValueError, match="exceeds 512"):
        q.quantize_attention_bias([600.0])
    with pytest.raises(ValueError, match="NaN"):
        q.quantize_attention_bias([float("nan")])
    np.testing.assert_array_equal(q.quantize_attention_bias([0.5, -1.0, 1.5 / 32768]),
                                  [16384, -32768, 2])


# ---------------------------------------------------------------------------
# Efficient squash kernel
# ---------------------------------------------------------------------------

def test_efficient_squash_c_equals_numpy_random():
    rng = _rng(4)
    for k in range(200):
        dim = int(rng.choice([1, 2, 4, 8, 16, 33, 200]))
        x = rng.integers(-128, 128, (int(rng.integers(0, 40)), dim)).astype(np.int8)
        scale = float(_log_uniform(rng, 1e-5, 10.0))
        zp = int(rng.integers(-128, 128))
        p = q.efficient_squash_params(scale, zp)
        want = ref.efficient_squash_s8(x, p)
        np.testing.assert_array_equal(native.efficient_squash(x, p), want)
        np.testing.assert_array_equal(native.efficient_squash(x, p, use_table=False), want)


def test_efficient_squash_edge_inputs():
    for zp in (-128, 0, 127):
        p = q.efficient_squash_params(0.02, zp)
        for x in (np.full((3, 16), zp), np.full((3, 16), -128), np.full((3, 16), 127),
                  np.array([[zp + (1 if zp < 127 else -1)] + [zp] * 15])):
            x = x.astype(np.int8)
            want = ref.efficient_squash_s8(x, p)
            np.testing.assert_array_equal(native.efficient_squash(x, p), want)
        assert not ref.efficient_squash_s8(np.full((1, 16), zp, np.int8), p).any()
    x = _rng(5).integers(-128, 128, (3, 16384)).astype(np.int8)  # largest dim
    p = q.efficient_squash_params(1e-3, 5)
    np.testing.assert_array_equal(native.efficient_squash(x, p), ref.efficient_squash_s8(x, p))


def test_efficient_squash_table_checks():
    p = q.efficient_squash_params(0.05, 3)
    x = _rng(6).integers(-128, 128, (10, 4)).astype(np.int8)
    big = native.efficient_squash_table(16, p)  # a table for a larger dim serves dim 4
    np.testing.assert_array_equal(native.efficient_squash(x, p, table=big),
                                  ref.efficient_squash_s8(x, p))
    other = native.efficient_squash_table(4, q.efficient_squash_params(0.06, 3))
    with pytest.raises(native.NativeError, match="ARG_ERROR"):
        native.efficient_squash(x, p, table=other)
    sabour = native.squash_table(4, q.squash_params(0.05, 3))  # the other squash's table
    with pytest.raises(native.NativeError, match="ARG_ERROR"):
        native.efficient_squash(x, p, table=sabour)
    with pytest.raises(native.NativeError, match="ARG_ERROR"):
        native.efficient_squash(x, p, table=np.zeros_like(big))  # never filled
    # Same entries as the numpy gains of each index's representative.
    raw = big.tobytes()[(-big.ctypes.data) % 4:]
    words = np.frombuffer(raw[:len(raw) // 4 * 4], np.int32)
    assert words[5] == fp.squash_table_entries(16, 3)
    k = np.arange(words[5])
    np.testing.assert_array_equal(
        words[6:6 + words[5]],
        np.minimum(fp.efficient_squash_gain(fp.squash_index_rep(k), p.exp_multiplier,
                                            p.exp_shift), INT32_MAX))


def test_efficient_squash_error_bound_vs_float():
    """Rounding to nearest (0.5 LSB) + gain of the bucket midpoint (0.25 LSB) +
    Q16 norm / exponent rounding (< 3e-3 LSB)."""
    rng = _rng(7)
    worst = 0.0
    for k in range(300):
        dim = int(rng.choice([1, 4, 8, 16]))
        scale = float(_log_uniform(rng, 1e-4, 1.0))
        zp = int(rng.integers(-128, 128))
        x = rng.integers(-128, 128, (150, dim)).astype(np.int8)
        p = q.efficient_squash_params(scale, zp)
        got = ref.efficient_squash_s8(x, p).astype(np.float64)
        want = np.clip(float_ref.efficient_squash(q.dequantize(x, np.float32(scale), zp)) * 128,
                       -128, 127)
        worst = max(worst, float(np.abs(got - want).max()))
    assert 0.5 < worst <= 0.75 + 3e-3


def test_wide_squash_error_bound_vs_float():
    """The self-attention layer's final squash of int16 capsules: within
    0.5 LSB + 0.03 of the float squash (Q8 norm, Q16 exponent, Q24 gain)."""
    rng = _rng(8)
    worst = 0.0
    for k in range(200):
        dim = int(rng.choice([1, 2, 16, 128]))
        scale = float(_log_uniform(rng, 1e-7, 1e-2))
        y = rng.integers(-32768, 32768, (50, dim))
        y[0] = 0
        y[1] = -32768
        y[2, :] = 0
        y[2, 0] = 1
        y = y >> int(rng.integers(0, 15))  # small and large capsules
        m, e = q.quantize_multiplier((np.float32(scale) * q.LOG2E) * 256.0)
        got = fp.efficient_squash_wide(y, m, e).astype(np.float64)
        want = np.clip(float_ref.efficient_squash(y * float(np.float32(scale))) * 128, -128, 127)
        worst = max(worst, float(np.abs(got - want).max()))
        assert not got[0].any()
    assert 0.45 < worst <= 0.5 + 0.03


# ---------------------------------------------------------------------------
# Self-attention kernel
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_self_attention_c_equals_numpy_random(seed):
    rng = _rng(10 + seed)
    for k in range(40):
        n_in = int(rng.choice([1, 2, 16, 100, 256, 257, 600]))
        n_out = int(rng.integers(1, 17))
        d_in = int(rng.integers(1, 20))
        d_out = int(rng.choice([1, 5, 16, 64, MAX_ATTENTION_DIM_OUT]))
        quant = _random_quant(rng, n_out, bool(k % 2))
        bias = _random_bias(rng, n_in, n_out)
        u = rng.integers(-128, 128, (2, n_in, d_in)).astype(np.int8)
        W = rng.integers(-127, 128, (n_in, n_out, d_out, d_in)).astype(np.int8)
        params = q.self_attention_params((n_in, d_in, n_out, d_out), quant, bias)
        np.testing.assert_array_equal(native.self_attention(u, W, bias, params),
                                      ref.self_attention_s8(u, W, bias, params))


def test_self_attention_edge_cases():
    rng = _rng(20)
    n_in, d_in, n_out, d_out = 257, 3, 4, MAX_ATTENTION_DIM_OUT
    W = np.full((n_in, n_out, d_out, d_in), 127, np.int8)
    quant = q.SelfAttentionQuant(0.05, 0, [0.05], 1e-3, 0.5)  # votes saturate at +-128
    tiny_s = q.SelfAttentionQuant(0.05, 0, [0.05], 1e-3, 1e-7)  # s saturates at int16 ends
    u = rng.integers(-128, 128, (n_in, d_in)).astype(np.int8)
    b0 = np.zeros((n_in, n_out), np.int32)
    params = q.self_attention_params((n_in, d_in, n_out, d_out), tiny_s, b0)
    want, trace = ref.self_attention_s8(u, W, b0, params, return_intermediates=True)
    assert np.abs(trace["s"]).max() == 32768 or trace["s"].max() == 32767
    np.testing.assert_array_equal(native.self_attention(u, W, b0, params), want)
    for u, bias in ((np.full((n_in, d_in), -128), np.zeros((n_in, n_out))),
                    (np.full((n_in, d_in), 127), np.full((n_in, n_out), MAX_ATTENTION_BIAS)),
                    (np.zeros((n_in, d_in)), np.full((n_in, n_out), -MAX_ATTENTION_BIAS)),
                    (rng.integers(-128, 128, (n_in, d_in)), rng.integers(-9, 9, (n_in, n_out)))):
        u, bias = u.astype(np.int8), bias.astype(np.int32)
        params = q.self_attention_params((n_in, d_in, n_out, d_out), quant, bias)
        want, trace = ref.self_attention_s8(u, W, bias, params, return_intermediates=True)
        np.testing.assert_array_equal(native.self_attention(u, W, bias, params), want)
        assert trace["sum"].min() >= -(1 << 15) and trace["sum"].max() < 1 << 15
        assert np.abs(trace["a"]).max() <= 1 << 29
    zero = np.zeros((n_in, d_in), np.int8)  # all votes zero: uniform couplings, v = 0
    params = q.self_attention_params((n_in, d_in, n_out, d_out), quant,
                                     np.zeros((n_in, n_out), np.int32))
    v, trace = ref.self_attention_s8(zero, W, np.zeros((n_in, n_out), np.int32), params, True)
    assert not v.any() and np.all(trace["c"] == 8192)


def test_self_attention_calibrated_cases_bit_exact_and_bounds():
    """Bit-exact on calibrated data; each stage within its bound against float on
    the integers it reads: couplings 0.5 Q15 LSB (+1e-4), s 0.75 LSB (int16),
    v 0.5 LSB + 0.03 (rounding; Q8 norm, Q16 exponent and Q24 gain)."""
    rng = _rng(30)
    for k, (n_in, d_in, n_out, d_out) in enumerate([(16, 8, 10, 16), (32, 4, 5, 8),
                                                    (300, 6, 10, 16)]):
        u, W, bias, quant = _realistic_case(rng, n_in, d_in, n_out, d_out, bool(k % 2), 8)
        params = q.self_attention_params((n_in, d_in, n_out, d_out), quant, bias)
        v, traces = ref.self_attention_s8(u, W, bias, params, return_intermediates=True)
        np.testing.assert_array_equal(native.self_attention(u, W, bias, params), v)
        for t, vb in zip(traces, v):
            uh = t["u_hat"].astype(np.float64)
            if params.acc_shift == 0:  # the vote sums are exact
                A = np.einsum("ijd,jd->ij", uh, uh.sum(axis=0))
                c = float_ref.softmax(A * (quant.uhat_scale ** 2 / math.sqrt(d_out)))
                assert np.abs(t["c"] / 32768 - c).max() <= 0.5 / 32768 + 1e-4
            sf = np.einsum("ij,ijd->jd", t["cb"] * 2.0 ** (params.coupling_shift - 15),
                           uh * quant.uhat_scale)
            assert np.abs(t["s"] - np.clip(sf / quant.s_scale, -32768, 32767)).max() <= 0.75
            vf = np.clip(float_ref.efficient_squash(t["s"] * quant.s_scale) * 128, -128, 127)
            assert np.abs(vb - vf).max() <= 0.5 + 0.03


def test_self_attention_accuracy_vs_float():
    """End to end against the float layer on the same int8 input, weights and bias."""
    rng = _rng(40)
    u, W, bias, quant = _realistic_case(rng, 16, 8, 10, 16, True, 200)
    params = q.self_attention_params((16, 8, 10, 16), quant, bias)
    v = ref.self_attention_s8(u, W, bias, params).astype(np.float64) / 128
    ws = np.asarray(quant.weight_scales).reshape(1, -1, 1, 1)
    vf = float_ref.self_attention_float(u / 128, W * ws, bias / 32768, False)
    err = v - vf
    sqnr = 10 * math.log10(np.sum(vf ** 2) / np.sum(err ** 2))
    lengths, lengths_f = np.linalg.norm(v, axis=-1), np.linalg.norm(vf, axis=-1)
    same = np.argmax(lengths, -1) == np.argmax(lengths_f, -1)
    top2 = np.sort(lengths_f, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * 2.0 / 128  # a margin twice the largest error
    assert sqnr >= 33.0 and np.abs(err).max() * 128 <= 2.0
    assert np.all(same[clear]) and clear.sum() >= 50 and same.mean() >= 0.95


def test_self_attention_rejects_bad_calls():
    rng = _rng(50)
    u, W, bias, quant = _realistic_case(rng, 16, 8, 10, 16, False)
    params = q.self_attention_params((16, 8, 10, 16), quant, bias)
    size = native.self_attention_buffer_size((16, 8, 10, 16))
    assert size > 16 * 10 * 16
    with pytest.raises(native.NativeError, match="ARG_ERROR"):
        native.self_attention(u, W, bias, params, scratch_size=size - 1)
    assert native.self_attention_buffer_size((16, 8, 10, MAX_ATTENTION_DIM_OUT + 1)) == -1
    other = q.self_attention_params((16, 8, 10, 16), quant, np.zeros((16, 10), np.int32))
    W2 = W[:, :5].copy()
    with pytest.raises(native.NativeError, match="ARG_ERROR"):  # params for other dims
        native.self_attention(u, W2, bias[:, :5], other)
    with pytest.raises(ValueError, match="params are for"):
        ref.self_attention_s8(u, W2, bias[:, :5], other)
    with pytest.raises(ValueError, match="bias must be integer"):
        ref.self_attention_s8(u, W, bias.astype(np.float32), params)
    with pytest.raises(ValueError, match="bias must be integer"):
        native.self_attention(u, W, bias[:, :3], params)


def test_runtime_scratch_formula_matches_c():
    from tflm_caps.runtime.runner import self_attention_scratch_bytes
    for dims in ((16, 8, 10, 16), (1, 1, 1, 1), (300, 4, 5, 128), (7, 3, 9, 5)):
        n_in, d_in, n_out, d_out = dims
        assert self_attention_scratch_bytes(n_in, n_out, d_out, d_in) == \
            native.self_attention_buffer_size(dims)
