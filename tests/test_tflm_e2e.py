"""End to end: Keras -> tflm_caps.convert -> TFLM host interpreter.

- The TFLM output of a converted model equals, bit for bit, the same model
  run in tf.lite with TFLite's reference builtins and the numpy int8
  reference kernels (tflm_caps.converter.kernels): our TFLM operators and
  the reference agree inside a real graph, not only in one-op models.
- Top-1 agreement with the float Keras model (tiny here; costa2022-mnist
  in test_demo.py).
"""
import numpy as np
import pytest

from tflm_caps.reference import quant as q
from tflm_caps.runtime import TFLMRunner


@pytest.fixture(scope="module")
def tiny_models(trained_tiny):
    from tflm_caps import convert
    model, ds = trained_tiny
    calib = ds.calibration_subset(100)
    per_tensor = convert(model, calib, num_samples=100)
    per_capsule_float_io = convert(model, calib, num_samples=100,
                                   weight_granularity="per-capsule", io_dtype="float32")
    recompute = convert(model, calib, num_samples=100, store_predictions=False)
    return {"per_tensor": per_tensor, "per_capsule_float_io": per_capsule_float_io,
            "recompute": recompute}


@pytest.fixture(scope="module")
def keras_tiny_predictions(trained_tiny):
    model, ds = trained_tiny
    return model.predict(ds.x_test, batch_size=256, verbose=0)


def test_tflm_matches_tflite_reference_bit_for_bit(trained_tiny, tiny_models):
    from tflm_caps.converter.kernels import run_model
    _, ds = trained_tiny
    model = tiny_models["per_tensor"]
    x = ds.x_test[:200]
    _, raw_ref = run_model(model, x)
    runner = TFLMRunner(model)
    scale, zp = runner.info.input_tensors()[0].quantization
    raw_tflm = runner.predict(q.quantize(x, scale, zp), dequantize=False)
    assert raw_tflm.dtype == np.int8
    np.testing.assert_array_equal(raw_tflm, np.asarray(raw_ref).reshape(raw_tflm.shape))


@pytest.mark.parametrize("variant", ["per_tensor", "per_capsule_float_io", "recompute"])
def test_tiny_agrees_with_keras(trained_tiny, tiny_models, keras_tiny_predictions, variant):
    _, ds = trained_tiny
    runner = TFLMRunner(tiny_models[variant])
    expected_io = np.float32 if variant == "per_capsule_float_io" else np.int8
    assert runner.info.input_tensors()[0].dtype == expected_io
    lengths = runner.predict(ds.x_test)
    float_pred = keras_tiny_predictions.argmax(-1)
    int8_pred = lengths.argmax(-1)
    agreement = np.mean(float_pred == int8_pred)
    float_acc = np.mean(float_pred == ds.y_test)
    int8_acc = np.mean(int8_pred == ds.y_test)
    print(f"tiny {variant}: agreement {agreement:.4f}, float {float_acc:.4f}, "
          f"int8 {int8_acc:.4f}")
    assert agreement >= 0.99
    assert abs(float_acc - int8_acc) <= 0.01
    # lengths track the float ones closely
    assert np.max(np.abs(lengths - keras_tiny_predictions)) < 0.1


def test_recomputed_predictions_are_bit_identical(trained_tiny, tiny_models):
    """store_predictions only trades RAM for speed: same integers, less arena."""
    from tflm_caps.runtime import find_min_arena_size
    _, ds = trained_tiny
    x = ds.x_test[:100]
    stored = TFLMRunner(tiny_models["per_tensor"]).predict(x, dequantize=False)
    recomputed = TFLMRunner(tiny_models["recompute"]).predict(x, dequantize=False)
    np.testing.assert_array_equal(stored, recomputed)
    assert find_min_arena_size(tiny_models["recompute"]) < \
        find_min_arena_size(tiny_models["per_tensor"])
