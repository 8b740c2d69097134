"""The C kernels and C parameter derivation equal the numpy reference bit for bit."""
import ctypes
import math
import struct

import numpy as np
import pytest

from tflm_caps import native
from tflm_caps.reference import fixedpoint as fp
from tflm_caps.reference import float_ref
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q


def _rng(seed):
    return np.random.default_rng(seed)


def _log_uniform(rng, lo, hi, size=None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size=size))


def _random_quant(rng, n_out, routings, per_capsule, spread=4.0):
    """Scales drawn at random (log-uniform): exercises saturation and odd ratios."""
    ws = _log_uniform(rng, 1e-3, 1e-1, n_out if per_capsule else 1)
    s = _log_uniform(rng, 1e-3 / spread, 1e-1 * spread, routings)
    b = _log_uniform(rng, 1e-3, 1.0, routings - 1)
    return q.ClassCapsQuant(float(_log_uniform(rng, 1e-3, 0.1)), int(rng.integers(-128, 128)),
                            ws, float(_log_uniform(rng, 1e-3, 1.0)), s, b)


def _calibrated_case(rng, n_in, dim_in, n_out, dim_out, routings, per_capsule, agree=True):
    """Squashed-capsule-like float inputs whose predictions agree on one class,
    quantized with calibrated scales: a routing that actually routes."""
    u = float_ref.squash(rng.normal(size=(2, n_in, dim_in)))
    W = rng.normal(size=(n_in, n_out, dim_out, dim_in)) * (1.0 / math.sqrt(dim_in))
    if agree:
        target = rng.normal(size=dim_out)
        W[:, 0] += 0.5 * np.einsum("d,k->dk", target, np.ones(dim_in)) / dim_in
    quant = q.calibrate_class_caps(u, W, routings, 1.0 / 128, 0, per_capsule=per_capsule)
    Wq = q.quantize_weights(W, quant.weight_scales)
    uq = q.quantize(u, 1.0 / 128)
    return uq, Wq, quant


# ---------------------------------------------------------------------------
# Parameter derivation
# ---------------------------------------------------------------------------

def _special_reals():
    vals = [0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 2.0 ** -32, 2.0 ** -31.5,
            2.0 ** -31, 0.5, 1.0, 2.0, 2.0 ** 29.9, 2.0 ** 30, 2.0 ** 31, 1e300,
            1.7976931348623157e308]
    for k in (-40, -31, -1, 0, 1, 29, 30):
        top = (2.0 ** 31 - 0.5) / 2.0 ** 31 * 2.0 ** k  # rounds up to 2^31 -> renormalized
        vals += [top, np.nextafter(top, 0.0), np.nextafter(top, 2.0)]
    return vals


def test_quantize_multiplier_c_equals_numpy():
    rng = _rng(1)
    reals = list(_log_uniform(rng, 2.0 ** -45, 2.0 ** 40, 3000)) + _special_reals()
    for real in reals:
        assert native.quantize_multiplier(real) == q.quantize_multiplier(real), real
        assert native.frexp_q31(real) == q.frexp_q31(real), real


def test_quantize_multiplier_rejects_bad_reals():
    for bad in (-1.0, float("nan"), float("inf"), -float("inf")):
        with pytest.raises(native.NativeError):
            native.quantize_multiplier(bad)
        with pytest.raises(ValueError):
            q.quantize_multiplier(bad)


def test_op_params_c_equal_numpy():
    rng = _rng(2)
    scales = list(_log_uniform(rng, 1e-7, 1e4, 400)) + [1.0 / 128, 1.0 / 256, 1.0, 3.4e38, 1e-38]
    for k, s in enumerate(scales):
        zp = (-128, 127, 0, int(rng.integers(-128, 128)))[k % 4]
        assert native.squash_params(s, zp) == q.squash_params(s, zp), (s, zp)
        assert native.length_params(s, zp) == q.length_params(s, zp), (s, zp)


def test_class_caps_params_c_equal_numpy():
    rng = _rng(3)
    for k in range(300):
        n_in = int(rng.choice([1, 7, 256, 257, 1024, 1152, 5000]))
        n_out = int(rng.integers(1, 17))
        dims = q.ClassCapsDims(n_in, int(rng.integers(1, 17)), n_out, int(rng.integers(1, 17)))
        quant = _random_quant(rng, n_out, int(rng.integers(1, 9)), bool(k % 2),
                              spread=float(_log_uniform(rng, 1.0, 1e4)))
        expect = q.class_caps_params(dims, quant)
        assert native.class_caps_params(dims, quant) == expect
        assert native.routing_params(dims, quant.uhat_scale, quant.s_scales,
                                     quant.b_scales) == expect.routing
        assert native.predictions_params(quant.input_scale, quant.input_zero_point,
                                         quant.weight_scales, quant.uhat_scale,
                                         n_out) == expect.pred


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf"), 1e-60])
def test_params_reject_bad_scales_in_c_and_numpy(bad):
    with pytest.raises(native.NativeError):
        native.squash_params(bad, 0)
    with pytest.raises(ValueError, match="scale"):
        q.squash_params(bad, 0)
    with pytest.raises(native.NativeError):
        native.routing_params((4, 2, 3, 2), 0.1, [0.1, bad], [0.1])
    with pytest.raises(ValueError, match="s_scales"):
        q.routing_params((4, 2, 3, 2), 0.1, [0.1, bad], [0.1])


def test_params_reject_bad_zero_point_and_counts():
    with pytest.raises(native.NativeError):
        native.length_params(0.1, 128)
    with pytest.raises(ValueError, match="zero point"):
        q.length_params(0.1, 128)
    with pytest.raises(native.NativeError):  # 2 weight scales for 3 output capsules
        native.predictions_params(0.1, 0, [0.1, 0.1], 0.1, 3)
    with pytest.raises(native.NativeError):  # routings beyond CAPS_NN_MAX_ROUTINGS
        native.routing_params((4, 2, 3, 2), 0.1, [0.1] * 9, [0.1] * 8)


# ---------------------------------------------------------------------------
# Fixed-point primitives
# ---------------------------------------------------------------------------

def test_requantize_primitive():
    rng = _rng(4)
    xs = list(rng.integers(-2 ** 31, 2 ** 31, 1500)) + [-2 ** 31, 2 ** 31 - 1, 0, 1, -1]
    for k, x in enumerate(xs):
        m = int(rng.integers(2 ** 30, 2 ** 31)) if k % 7 else (2 ** 31 - 1)
        s = int(rng.integers(-31, 31))
        assert native.requantize(x, m, s) == int(fp.requantize(x, m, s)), (x, m, s)
    assert native.requantize(-2 ** 31, -2 ** 31, 0) == int(fp.requantize(-2 ** 31, -2 ** 31, 0))


def test_isqrt_primitive():
    rng = _rng(5)
    ns = [int(v) for v in rng.integers(0, 2 ** 63, 500, dtype=np.uint64)]
    ns += [0, 1, 2, 3, 4, 2 ** 62 - 1, 2 ** 62, 2 ** 64 - 1, (2 ** 32 - 1) ** 2, (2 ** 31) ** 2 - 1]
    for n in ns:
        assert native.isqrt_u64(n) == math.isqrt(n), n
    small = np.array([n for n in ns if n < 2 ** 62], dtype=np.int64)
    assert list(fp.isqrt(small)) == [math.isqrt(int(n)) for n in small]


def test_exp_primitives():
    ws = list(range(0, 70000, 37)) + [65535, 65536, 65537, 30 << 16, (31 << 16) - 1, 31 << 16,
                                     2 ** 31 - 1, 5 << 16 | 0x8000]
    c = [native.exp2_neg_q30(w) for w in ws]
    assert c == list(fp.exp2_neg_q30(np.array(ws)))
    rng = _rng(6)
    for b_scale in list(_log_uniform(rng, 1e-5, 50.0, 60)):
        beta = q.quantize_multiplier((float(np.float32(b_scale)) * q.LOG2E) * 65536.0)
        assert list(native.exp_table(*beta)) == list(fp.exp_table(*beta))


def test_squash_gain_primitive():
    rng = _rng(7)
    sqs = list(rng.integers(0, 2 ** 30, 300)) + [0, 1, 2, 2 ** 30 - 1, 16384 * 255 * 255]
    for e in (-80, -40, -20, -5, 0, 1, 2, 10, 30, 61, 62, 63, 70):
        m = int(rng.integers(2 ** 30, 2 ** 31))
        expect = fp.squash_gain(np.array(sqs), m, e)
        got = [native.squash_gain(int(s), m, e) for s in sqs]
        assert got == list(expect), e


def test_squash_table_index_and_gain():
    """Index buckets: contiguous, exact below 2^8, midpoints within 2^-8 of
    every sq they hold; C table gains equal numpy's at bucket edges."""
    sq = np.arange(1 << 21)
    k = fp.squash_index(sq)
    assert (np.diff(k) >= 0).all() and (np.diff(k) <= 1).all()
    np.testing.assert_array_equal(k[:256], sq[:256])
    rep = fp.squash_index_rep(k)
    assert (np.abs(rep - sq) <= sq / 256.0).all()
    np.testing.assert_array_equal(fp.squash_index(rep), k)
    rng = _rng(17)
    edges = [2 ** b + d for b in range(8, 30) for d in (-1, 0, 1)]
    sqs = list(rng.integers(0, 2 ** 30, 200)) + edges + [0, 1, 255, 256, 16384 * 255 * 255]
    for e in (-60, -20, -5, 0, 10, 62):
        m = int(rng.integers(2 ** 30, 2 ** 31))
        expect = fp.squash_table_gain(np.array(sqs), m, e)
        assert [native.squash_table_gain(int(v), m, e) for v in sqs] == list(expect), e
        assert expect.max() <= fp.INT32_MAX


@pytest.mark.parametrize("dim,zp", [(1, 0), (4, 0), (4, -128), (16, 127), (16384, 5)])
def test_squash_table_contents(dim, zp):
    """caps_squash_s8_init_table's entries are numpy's gains of the bucket
    representatives, and as many as the largest squared norm needs."""
    sp = q.squash_params(0.037, zp)
    raw = native.squash_table(dim, sp)
    assert raw.size == native.squash_buffer_size(dim, sp)
    off = (-raw.ctypes.data) % 4
    words = np.frombuffer(raw[off:off + (raw.size - off) // 4 * 4].tobytes(), dtype="<i4")
    n = fp.squash_table_entries(dim, zp)
    assert words[5] == n and words.size >= 6 + n
    m = max(127 - zp, 128 + zp)
    assert fp.squash_index(dim * m * m) == n - 1
    expect = fp.squash_table_gain(fp.squash_index_rep(np.arange(n)), sp.sq_multiplier,
                                  sp.sq_exponent)
    np.testing.assert_array_equal(words[6:6 + n], expect)


def test_squash_table_is_checked():
    """A table filled for other params, a smaller dim, or never filled is an
    error; a table for a larger dim serves smaller ones."""
    lib = native.load()
    rng = _rng(18)
    x = rng.integers(-128, 128, size=(9, 4)).astype(np.int8)
    sp = q.squash_params(0.05, 3)

    def run(table, dim=4):
        out = np.zeros_like(x[:, :dim])
        xi = np.ascontiguousarray(x[:, :dim])
        ctx = native.Context(table.ctypes.data_as(ctypes.c_void_p), table.size)
        st = lib.caps_squash_s8(ctypes.byref(ctx), ctypes.byref(native.CapsDims(9, dim)),
                                ctypes.byref(native._squash_c(sp)),
                                xi.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
                                out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))
        return st, out

    st, out = run(native.squash_table(4, sp))
    assert st == 0
    np.testing.assert_array_equal(out, ref.squash_s8(x, sp))
    st, out = run(native.squash_table(16, sp), dim=3)
    assert st == 0
    np.testing.assert_array_equal(out, ref.squash_s8(x[:, :3], sp))
    assert run(native.squash_table(3, sp))[0] == -1  # filled for a smaller dim
    assert run(native.squash_table(4, q.squash_params(0.05, 4)))[0] == -1
    assert run(native.squash_table(4, q.squash_params(0.06, 3)))[0] == -1
    assert run(np.zeros(native.squash_buffer_size(4, sp), np.uint8))[0] == -1  # not filled
    # numpy's buffers are 4-byte aligned: the table needs 4 * words bytes
    # there (a tensor of the model), 3 more at an odd address.
    size = native.squash_buffer_size(4, sp)
    assert lib.caps_squash_s8_table_words(ctypes.byref(native.CapsDims(1, 4)),
                                          ctypes.byref(native._squash_c(sp))) * 4 == size - 3
    assert run(native.squash_table(4, sp)[:size - 3].copy())[0] == 0  # aligned, exact
    assert run(native.squash_table(4, sp)[:size - 4].copy())[0] == -1  # too small

    def init(nbytes, offset):
        buf = np.zeros(nbytes + offset, np.uint8)[offset:]
        ctx = native.Context(buf.ctypes.data_as(ctypes.c_void_p), buf.size)
        st = lib.caps_squash_s8_init_table(ctypes.byref(ctx), ctypes.byref(native.CapsDims(1, 4)),
                                           ctypes.byref(native._squash_c(sp)))
        return st, buf

    assert init(size - 3, 0)[0] == 0 and init(size - 4, 0)[0] == -1
    assert init(size, 1)[0] == 0 and init(size - 1, 1)[0] == -1
    assert lib.caps_squash_s8_init_table(None, ctypes.byref(native.CapsDims(1, 4)),
                                         ctypes.byref(native._squash_c(sp))) == -1
    assert native.squash_buffer_size(0, sp) == -1
    assert native.squash_buffer_size(16385, sp) == -1


# ---------------------------------------------------------------------------
# Squash, length
# ---------------------------------------------------------------------------

def _edge_capsules(dim):
    return np.stack([np.full(dim, -128), np.full(dim, 127), np.zeros(dim), np.full(dim, 1),
                     np.resize([127, -128], dim), np.eye(1, dim, 0)[0] * 127]).astype(np.int8)


@pytest.mark.parametrize("dim", [1, 2, 3, 4, 5, 8, 16, 17, 33])
def test_squash_and_length_random(dim):
    rng = _rng(100 + dim)
    for trial in range(12):
        n = int(rng.integers(0, 40))
        x = rng.integers(-128, 128, size=(n, dim)).astype(np.int8)
        x = np.concatenate([x, _edge_capsules(dim)])
        scale = float(_log_uniform(rng, 1e-4, 10.0))
        zp = int(rng.integers(-128, 128)) if trial > 2 else (-128, 0, 127)[trial]
        sp, lp = q.squash_params(scale, zp), q.length_params(scale, zp)
        got = native.squash(x, sp)
        np.testing.assert_array_equal(got, ref.squash_s8(x, sp))
        np.testing.assert_array_equal(native.squash(x, sp, use_table=False), got)
        np.testing.assert_array_equal(native.length(x, lp), ref.length_s8(x, lp))
    assert len(np.unique(got)) > 1  # the case is not degenerate


def test_squash_length_extremes():
    """Max dim, both ends of the zero point, tiny and huge scales, zero vectors."""
    rng = _rng(8)
    for dim in (16384, 1000):
        x = rng.integers(-128, 128, size=(3, dim)).astype(np.int8)
        x = np.concatenate([x, _edge_capsules(dim)])
        for scale, zp in ((1e-6, -128), (1e-6, 127), (1.0, 127), (1e3, -128), (1e-12, 0)):
            sp, lp = q.squash_params(scale, zp), q.length_params(scale, zp)
            np.testing.assert_array_equal(native.squash(x, sp), ref.squash_s8(x, sp))
            np.testing.assert_array_equal(native.length(x, lp), ref.length_s8(x, lp))
    zero = np.zeros((4, 6), np.int8)
    np.testing.assert_array_equal(native.squash(zero, q.squash_params(0.1, 0)), zero)
    np.testing.assert_array_equal(native.length(zero, q.length_params(0.1, 0)), [-128] * 4)


def test_squash_in_place_equals_out_of_place():
    lib = native.load()
    x = _rng(9).integers(-128, 128, size=(20, 7)).astype(np.int8)
    sp = q.squash_params(0.02, 5)
    expect = ref.squash_s8(x, sp)
    table = native.squash_table(7, sp)
    ctx = native.Context(table.ctypes.data_as(ctypes.c_void_p), table.size)
    for c in (ctypes.byref(ctx), None):
        buf = x.copy()
        p = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        st = lib.caps_squash_s8(c, ctypes.byref(native.CapsDims(20, 7)),
                                ctypes.byref(native.SquashParamsC(5, sp.sq_multiplier,
                                                                  sp.sq_exponent)), p, p)
        assert st == 0
        np.testing.assert_array_equal(buf, expect)


# ---------------------------------------------------------------------------
# Predictions, routing, class caps
# ---------------------------------------------------------------------------

def _dims_of(u, W):
    return q.ClassCapsDims.from_shapes(u.shape, W.shape)


def _check_layer(u, W, quant):
    """Every C path equals numpy on one sample; returns v."""
    dims = _dims_of(u, W)
    params = q.class_caps_params(dims, quant)
    u_hat = ref.predictions_s8(u, W, params.pred)
    np.testing.assert_array_equal(native.predictions(u, W, params.pred), u_hat)
    v = ref.dynamic_routing_s8(u_hat, params.routing)
    np.testing.assert_array_equal(native.dynamic_routing(u_hat, params.routing), v)
    np.testing.assert_array_equal(native.class_caps(u, W, params, store_predictions=True), v)
    np.testing.assert_array_equal(native.class_caps(u, W, params, store_predictions=False), v)
    return v


@pytest.mark.parametrize("routings", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("per_capsule", [False, True])
def test_class_caps_calibrated_random_shapes(routings, per_capsule):
    rng = _rng(10 * routings + per_capsule)
    varied = 0
    for _ in range(3):
        n_in = int(rng.choice([1, 2, 5, 31, 130, 300]))
        dims = (n_in, int(rng.integers(1, 10)), int(rng.integers(1, 12)), int(rng.integers(1, 18)))
        uq, Wq, quant = _calibrated_case(rng, *dims, routings, per_capsule)
        v = _check_layer(uq[0], Wq, quant)
        varied += int(len(np.unique(v)) > 1)
    assert varied >= 2


@pytest.mark.parametrize("routings", [1, 3, 5])
def test_class_caps_random_scales_saturating(routings):
    """Random (uncalibrated) scales: sums, logits and predictions saturate."""
    rng = _rng(200 + routings)
    for k in range(6):
        n_in, dim_in, n_out, dim_out = (int(rng.integers(1, 80)), int(rng.integers(1, 9)),
                                        int(rng.integers(1, 11)), int(rng.integers(1, 13)))
        u = rng.integers(-128, 128, size=(n_in, dim_in)).astype(np.int8)
        W = rng.integers(-127, 128, size=(n_in, n_out, dim_out, dim_in)).astype(np.int8)
        quant = _random_quant(rng, n_out, routings, bool(k % 2), spread=100.0)
        _check_layer(u, W, quant)


@pytest.mark.slow
def test_class_caps_thousands_of_input_capsules():
    rng = _rng(11)
    for dims, routings in (((3000, 8, 10, 16), 3), ((2049, 3, 5, 5), 4), ((1152, 8, 10, 16), 2)):
        uq, Wq, quant = _calibrated_case(rng, *dims, routings, True)
        v = _check_layer(uq[0], Wq, quant)
        assert len(np.unique(v)) > 1


@pytest.mark.parametrize("zp", [-128, 127])
@pytest.mark.parametrize("fill", [-128, 127, "zp"])
def test_class_caps_edge_inputs(zp, fill):
    """Constant inputs at both ends, zero vectors (u == zp), extreme zero points."""
    rng = _rng(12)
    n_in, dim_in, n_out, dim_out = 9, 5, 4, 6
    value = zp if fill == "zp" else fill
    u = np.full((n_in, dim_in), value, np.int8)
    W = rng.integers(-127, 128, size=(n_in, n_out, dim_out, dim_in)).astype(np.int8)
    for routings in (1, 3):
        quant = q.ClassCapsQuant(0.01, zp, [0.01] * n_out, 2.0, [0.5] * routings,
                                 [0.1] * (routings - 1))
        v = _check_layer(u, W, quant)
        if fill == "zp":
            assert not v.any()  # zero input capsules -> zero output, no division by zero
    W_ext = np.full((n_in, n_out, dim_out, dim_in), -128, np.int8)
    quant = q.ClassCapsQuant(1.0, zp, [1.0], 1e-3, [1e-3] * 3, [1e-3] * 2)
    _check_layer(np.full((n_in, dim_in), -128 if zp == 127 else 127, np.int8), W_ext, quant)


def test_zero_predictions_give_zero_output():
    n_in, dim_in, n_out, dim_out = 12, 4, 3, 5
    u = _rng(13).integers(-128, 128, size=(n_in, dim_in)).astype(np.int8)
    W = np.zeros((n_in, n_out, dim_out, dim_in), np.int8)
    quant = q.ClassCapsQuant(0.01, 0, [0.01], 0.1, [0.1] * 3, [0.1] * 2)
    assert not _check_layer(u, W, quant).any()


def test_batch_wrapper_matches_per_sample():
    rng = _rng(14)
    uq, Wq, quant = _calibrated_case(rng, 40, 4, 5, 6, 3, True)
    params = q.class_caps_params(_dims_of(uq[0], Wq), quant)
    batch = native.class_caps(uq, Wq, params)
    np.testing.assert_array_equal(batch, ref.class_caps_s8(uq, Wq, params))
    assert batch.shape == (2, 5, 6)


# ---------------------------------------------------------------------------
# Error handling of the C API and the bindings
# ---------------------------------------------------------------------------

def _raw_class_caps(dims, params, buf_size, store=1):
    lib = native.load()
    holder = native._PredictionsHolder(params.pred)
    cp = native.ClassCapsParamsC(holder.c, native._routing_c(params.routing))
    u = np.zeros(dims.n_in * dims.dim_in, np.int8)
    W = np.zeros(dims.n_in * dims.n_out * dims.dim_out * dims.dim_in, np.int8)
    out = np.zeros(dims.n_out * dims.dim_out, np.int8)
    buf = np.zeros(max(buf_size, 1), np.uint8)
    ctx = native.Context(buf.ctypes.data_as(ctypes.c_void_p), buf_size)
    dc = native.ClassCapsDimsC(*dims)
    p8 = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))  # noqa: E731
    return lib.caps_class_caps_s8(ctypes.byref(ctx), ctypes.byref(dc), ctypes.byref(cp), store,
                                  p8(u), p8(W), p8(out)), cp


def test_c_rejects_bad_arguments():
    dims = q.ClassCapsDims(10, 3, 4, 5)
    quant = q.ClassCapsQuant(0.01, 0, [0.01], 0.1, [0.1] * 3, [0.1] * 2)
    params = q.class_caps_params(dims, quant)
    for store in (0, 1):
        need = native.class_caps_buffer_size(dims, store)
        assert _raw_class_caps(dims, params, need, store)[0] == 0
        assert _raw_class_caps(dims, params, need - 1, store)[0] == -1
    # params derived for other dims
    other = q.class_caps_params(q.ClassCapsDims(11, 3, 4, 5), quant)
    assert _raw_class_caps(dims, other, native.class_caps_buffer_size(dims, 1))[0] == -1
    # shift out of range
    bad = q.ClassCapsParams(q.PredictionsParams(0, (2 ** 30,), (31,)), params.routing)
    assert _raw_class_caps(dims, bad, native.class_caps_buffer_size(dims, 1))[0] == -1
    lib = native.load()
    assert lib.caps_squash_s8(None, ctypes.byref(native.CapsDims(1, 0)),
                              ctypes.byref(native.SquashParamsC(0, 0, 0)), None, None) == -1
    assert lib.caps_squash_s8(None, ctypes.byref(native.CapsDims(2, 3)),
                              ctypes.byref(native.SquashParamsC(0, 1 << 30, 0)), None,
                              None) == -1
    for bad_dims in ((0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 1025, 1), (1, 1, 1, 16385),
                     (2 ** 20 + 1, 1, 1, 1), (2 ** 20, 1, 1024, 1)):
        assert native.class_caps_buffer_size(bad_dims) == -1, bad_dims


def test_bindings_raise_value_errors():
    dims = (6, 3, 2, 4)
    quant = q.ClassCapsQuant(0.01, 0, [0.01], 0.1, [0.1], [])
    params = q.class_caps_params(dims, quant)
    u = np.zeros((6, 3), np.int8)
    W = np.zeros((6, 2, 4, 3), np.int8)
    with pytest.raises(ValueError, match="int8"):
        native.class_caps(u.astype(np.float32), W, params)
    with pytest.raises(ValueError, match="N_in"):
        native.class_caps(np.zeros((5, 3), np.int8), W, params)
    with pytest.raises(ValueError, match="outside int8"):
        native.predictions(np.full((6, 3), 300), W, params.pred)
    with pytest.raises(ValueError, match="RoutingParams"):
        native.dynamic_routing(np.zeros((6, 2, 4), np.int8), params.pred)
    with pytest.raises(native.NativeError, match="ARG_ERROR"):
        native.dynamic_routing(np.zeros((7, 2, 4), np.int8), params.routing)


def test_float32_conversion_matches_c_float_argument():
    """A double scale goes through float32 in both derivations."""
    s = 0.1  # not representable: float32(0.1) != 0.1
    assert struct.unpack("<f", struct.pack("<f", s))[0] != s
    assert native.squash_params(s, 0) == q.squash_params(s, 0)
    assert q.squash_params(s, 0) == q.squash_params(float(np.float32(s)), 0)


def test_class_caps_many_small_random_layers():
    """Hundreds of small layers: rare rounding differences in any step show up."""
    rng = _rng(15)
    for k in range(250):
        routings = int(rng.integers(1, 6))
        dims = (int(rng.integers(1, 40)), int(rng.integers(1, 7)), int(rng.integers(1, 9)),
                int(rng.integers(1, 9)))
        uq, Wq, quant = _calibrated_case(rng, *dims, routings, bool(k % 2), agree=bool(k % 3))
        params = q.class_caps_params(_dims_of(uq[0], Wq), quant)
        expect = ref.class_caps_s8(uq[0], Wq, params)
        np.testing.assert_array_equal(native.class_caps(uq[0], Wq, params, k % 2 == 0), expect,
                                      err_msg=f"case {k}: dims {dims}, routings {routings}")
