"""Packed 4-bit class-capsule weights: the TFLite INT4 packing, the numpy
reference and the portable C kernels (caps_*_s4), bit for bit."""
import math

import numpy as np
import pytest

from tflm_caps import native
from tflm_caps.reference import float_ref
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q


def _log_uniform(rng, lo, hi, size=None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size=size))


# ---------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------

def test_pack_int4_nibble_order_is_tflms():
    # TFLM's UnpackDenseInt4IntoInt8: even elements in the low nibble
    packed = q.pack_int4(np.array([1, -2, 7, -8, 3], np.int8))
    assert packed.tolist() == [0xE1, 0x87, 0x03]
    np.testing.assert_array_equal(q.unpack_int4(packed, (5,)), [1, -2, 7, -8, 3])
    np.testing.assert_array_equal(q.unpack_int4(bytes([0x7F, 0x80]), (4,)), [-1, 7, 0, -8])


def test_pack_unpack_round_trip_every_value():
    rng = np.random.default_rng(0)
    for shape in [(16,), (3, 5), (2, 3, 4, 5), (1,), (7, 1, 1, 1)]:
        x = rng.integers(-8, 8, size=shape).astype(np.int8)
        packed = q.pack_int4(x)
        assert packed.size == q.int4_packed_size(x.size) == (x.size + 1) // 2
        np.testing.assert_array_equal(q.unpack_int4(packed, shape), x)


def test_pack_unpack_errors():
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        q.pack_int4(np.array([8]))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        q.pack_int4(np.array([0.5]))
    with pytest.raises(ValueError, match="needs 2 bytes, got 3"):
        q.unpack_int4(b"abc", (4,))


def test_int4_weight_quantization():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(6, 3, 2, 4))
    ws = q.weight_scales(W, per_capsule=True, bits=4)
    np.testing.assert_allclose(ws, np.float32(np.abs(W).max(axis=(0, 2, 3)) / 7), rtol=1e-7)
    Wq = q.quantize_weights(W, ws, bits=4)
    assert Wq.dtype == np.int8 and Wq.min() >= -7 and Wq.max() <= 7
    assert {-7, 7} <= set(np.unique(Wq).tolist())
    # round half away from zero of W / scale, as for int8
    expect = np.sign(W / ws.reshape(1, -1, 1, 1)) * np.floor(np.abs(W / ws.reshape(1, -1, 1, 1))
                                                             + 0.5)
    np.testing.assert_array_equal(Wq, expect)
    with pytest.raises(ValueError, match="weight bits must be one of 8, 4"):
        q.weight_scales(W, bits=2)
    with pytest.raises(ValueError, match="weight bits"):
        q.quantize_weights(W, ws, bits=16)


# ---------------------------------------------------------------------------
# Kernels: C == numpy
# ---------------------------------------------------------------------------

def _case(rng, n_in, dim_in, n_out, dim_out, routings, per_capsule, zp=0, full_range=False):
    u = float_ref.squash(rng.normal(size=(2, n_in, dim_in)))
    W = rng.normal(size=(n_in, n_out, dim_out, dim_in)) / math.sqrt(dim_in)
    W[:, 0] += 0.4 / dim_in
    quant = q.calibrate_class_caps(u, W, routings, 1.0 / 128, zp, per_capsule=per_capsule,
                                   weight_bits=4)
    Wq = q.quantize_weights(W, quant.weight_scales, bits=4)
    if full_range:  # every nibble, -8 included (a valid INT4 code)
        Wq = rng.integers(-8, 8, size=Wq.shape).astype(np.int8)
    return q.quantize(u, 1.0 / 128, zp), Wq, quant


SHAPES = [  # (n_in, dim_in, n_out, dim_out): odd dims with an even block, costa, sabour-like
    (37, 4, 10, 6), (9, 3, 4, 6), (13, 5, 2, 3), (11, 8, 3, 16), (5, 1, 3, 2), (300, 4, 3, 6),
    (6, 2, 1, 1), (4, 7, 5, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_class_caps_s4_c_equals_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    for per_capsule, zp, full in ((True, 0, False), (False, -5, True), (True, 17, True)):
        uq, Wq, quant = _case(rng, *shape, routings=3, per_capsule=per_capsule, zp=zp,
                              full_range=full)
        packed = q.pack_int4(Wq)
        params = q.class_caps_params(shape, quant)
        expect = ref.class_caps_s4(uq, packed, Wq.shape, params)
        np.testing.assert_array_equal(expect, ref.class_caps_s8(uq, Wq, params))
        for store in (True, False):
            got = native.class_caps_s4(uq, packed, Wq.shape, params, store_predictions=store)
            np.testing.assert_array_equal(got, expect)
        np.testing.assert_array_equal(native.class_caps(uq, Wq, params), expect)
        np.testing.assert_array_equal(
            native.predictions_s4(uq[0], packed, Wq.shape, params.pred),
            ref.predictions_s4(uq[0], packed, Wq.shape, params.pred))


def test_predictions_s4_random_scales_saturate_like_numpy():
    rng = np.random.default_rng(7)
    for _ in range(40):
        shape = (int(rng.integers(1, 20)), int(rng.choice([2, 4, 6, 8])),
                 int(rng.integers(1, 12)), int(rng.integers(1, 9)))
        n_out = shape[2]
        Wq = rng.integers(-8, 8, size=(shape[0], n_out, shape[3], shape[1])).astype(np.int8)
        uq = rng.integers(-128, 128, size=(shape[0], shape[1])).astype(np.int8)
        ws = _log_uniform(rng, 1e-3, 1.0, n_out if rng.random() < 0.5 else 1)
        p = q.predictions_params(float(_log_uniform(rng, 1e-3, 1.0)), int(rng.integers(-128, 128)),
                                 ws, float(_log_uniform(rng, 1e-4, 1.0)), n_out)
        packed = q.pack_int4(Wq)
        got = native.predictions_s4(uq, packed, Wq.shape, p)
        np.testing.assert_array_equal(got, ref.predictions_s8(uq, Wq, p))
        assert native.predictions(uq, Wq, p).tolist() == got.tolist()


def test_s4_refuses_a_block_that_does_not_start_on_a_byte():
    # n_out * dim_out * dim_in odd: W[1] would start in the middle of a byte
    dims = q.ClassCapsDims(4, 3, 1, 5)
    assert native.predictions_s4_buffer_size(dims) == -1
    assert native.class_caps_buffer_size(dims, True, weight_bits=4) == -1
    assert native.class_caps_buffer_size(dims, True, weight_bits=8) > 0
    even = q.ClassCapsDims(4, 3, 2, 5)
    assert native.class_caps_buffer_size(even, False, weight_bits=4) == \
        native.class_caps_buffer_size(even, False)
    p = q.predictions_params(0.01, 0, [0.01], 0.01, 1)
    u = np.zeros((4, 3), np.int8)
    with pytest.raises(ValueError, match="is odd"):
        native.predictions_s4(u, b"\0" * 30, (4, 1, 5, 3), p)
    with pytest.raises(ValueError, match="is odd"):
        ref.predictions_s4(u, b"\0" * 30, (4, 1, 5, 3), p)
