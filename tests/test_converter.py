"""Converter on trained models: structure, options, and int8 vs Keras agreement.

The int8 models run in ``tf.lite`` with the numpy integer reference as the
capsule kernels (``kernels.make_interpreter``) and TFLite's reference
builtins; Keras is the float reference.
"""
import numpy as np
import pytest

from tflm_caps import tflite
from tflm_caps.tflite import model as M
from tflm_caps.tflite import tables

CAPS_OPS = ["CONV_2D", "CONV_2D", "RESHAPE", "TFLMCaps_Squash", "TFLMCaps_ClassCaps",
            "TFLMCaps_Length"]
CALIBRATION_SAMPLES = 200


def _convert(model, data, **kwargs):
    from tflm_caps.converter import convert_detailed
    return convert_detailed(model, data, num_samples=CALIBRATION_SAMPLES, **kwargs)


@pytest.fixture(scope="module")
def tiny_result(trained_tiny):
    model, data = trained_tiny
    return _convert(model, data)


@pytest.fixture(scope="module")
def costa_result(trained_costa_mnist):
    model, data = trained_costa_mnist
    return _convert(model, data, weight_granularity="per-capsule")


def _keras_lengths(trained):
    model, data = trained
    return np.asarray(model.predict(data.x_test, batch_size=250, verbose=0))


@pytest.fixture(scope="module")
def keras_tiny(trained_tiny):
    return _keras_lengths(trained_tiny)


@pytest.fixture(scope="module")
def keras_costa(trained_costa_mnist):
    return _keras_lengths(trained_costa_mnist)


def _ops(model_bytes):
    model = tflite.load(model_bytes)
    return [M.op_name(model, op) for op in model.subgraphs[0].operators]


def _assert_fully_int8(model_bytes, float_io=False):
    model = tflite.load(model_bytes)
    sg = model.subgraphs[0]
    io = {int(t) for t in sg.inputs} | {int(t) for t in sg.outputs}
    for index, tensor in enumerate(sg.tensors):
        has_data = model.buffers[tensor.buffer].data is not None and \
            len(model.buffers[tensor.buffer].data) > 0
        kind = tables.type_name(tensor.type)
        if float_io and index in io:
            assert kind == "float32", M.tensor_name(tensor)
        elif has_data:
            assert kind in ("int8", "int32"), (M.tensor_name(tensor), kind)
        else:
            assert kind == "int8", (M.tensor_name(tensor), kind)
    names = [M.op_name(model, op) for op in sg.operators]
    if float_io:
        assert names.count("QUANTIZE") == 1 and names[0] == "QUANTIZE"
        assert names.count("DEQUANTIZE") == 1 and names[-1] == "DEQUANTIZE"
    else:
        assert "QUANTIZE" not in names and "DEQUANTIZE" not in names


@pytest.mark.parametrize("which", ["tiny", "costa"])
def test_op_list_and_tensor_types(which, request):
    result = request.getfixturevalue(f"{which}_result")
    assert _ops(result.model) == CAPS_OPS
    _assert_fully_int8(result.model)
    s = result.summary.int8
    assert s.input_types == ["int8"] and s.output_types == ["int8"]
    # The float model of the same graph keeps the custom ops, in float.
    assert _ops(result.float_model) == CAPS_OPS
    assert result.summary.float.activation_types == {"float32": 7}


def test_custom_op_tensors_and_weights(costa_result, trained_costa_mnist):
    from tflm_caps.reference import quant

    model_obj = tflite.load(costa_result.model)
    sg = model_obj.subgraphs[0]
    ops = {M.op_name(model_obj, op): op for op in sg.operators}
    squash, cc, length = (ops["TFLMCaps_Squash"], ops["TFLMCaps_ClassCaps"],
                          ops["TFLMCaps_Length"])
    # Custom ops read their producers' int8 tensors directly.
    assert int(squash.inputs[0]) == int(ops["RESHAPE"].outputs[0])
    assert int(cc.inputs[0]) == int(squash.outputs[0])
    assert int(length.inputs[0]) == int(cc.outputs[0])
    fixed = {int(squash.outputs[0]): (1 / 128, 0), int(cc.outputs[0]): (1 / 128, 0),
             int(length.outputs[0]): (1 / 256, -128)}
    for t, (scale, zp) in fixed.items():
        q = sg.tensors[t].quantization
        assert list(q.scale) == [np.float32(scale)] and list(q.zeroPoint) == [zp]
    # Per-capsule symmetric int8 weights, equal to the reference quantization of W.
    w_tensor = sg.tensors[int(cc.inputs[1])]
    assert M.tensor_name(w_tensor) == "class_caps/W"
    q = w_tensor.quantization
    assert q.quantizedDimension == 1 and len(q.scale) == 10 and not np.any(q.zeroPoint)
    w_int8 = M.constant_array(model_obj, w_tensor, np.int8)
    model, _ = trained_costa_mnist
    W = model.get_layer("class_caps").W.numpy()
    scales = quant.weight_scales(W, per_capsule=True)
    np.testing.assert_array_equal(np.asarray(q.scale, np.float64), scales)
    np.testing.assert_array_equal(w_int8, quant.quantize_weights(W, scales))
    assert w_int8.min() >= -127 and np.abs(w_int8).max() == 127
    # Dequantized weights are within half a step of the float weights.
    err = np.abs(w_int8 * scales.reshape(1, -1, 1, 1) - W)
    assert np.all(err <= scales.reshape(1, -1, 1, 1) / 2 + 1e-9)


def test_custom_options_round_trip(costa_result):
    from tflm_caps.converter import options

    model_obj = tflite.load(costa_result.model)
    report = costa_result.summary.class_caps[0]
    for op in model_obj.subgraphs[0].operators:
        name = M.op_name(model_obj, op)
        if not name.startswith("TFLMCaps_"):
            continue
        raw = bytes(op.customOptions)
        decoded = options.decode(name, raw)
        assert decoded["version"] == 1
        plain = {k: v for k, v in decoded.items() if k != "version"}
        assert options.encode(name, plain) == raw  # byte-identical round trip
        if name == "TFLMCaps_ClassCaps":
            assert decoded["num_routing"] == 3 and decoded["store_predictions"] == 1
            assert options.map_byte_width(raw) == 4  # docs/custom_ops.md guarantee
            assert decoded["u_hat_scale"] == report["uhat_scale"]
            assert decoded["s_scales"] == report["s_scales"]
            assert decoded["b_scales"] == report["b_scales"]
            assert len(decoded["s_scales"]) == 3 and len(decoded["b_scales"]) == 2
        else:
            assert set(decoded) == {"version"}


def test_routing_scales_follow_reference_calibration(costa_result, trained_costa_mnist):
    """The stored scales are quant.calibrate_class_caps of the float primary capsules
    of the calibration images (train split), recomputed here from Keras."""
    import keras

    from tflm_caps.reference import quant

    model, data = trained_costa_mnist
    images = data.calibration_subset(CALIBRATION_SAMPLES, seed=0)
    primary = keras.Model(model.inputs, model.get_layer("primary_caps").output)
    u = primary.predict(images, batch_size=100, verbose=0)
    W = model.get_layer("class_caps").W.numpy()
    expected = quant.calibrate_class_caps(u, W, 3, 1 / 128, 0, per_capsule=True)
    got = costa_result.summary.class_caps[0]
    assert got["calibration_samples"] == CALIBRATION_SAMPLES
    np.testing.assert_allclose(got["uhat_scale"], expected.uhat_scale, rtol=1e-4)
    np.testing.assert_allclose(got["s_scales"], expected.s_scales, rtol=1e-4)
    np.testing.assert_allclose(got["b_scales"], expected.b_scales, rtol=1e-3)


@pytest.mark.parametrize("which", ["tiny", "costa"])
def test_int8_agrees_with_keras(which, request, bundled_data):
    from tflm_caps.converter import kernels

    result = request.getfixturevalue(f"{which}_result")
    ref = request.getfixturevalue(f"keras_{which}")
    lengths, raw = kernels.run_model(result.model, bundled_data.x_test)
    assert raw.dtype == np.int8 and lengths.shape == ref.shape == (1000, 10)
    agreement = float(np.mean(lengths.argmax(1) == ref.argmax(1)))
    print(f"\n{which}: int8/Keras agreement {agreement:.4f}, "
          f"max |length error| {np.abs(lengths - ref).max():.4f}")
    assert agreement >= 0.99
    # Lengths themselves: a few output steps (1/256) of the float lengths.
    assert np.abs(lengths - ref).max() < 8 / 256
    assert np.mean(np.abs(lengths - ref)) < 1 / 256


def test_intermediate_tensors_match_keras_layers(costa_result, trained_costa_mnist):
    """Layer by layer: the int8 primary capsules, class capsules and lengths of the
    tf.lite run, dequantized, against the Keras layer outputs."""
    import keras

    from tflm_caps.converter import kernels
    from tflm_caps.reference import quant

    model, data = trained_costa_mnist
    x = data.x_test[:20]
    names = ["primary_caps", "class_caps", "length"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    ref = dict(zip(names, probe.predict(x, verbose=0)))
    interp, kset = kernels.make_interpreter(costa_result.model, preserve_all_tensors=True)
    by_name = {d["name"]: d for d in interp.get_tensor_details()}
    inp = interp.get_input_details()[0]
    worst = {n: 0.0 for n in names}
    for k in range(len(x)):
        interp.set_tensor(inp["index"], quant.quantize(x[k:k + 1], *inp["quantization"]))
        interp.invoke()
        kset.raise_pending()
        for n in names:
            d = by_name[n]
            got = quant.dequantize(interp.get_tensor(d["index"]), *d["quantization"])
            worst[n] = max(worst[n], float(np.abs(got - ref[n][k:k + 1]).max()))
    print("\nmax abs error per layer:", worst)
    assert worst["primary_caps"] < 6 / 128
    assert worst["class_caps"] < 8 / 128
    assert worst["length"] < 8 / 256


def test_custom_ops_recomputed_from_reference(costa_result, trained_costa_mnist):
    """Plumbing check independent of the kernel wrappers: from the int8 RESHAPE
    output of a tf.lite run, squash -> class caps -> length computed directly
    with tflm_caps.reference from the file's tensors and options reproduce the
    model output bit for bit."""
    from tflm_caps.converter import kernels, options
    from tflm_caps.reference import int8 as ref8
    from tflm_caps.reference import quant

    model_obj = tflite.load(costa_result.model)
    sg = model_obj.subgraphs[0]
    ops = {M.op_name(model_obj, op): op for op in sg.operators}
    reshape_out = int(ops["RESHAPE"].outputs[0])
    rq = sg.tensors[reshape_out].quantization
    cc = ops["TFLMCaps_ClassCaps"]
    w_tensor = sg.tensors[int(cc.inputs[1])]
    W = M.constant_array(model_obj, w_tensor, np.int8)
    opts = options.decode("TFLMCaps_ClassCaps", bytes(cc.customOptions))
    q = quant.ClassCapsQuant(1 / 128, 0, tuple(w_tensor.quantization.scale),
                             opts["u_hat_scale"], tuple(opts["s_scales"]),
                             tuple(opts["b_scales"]))
    params = quant.class_caps_params(quant.ClassCapsDims.from_shapes((1024, 4), W.shape), q)
    interp, kset = kernels.make_interpreter(costa_result.model, preserve_all_tensors=True)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    _, data = trained_costa_mnist
    for k in range(5):
        interp.set_tensor(inp["index"], quant.quantize(data.x_test[k:k + 1],
                                                       *inp["quantization"]))
        interp.invoke()
        kset.raise_pending()
        h = interp.get_tensor(reshape_out)
        u = ref8.squash_s8(h, quant.squash_params(float(rq.scale[0]), int(rq.zeroPoint[0])))
        v = ref8.class_caps_s8(u, W, params)
        y = ref8.length_s8(v, quant.length_params(1 / 128, 0))
        np.testing.assert_array_equal(y, interp.get_tensor(out["index"]))


def test_float_model_matches_keras(costa_result, keras_costa, bundled_data):
    from tflm_caps.converter import kernels

    lengths, _ = kernels.run_model(costa_result.float_model, bundled_data.x_test[:100],
                                   reference_builtins=False)
    np.testing.assert_allclose(lengths, keras_costa[:100], atol=2e-5)


def test_size_and_summary(costa_result):
    s = costa_result.summary
    assert s.int8.size_bytes == len(costa_result.model)
    assert s.float.size_bytes == len(costa_result.float_model)
    print(f"\ncosta2022-mnist: float {s.float.size_bytes} B, int8 {s.int8.size_bytes} B "
          f"({100 * s.size_ratio:.1f}%), calibration {s.calibration_seconds:.1f} s")
    assert s.size_ratio <= 0.27
    assert s.calibration_samples == CALIBRATION_SAMPLES and s.calibration_seconds > 0
    assert s.removed_conversions >= 2  # the DEQUANTIZE before and QUANTIZE after
    assert s.int8.has_metadata and s.float.has_metadata
    d = s.to_dict()
    assert d["int8"]["op_counts"]["TFLMCaps_ClassCaps"] == 1
    assert "TFLMCaps_ClassCaps x1" in s.format()
    # Round trip through the schema reader is lossless.
    reread = tflite.load(tflite.dump(tflite.load(costa_result.model)))
    assert [M.op_name(reread, op) for op in reread.subgraphs[0].operators] == CAPS_OPS


def test_float_io_model(trained_tiny, tiny_result):
    from tflm_caps.converter import kernels

    model, data = trained_tiny
    result = _convert(model, data, io_dtype="float32", metadata=None)
    assert _ops(result.model) == ["QUANTIZE"] + CAPS_OPS + ["DEQUANTIZE"]
    _assert_fully_int8(result.model, float_io=True)
    x = data.x_test[:50]
    lengths, raw = kernels.run_model(result.model, x)
    ref, _ = kernels.run_model(tiny_result.model, x)
    assert raw.dtype == np.float32
    # Same integer pipeline: the float output is the int8 output dequantized.
    np.testing.assert_array_equal(lengths, ref)


def test_recompute_predictions_and_batch(trained_tiny, tiny_result):
    from tflm_caps.converter import kernels, options

    model, data = trained_tiny
    result = _convert(model, data, store_predictions=False, batch_size=4, metadata=None)
    model_obj = tflite.load(result.model)
    sg = model_obj.subgraphs[0]
    assert list(sg.tensors[int(sg.inputs[0])].shape) == [4, 28, 28, 1]
    cc = next(op for op in sg.operators if M.op_name(model_obj, op) == "TFLMCaps_ClassCaps")
    assert options.decode("TFLMCaps_ClassCaps", bytes(cc.customOptions))["store_predictions"] == 0
    x = data.x_test[:40]
    batched, _ = kernels.run_model(result.model, x)
    single, _ = kernels.run_model(tiny_result.model, x)
    # Same calibration images and arithmetic: identical outputs.
    np.testing.assert_array_equal(batched, single)


def test_tflm_host_runs_converted_model_bit_exact(costa_result, trained_costa_mnist):
    """The int8 model in the TFLM host interpreter with the project's C operators
    gives exactly the outputs of the tf.lite + numpy-reference run."""
    runtime = pytest.importorskip("tflm_caps.runtime")
    from tflm_caps.converter import kernels

    _, data = trained_costa_mnist
    x = data.x_test[:100]
    runner = runtime.TFLMRunner(costa_result.model)
    tflm = np.asarray(runner.predict(x, dequantize=False)).reshape(100, 10)
    _, raw = kernels.run_model(costa_result.model, x)
    np.testing.assert_array_equal(tflm, raw)
