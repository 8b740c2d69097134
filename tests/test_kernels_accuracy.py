"""The int8 kernels against their float references, within the error bounds
stated in docs/quantization.md ("Error against float").

Single ops use random int8 inputs (their float reference sees exactly the
dequantized inputs); the class-capsule layer uses the primary-capsule
activations of a trained CapsNet, calibrated on training images and
evaluated on held-out images.
"""
import math

import numpy as np
import pytest

from tflm_caps import native
from tflm_caps.reference import float_ref
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q


def sqnr_db(reference, test):
    reference = np.asarray(reference, dtype=np.float64)
    noise = np.sum((reference - np.asarray(test, dtype=np.float64)) ** 2)
    return math.inf if noise == 0 else 10.0 * math.log10(np.sum(reference ** 2) / noise)


def _scales(rng, n, lo=1e-4, hi=1.0):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


# Rounding (0.5 LSB) plus the gain table: a bucket midpoint is within 2^-8
# of the squared norm and |d ln gain / d ln sq| <= 1/2, so the gain is off
# by at most 2^-9 relative, 0.25 LSB at |v| < 128 LSB.
SQUASH_BOUND_LSB = 0.75 + 1e-5


def test_squash_within_three_quarters_lsb():
    """|v_int8/128 - squash(x)| <= 0.75 LSB + 1e-5 (target clipped to [-1, 127/128])."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for scale in _scales(rng, 150):
        dim = int(rng.integers(1, 20))
        zp = int(rng.integers(-128, 128))
        x = rng.integers(-128, 128, size=(300, dim)).astype(np.int8)
        v = native.squash(x, q.squash_params(scale, zp)).astype(np.float64) / 128
        target = float_ref.squash((x.astype(np.float64) - zp) * np.float32(scale))
        worst = max(worst, np.abs(v - np.clip(target, -1.0, 127 / 128)).max() * 128)
    print(f"\nsquash: max error {worst:.6f} LSB (1/128)")
    assert worst <= SQUASH_BOUND_LSB


def test_length_within_half_lsb():
    """|len_int8 - |x|| <= 0.5 LSB + 1e-5 (LSB 1/256, target clipped to [0, 255/256])."""
    rng = np.random.default_rng(1)
    worst = 0.0
    for scale in _scales(rng, 150, 1e-4, 0.1):
        dim = int(rng.integers(1, 20))
        zp = int(rng.integers(-128, 128))
        x = rng.integers(-128, 128, size=(300, dim)).astype(np.int8)
        got = (native.length(x, q.length_params(scale, zp)).astype(np.float64) + 128) / 256
        target = float_ref.length((x.astype(np.float64) - zp) * np.float32(scale))
        worst = max(worst, np.abs(got - np.clip(target, 0.0, 255 / 256)).max() * 256)
    print(f"\nlength: max error {worst:.6f} LSB (1/256)")
    assert worst <= 0.5 + 1e-5


def test_predictions_within_three_quarter_lsb():
    """Exact accumulation + TFLite double rounding: <= 0.75 LSB of the u_hat scale."""
    rng = np.random.default_rng(2)
    worst = 0.0
    for k in range(200):
        n_in, dim_in, n_out, dim_out = (int(v) for v in rng.integers(1, 12, 4))
        in_scale = float(_scales(rng, 1)[0])
        zp = int(rng.integers(-128, 128))
        ws = _scales(rng, n_out if k % 2 else 1, 1e-3, 0.1)
        uh = float(_scales(rng, 1, 1e-3, 3.0)[0])
        u = rng.integers(-128, 128, (n_in, dim_in)).astype(np.int8)
        W = rng.integers(-127, 128, (n_in, n_out, dim_out, dim_in)).astype(np.int8)
        p = q.predictions_params(in_scale, zp, ws, uh, n_out)
        got = native.predictions(u, W, p).astype(np.float64)
        w_real = W * np.float32(ws).astype(np.float64).reshape(1, -1, 1, 1)
        target = float_ref.predictions((u.astype(np.float64) - zp) * np.float32(in_scale),
                                       w_real) / np.float32(uh)
        worst = max(worst, np.abs(got - np.clip(target, -128, 127)).max())
    print(f"\npredictions: max error {worst:.4f} LSB")
    assert worst <= 0.75 + 1e-6


# ---------------------------------------------------------------------------
# Class-capsule layer on real activations
# ---------------------------------------------------------------------------

def _layer_data(model, dataset, calib=1000):
    """Float primary-capsule activations (train subset, test) and the class-caps weights."""
    import keras
    primary = keras.Model(model.inputs, model.get_layer("primary_caps").output)
    layer = model.get_layer("class_caps")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(dataset.x_train), size=min(calib, len(dataset.x_train)), replace=False)
    u_cal = primary.predict(dataset.x_train[pick], verbose=0, batch_size=256)
    u_test = primary.predict(dataset.x_test, verbose=0, batch_size=256)
    return (np.asarray(u_cal, np.float64), np.asarray(u_test, np.float64),
            np.asarray(layer.W.numpy(), np.float64), int(layer.routings))


def _evaluate_layer(u_cal, u_test, W, routings, per_capsule):
    quant = q.calibrate_class_caps(u_cal, W, routings, 1.0 / 128, 0, per_capsule=per_capsule)
    dims = q.ClassCapsDims.from_shapes(u_test.shape, W.shape)
    params = q.class_caps_params(dims, quant)
    Wq = q.quantize_weights(W, quant.weight_scales)
    uq = q.quantize(u_test, 1.0 / 128)
    v_int = native.class_caps(uq, Wq, params, store_predictions=True).astype(np.float64) / 128
    v_float = float_ref.class_caps_float(u_test, W, routings, return_intermediates=False)
    len_int, len_float = float_ref.length(v_int), float_ref.length(v_float)
    floor = sqnr_db(v_float, np.round(v_float * 128) / 128)  # output rounding alone
    return {
        "agreement": float(np.mean(len_int.argmax(1) == len_float.argmax(1))),
        "sqnr_v_db": sqnr_db(v_float, v_int),
        "sqnr_lengths_db": sqnr_db(len_float, len_int),
        "sqnr_floor_db": floor,
        "max_err_v_lsb": float(np.abs(v_int - v_float).max() * 128),
        "mean_err_v_lsb": float(np.abs(v_int - v_float).mean() * 128),
        "params": params, "uq": uq, "Wq": Wq,
    }


@pytest.fixture(scope="module")
def tiny_layer(trained_tiny):
    model, dataset = trained_tiny
    return _layer_data(model, dataset)


@pytest.mark.parametrize("per_capsule", [True, False])
def test_class_caps_on_trained_tiny(tiny_layer, per_capsule):
    u_cal, u_test, W, routings = tiny_layer
    m = _evaluate_layer(u_cal, u_test, W, routings, per_capsule)
    print(f"\ntiny class caps ({u_test.shape[1]}x{u_test.shape[2]}D -> {W.shape[1]}x"
          f"{W.shape[2]}D, {routings} routings, per_capsule={per_capsule}) on "
          f"{len(u_test)} held-out images: same longest capsule {m['agreement']:.4f}, "
          f"SQNR v {m['sqnr_v_db']:.2f} dB (output rounding floor {m['sqnr_floor_db']:.2f} dB), "
          f"lengths {m['sqnr_lengths_db']:.2f} dB, v error max {m['max_err_v_lsb']:.2f} / mean "
          f"{m['mean_err_v_lsb']:.3f} LSB")
    assert m["agreement"] >= 0.99
    assert m["sqnr_v_db"] >= 30.0
    assert m["max_err_v_lsb"] <= 4.0
    # the recompute mode is the same integers
    sample = m["uq"][:20]
    np.testing.assert_array_equal(
        native.class_caps(sample, m["Wq"], m["params"], store_predictions=False),
        native.class_caps(sample, m["Wq"], m["params"], store_predictions=True))


def test_routing_error_budget_on_trained_tiny(tiny_layer):
    """Routing alone (same int8 predictions into both): int8 routing loses little
    beyond what the fixed 1/128 output rounding costs."""
    u_cal, u_test, W, routings = tiny_layer
    quant = q.calibrate_class_caps(u_cal, W, routings, 1.0 / 128, 0)
    params = q.class_caps_params(q.ClassCapsDims.from_shapes(u_test.shape, W.shape), quant)
    Wq = q.quantize_weights(W, quant.weight_scales)
    uq = q.quantize(u_test[:300], 1.0 / 128)
    u_hat = np.stack([ref.predictions_s8(x, Wq, params.pred) for x in uq])
    v_int = np.stack([native.dynamic_routing(x, params.routing) for x in u_hat]) / 128.0
    v_float = float_ref.dynamic_routing(u_hat * np.float64(quant.uhat_scale), routings)
    agree = np.mean(float_ref.length(v_int).argmax(1) == float_ref.length(v_float).argmax(1))
    s = sqnr_db(v_float, v_int)
    print(f"\nrouting only: SQNR {s:.2f} dB, same longest capsule {agree:.4f}")
    assert s >= 30.0 and agree >= 0.99


@pytest.mark.slow
def test_class_caps_on_trained_costa_mnist(trained_costa_mnist):
    """The published edge model's layer size: 1024 x 4D -> 10 x 6D, 3 routings
    (calibrated on 1,000 training images)."""
    model, dataset = trained_costa_mnist
    u_cal, u_test, W, routings = _layer_data(model, dataset)
    m = _evaluate_layer(u_cal, u_test, W, routings, True)
    print(f"\ncosta2022-mnist class caps on {len(u_test)} held-out images: same longest "
          f"capsule {m['agreement']:.4f}, SQNR v {m['sqnr_v_db']:.2f} dB (floor "
          f"{m['sqnr_floor_db']:.2f} dB), lengths {m['sqnr_lengths_db']:.2f} dB, v error max "
          f"{m['max_err_v_lsb']:.2f} / mean {m['mean_err_v_lsb']:.3f} LSB")
    assert m["agreement"] >= 0.99
    assert m["sqnr_v_db"] >= 30.0
