"""Every zoo model (realistic random biases) converts to a fully int8 model;
other layer combinations convert too.  Structural checks on the flatbuffer,
the size budget, and that the converter's clean-up changes no output."""
import numpy as np
import pytest

from tflm_caps import tflite
from tflm_caps.tflite import model as M
from tflm_caps.tflite import tables

# int8 / float size limit for every published model.
SIZE_RATIO = 0.27
PUBLISHED = ("costa2022-mnist", "costa2022-cifar10", "costa2022-smallnorb", "sabour2017-mnist")
# `tiny` (27k parameters, a test model) cannot meet SIZE_RATIO: even with
# no metadata at all its int8 file is 27.6% of the float one, because the
# int8 quantization parameters (per-channel scales + int64 zero points, which
# TFLite and TFLM require in equal numbers) add ~0.9 KB to the same ~2.4 KB of
# flatbuffer structure on 27 KB of weights.  Measured 28.2%; this guards it.
TINY_SIZE_RATIO = 0.283


def _images(shape, n, bundled_data, seed=1):
    if tuple(shape) == bundled_data.input_shape:
        return bundled_data.calibration_subset(n, seed=seed)
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def realistic_biases(model, seed=3):
    """Small random non-zero biases, as a trained model has (zoo models start
    with zero biases).  Zero biases are not representative: the TF converter
    shares one buffer among identical all-zero biases (in the float and the
    int8 file alike), so untrained models would under-count bias bytes."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith("bias"):
            w.assign(rng.normal(0.0, 0.05, w.shape).astype(np.float32))
    return model


_CONVERTED = {}  # zoo name -> (ConversionResult, model bytes before the clean-up)


def convert_zoo(name, bundled_data):
    """Convert zoo model ``name`` once per session (realistic biases, default
    metadata).  Also returns the same conversion as it was before
    ``converter_patches.slim`` and ``tflite.graph.drop_dead_data`` ran:
    captured when the converter calls ``slim.strip_bias_quantization`` and
    pruned of unreachable tensors only."""
    if name in _CONVERTED:
        return _CONVERTED[name]
    from tflm_caps import models
    from tflm_caps.converter import convert_detailed
    from tflm_caps.converter_patches import slim

    model = realistic_biases(models.build(name))
    shape = models.ZOO[name]["input_shape"]
    samples = 4 if name == "sabour2017-mnist" else 16
    snapshots = []
    strip = slim.strip_bias_quantization

    def snapshot_then_strip(q_model):
        snapshots.append(tflite.dump(q_model))
        return strip(q_model)

    slim.strip_bias_quantization = snapshot_then_strip
    try:
        result = convert_detailed(model, _images(shape, samples, bundled_data),
                                  num_samples=samples)
    finally:
        slim.strip_bias_quantization = strip
    assert len(snapshots) == 1, "convert_detailed no longer calls slim.strip_bias_quantization"
    before = tflite.load(snapshots[0])
    tflite.prune(before, dead_data=False)
    _CONVERTED[name] = result, tflite.dump(before)
    return _CONVERTED[name]


def check_fully_int8(model_bytes):
    """Every activation/weight tensor int8 (int32 only for constants: biases,
    shapes); no QUANTIZE/DEQUANTIZE; returns the op names."""
    model = tflite.load(model_bytes)
    assert len(model.subgraphs) == 1
    sg = model.subgraphs[0]
    for tensor in sg.tensors:
        buf = model.buffers[tensor.buffer].data
        constant = buf is not None and len(buf) > 0
        kind = tables.type_name(tensor.type)
        assert kind == "int8" or (constant and kind == "int32"), (M.tensor_name(tensor), kind)
        if kind == "int8":
            q = tensor.quantization
            assert q is not None and len(q.scale) >= 1 and np.all(np.asarray(q.scale) > 0)
    names = [M.op_name(model, op) for op in sg.operators]
    assert "QUANTIZE" not in names and "DEQUANTIZE" not in names
    # Nothing unreachable is left in the file.
    used = {int(t) for op in sg.operators for t in list(op.inputs) + list(op.outputs)}
    assert used | {int(t) for t in sg.inputs} == set(range(len(sg.tensors)))
    referenced = {t.buffer for t in sg.tensors} | {m.buffer for m in model.metadata or []}
    assert referenced | {0} == set(range(len(model.buffers)))
    # No dead data: only the sentinel buffer is empty, metadata names are
    # unique, int32 biases carry no (unused) quantization arrays.
    assert all(b.data is not None and len(b.data) > 0 for b in model.buffers[1:])
    md_names = [m.name for m in model.metadata or []]
    assert len(md_names) == len(set(md_names)) and b"min_runtime_version" in md_names
    for op, name in zip(sg.operators, names):
        if name == "CONV_2D" and len(op.inputs) > 2:
            assert sg.tensors[int(op.inputs[2])].quantization is None
    assert_buffers_aligned(model_bytes)
    return names


def assert_buffers_aligned(model_bytes):
    """Weight data starts on 16-byte boundaries (schema force_align, as TF writes it)."""
    root = tables.schema().Model.GetRootAsModel(model_bytes, 0)
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0, f"buffer {i} starts at {start}"


@pytest.mark.parametrize("name", [
    "tiny", "costa2022-mnist", "costa2022-cifar10", "costa2022-smallnorb",
    pytest.param("sabour2017-mnist", marks=pytest.mark.slow)])
def test_zoo_model_converts_fully_int8(name, bundled_data):
    from tflm_caps import metadata, models
    from tflm_caps.converter import kernels

    result, before = convert_zoo(name, bundled_data)
    shape = models.ZOO[name]["input_shape"]
    names = check_fully_int8(result.model)
    convs = len(models.ZOO[name]["convs"]) + 1
    assert names == ["CONV_2D"] * convs + ["RESHAPE", "TFLMCaps_Squash",
                                           "TFLMCaps_ClassCaps", "TFLMCaps_Length"]
    assert metadata.read(result.model)["labels"] is not None  # TFLite metadata kept
    s = result.summary
    saved = len(before) - len(tflite.strip_metadata(result.model))
    print(f"\n{name}: float {s.float.size_bytes:,} B, int8 {s.int8.size_bytes:,} B "
          f"({100 * s.size_ratio:.2f}%, clean-up saved {saved:,} B), calibration "
          f"{s.calibration_seconds:.1f} s, conversion {s.conversion_seconds:.1f} s")
    assert saved > 0
    assert s.size_ratio <= (SIZE_RATIO if name in PUBLISHED else TINY_SIZE_RATIO)
    # Schema round trip is lossless, and the model runs (int8 reference kernels).
    once = tflite.dump(tflite.load(result.model))
    assert once == tflite.dump(tflite.load(once))
    lengths, raw = kernels.run_model(result.model, _images(shape, 1, bundled_data),
                                     reference_builtins=name != "sabour2017-mnist")
    assert raw.dtype == np.int8 and lengths.shape == (1, models.ZOO[name]["num_classes"])


def test_training_model_drops_decoder(bundled_data):
    from tflm_caps import models
    from tflm_caps.converter import convert_detailed

    train_model = models.build("tiny", decoder=True)
    result = convert_detailed(train_model, bundled_data, num_samples=8, metadata=None)
    names = check_fully_int8(result.model)
    assert "FULLY_CONNECTED" not in names and len(names) == 6
    model = tflite.load(result.model)
    sg = model.subgraphs[0]
    assert len(sg.inputs) == 1 and len(sg.outputs) == 1
    assert list(sg.tensors[int(sg.outputs[0])].shape) == [1, 10]


def _builtin_rich_model():
    import keras

    from tflm_caps.layers import ClassCaps, Length, Squash

    image = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(16, 3, name="conv1")(image)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, name="caps_conv")(x)
    x = keras.layers.Reshape((-1, 8), name="to_caps")(x)
    x = Squash(name="squash")(x)
    v = ClassCaps(10, 8, routings=2, name="class_caps")(x)
    model = keras.Model(image, Length(name="length")(v), name="builtin_rich")
    bn = model.get_layer("bn")  # non-trivial inference statistics
    rng = np.random.default_rng(3)
    bn.moving_mean.assign(rng.normal(0, 0.1, 16).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 16).astype(np.float32))
    return model


def test_keras_builtins_and_squash_layer(bundled_data):
    from tflm_caps.converter import convert_detailed, kernels, options

    model = _builtin_rich_model()
    result = convert_detailed(model, bundled_data, num_samples=16, metadata=None)
    names = check_fully_int8(result.model)
    assert names.count("TFLMCaps_Squash") == 1 and names[-2:] == ["TFLMCaps_ClassCaps",
                                                                  "TFLMCaps_Length"]
    assert "MAX_POOL_2D" in names
    # The float graph computes what Keras computes (dropout off, BN folded).
    x = bundled_data.x_test[:8]
    lengths, _ = kernels.run_model(result.float_model, x, reference_builtins=False)
    np.testing.assert_allclose(lengths, model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)
    obj = tflite.load(result.model)
    cc = next(op for op in obj.subgraphs[0].operators
              if M.op_name(obj, op) == "TFLMCaps_ClassCaps")
    assert options.decode("TFLMCaps_ClassCaps", bytes(cc.customOptions))["num_routing"] == 2
    _, raw = kernels.run_model(result.model, x)
    assert raw.shape == (8, 10)


def test_sequential_model_converts():
    import keras

    from tflm_caps.converter import convert_detailed
    from tflm_caps.layers import ClassCaps, Length, PrimaryCaps

    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 5, strides=2, activation="relu"),
        PrimaryCaps(8, 4, 5, strides=2), ClassCaps(10, 4, routings=3), Length()], name="seq")
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    result = convert_detailed(model, x, num_samples=4, metadata=None)
    assert check_fully_int8(result.model)[-3:] == ["TFLMCaps_Squash", "TFLMCaps_ClassCaps",
                                                   "TFLMCaps_Length"]


def test_capsule_op_output_feeding_builtins(bundled_data):
    """Squash -> builtin RESHAPE -> ClassCaps: the builtin between two capsule ops
    runs in int8 on the fixed squash scale, with no conversion ops around it."""
    import keras

    from tflm_caps.converter import convert_detailed, kernels
    from tflm_caps.layers import ClassCaps, Length, Squash

    image = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 5, strides=3, activation="relu")(image)
    x = keras.layers.Reshape((-1, 4))(x)
    x = Squash(name="squash")(x)
    x = keras.layers.Reshape((-1, 8), name="regroup")(x)  # 2 squashed 4-D -> one 8-D capsule
    v = ClassCaps(10, 4, routings=3, name="class_caps")(x)
    model = keras.Model(image, Length(name="length")(v), name="regroup")
    result = convert_detailed(model, bundled_data, num_samples=16, metadata=None)
    names = check_fully_int8(result.model)
    assert names == ["CONV_2D", "RESHAPE", "TFLMCaps_Squash", "RESHAPE", "TFLMCaps_ClassCaps",
                     "TFLMCaps_Length"]
    obj = tflite.load(result.model)
    sg = obj.subgraphs[0]
    regroup = sg.operators[3]
    for t in (int(regroup.inputs[0]), int(regroup.outputs[0])):
        q = sg.tensors[t].quantization
        assert list(q.scale) == [np.float32(1 / 128)] and list(q.zeroPoint) == [0]
    _, raw = kernels.run_model(result.model, bundled_data.x_test[:4])
    assert raw.shape == (4, 10)


def _quant(tensor):
    q = tensor.quantization
    if q is None:
        return None
    return [None if v is None else np.asarray(v).tolist()
            for v in (q.scale, q.zeroPoint, q.min, q.max)] + [q.quantizedDimension]


def _op_key(model, op):
    custom = b"" if op.customOptions is None else np.asarray(op.customOptions, np.uint8).tobytes()
    return M.op_name(model, op), list(op.inputs), list(op.outputs), op.builtinOptionsType, custom


@pytest.mark.parametrize("name", ["tiny", "costa2022-mnist", "costa2022-cifar10",
                                  "costa2022-smallnorb"])
def test_clean_up_changes_no_output(name, bundled_data):
    """The converter's clean-up (bias quantization arrays, empty per-tensor
    buffers, the repeated min_runtime_version) removes only bytes no kernel
    reads: the model before and after it gives bit-identical int8 outputs in
    the TFLM host interpreter (our C operators) and in tf.lite (TFLite's
    reference builtins + the numpy integer reference)."""
    from tflm_caps import metadata, models
    from tflm_caps.converter import kernels
    from tflm_caps.runtime import TFLMRunner

    result, before = convert_zoo(name, bundled_data)
    after = tflite.strip_metadata(result.model)
    # What was removed really was there, and nothing else changed.
    b, a = tflite.load(before), tflite.load(after)
    sb, sa = b.subgraphs[0], a.subgraphs[0]
    biases = {int(op.inputs[2]) for op in sb.operators if M.op_name(b, op) == "CONV_2D"}
    assert len(biases) == len(models.ZOO[name]["convs"]) + 1
    channels = [len(sb.tensors[t].quantization.scale) for t in biases]
    assert min(channels) > 1
    assert [m.name for m in b.metadata].count(b"min_runtime_version") == 2
    empty = [t for t in sb.tensors if t.buffer != 0 and not M.buffer_bytes(b, t)]
    assert len(empty) == sum(1 for t in sa.tensors if t.buffer == 0) > 0
    assert len(before) - len(after) >= 12 * sum(channels)
    assert len(sb.tensors) == len(sa.tensors)
    for k, (tb, ta) in enumerate(zip(sb.tensors, sa.tensors)):
        assert M.tensor_name(tb) == M.tensor_name(ta) and tb.type == ta.type
        assert (M.buffer_bytes(b, tb) or b"") == (M.buffer_bytes(a, ta) or b"")
        if k not in biases:
            assert _quant(tb) == _quant(ta)
    assert [_op_key(b, op) for op in sb.operators] == [_op_key(a, op) for op in sa.operators]

    x = _images(models.ZOO[name]["input_shape"], 8, bundled_data, seed=7)
    tflm_before = TFLMRunner(before).predict(x, dequantize=False)
    tflm_after = TFLMRunner(result.model).predict(x, dequantize=False)
    assert tflm_after.dtype == np.int8
    np.testing.assert_array_equal(tflm_before, tflm_after)
    _, lite_before = kernels.run_model(before, x[:4])
    _, lite_after = kernels.run_model(result.model, x[:4])
    np.testing.assert_array_equal(lite_before, lite_after)
    np.testing.assert_array_equal(lite_after, tflm_after[:4])
