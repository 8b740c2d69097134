"""Each capsule custom op run in TFLM (one-op models) equals the numpy int8
reference (tflm_caps.reference) bit for bit."""
import numpy as np
import pytest

from support.model_builder import class_caps_model, length_model, squash_model
from tflm_caps import reference as ref
from tflm_caps.reference import quant as q
from tflm_caps.runtime import TFLMRunner


def _capsules(rng, n, caps, dim):
    """Random int8 capsules with the corner cases: a zero-offset capsule,
    all -128, all 127 and alternating extremes."""
    x = rng.integers(-128, 128, (n, caps, dim)).astype(np.int8)
    x[0, 0] = -128
    x[0, -1] = 127
    if n > 1:
        x[1, 0, ::2] = -128
        x[1, 0, 1::2] = 127
    return x


SQUASH_CASES = [  # (model batch, N, D, scale, zero point)
    (1, 8, 4, 0.02, 0),
    (1, 32, 8, 0.0371, -7),
    (2, 5, 16, 1.7, 100),
    (3, 1, 1, 1e-4, -128),
    (1, 3, 300, 0.005, 12),
]


@pytest.mark.parametrize("batch,n,d,scale,zp", SQUASH_CASES)
def test_squash_bit_exact(batch, n, d, scale, zp):
    rng = np.random.default_rng(n * d)
    x = _capsules(rng, 4 * batch, n, d)
    x[-1, 0] = zp  # a capsule exactly at the zero point: squash gives 0
    y = TFLMRunner(squash_model((batch, n, d), scale, zp)).predict(x, dequantize=False)
    expected = ref.squash_s8(x, q.squash_params(scale, zp))
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, expected)
    assert not y[-1, 0].any()


@pytest.mark.parametrize("batch,n,d,scale,zp", SQUASH_CASES)
def test_length_bit_exact(batch, n, d, scale, zp):
    rng = np.random.default_rng(n + d)
    x = _capsules(rng, 4 * batch, n, d)
    y = TFLMRunner(length_model((batch, n, d), scale, zp)).predict(x, dequantize=False)
    np.testing.assert_array_equal(y, ref.length_s8(x, q.length_params(scale, zp)))


def _class_caps_problem(seed, n_in, d_in, n_out, d_out, routings, per_capsule):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5 / np.sqrt(d_in), (n_in, n_out, d_out, d_in))
    w[:, 0] *= 3.0  # one output capsule with much larger weights: per-capsule scales differ
    u = rng.normal(0, 0.4, (24, n_in, d_in))
    u = u / (1 + np.linalg.norm(u, axis=-1, keepdims=True))  # squashed-like inputs
    w_scales = q.weight_scales(w, per_capsule=per_capsule)
    w_q = q.quantize_weights(w, w_scales)
    quant = q.calibrate_class_caps(u[:16], w, routings, 1 / 128, 0, w_scales=w_scales)
    u_q = q.quantize(u, quant.input_scale, quant.input_zero_point)
    return u_q, w_q, quant


CLASS_CAPS_CASES = [  # (n_in, d_in, n_out, d_out, routings, per_capsule, store, batch)
    (64, 4, 10, 6, 3, True, True, 1),
    (64, 4, 10, 6, 3, True, False, 1),
    (48, 8, 10, 16, 3, False, True, 2),
    (100, 4, 5, 6, 2, True, True, 1),
    (20, 3, 4, 5, 1, False, True, 1),
    (1, 1, 1, 1, 3, True, False, 3),
    (300, 8, 3, 4, 5, True, True, 1),
]


@pytest.mark.parametrize("n_in,d_in,n_out,d_out,routings,per_capsule,store,batch",
                         CLASS_CAPS_CASES)
def test_class_caps_bit_exact(n_in, d_in, n_out, d_out, routings, per_capsule, store, batch):
    u_q, w_q, quant = _class_caps_problem(n_in * 7 + routings, n_in, d_in, n_out, d_out,
                                          routings, per_capsule)
    params = q.class_caps_params(q.ClassCapsDims(n_in, d_in, n_out, d_out), quant)
    runner = TFLMRunner(class_caps_model(batch, w_q, quant, store_predictions=store))
    y = runner.predict(u_q, dequantize=False)
    expected = ref.class_caps_s8(u_q, w_q, params)
    assert y.shape == (len(u_q), n_out, d_out)
    np.testing.assert_array_equal(y, expected)
    # Not a degenerate comparison: the outputs carry information.
    assert np.abs(expected.astype(int)).max() > 10


def test_class_caps_extreme_inputs_bit_exact():
    """Saturated inputs (all -128 / 127) and the zero point exactly."""
    u_q, w_q, quant = _class_caps_problem(3, 32, 4, 10, 6, 3, True)
    u_q = u_q[:3].copy()
    u_q[0] = -128
    u_q[1] = 127
    u_q[2] = quant.input_zero_point
    params = q.class_caps_params(q.ClassCapsDims(32, 4, 10, 6), quant)
    y = TFLMRunner(class_caps_model(1, w_q, quant)).predict(u_q, dequantize=False)
    np.testing.assert_array_equal(y, ref.class_caps_s8(u_q, w_q, params))


def test_dequantized_outputs_use_the_fixed_scales():
    x = np.array([[[30, 40]]], np.int8)  # scale 0.1: |x| = 5 -> squash length 25/26
    y = TFLMRunner(squash_model((1, 1, 2), 0.1, 0)).predict(x)
    np.testing.assert_allclose(np.linalg.norm(y), 25 / 26, atol=1 / 128)
    lengths = TFLMRunner(length_model((1, 1, 2), 0.1, 0)).predict(x)
    assert lengths.shape == (1, 1) and lengths.dtype == np.float32
    # 5.0 saturates the length range [0, 255/256]
    assert lengths[0, 0] == pytest.approx(255 / 256)
