"""Every zoo model (untrained weights) converts to a fully int8 model; other
layer combinations convert too.  Structural checks on the flatbuffer."""
import numpy as np
import pytest

from tflm_caps.converter_patches import graph as G

# int8 / float size limit for every published model; `tiny` (27k parameters)
# is a test model whose file is ~15% flatbuffer structure and metadata.
SIZE_RATIO = 0.27
LARGE = ("costa2022-mnist", "costa2022-smallnorb", "sabour2017-mnist", "costa2022-cifar10")


def _images(shape, n, bundled_data):
    if tuple(shape) == bundled_data.input_shape:
        return bundled_data.calibration_subset(n, seed=1)
    return np.random.default_rng(0).random((n, *shape)).astype(np.float32)


def check_fully_int8(model_bytes):
    """Every activation/weight tensor int8 (int32 only for constants: biases,
    shapes); no QUANTIZE/DEQUANTIZE; returns the op names."""
    model = G.load(model_bytes)
    assert len(model.subgraphs) == 1
    sg = model.subgraphs[0]
    for tensor in sg.tensors:
        buf = model.buffers[tensor.buffer].data
        constant = buf is not None and len(buf) > 0
        kind = G.type_name(tensor.type)
        assert kind == "INT8" or (constant and kind == "INT32"), (G.tensor_name(tensor), kind)
        if kind == "INT8":
            q = tensor.quantization
            assert q is not None and len(q.scale) >= 1 and np.all(np.asarray(q.scale) > 0)
    names = [G.op_name(model, op) for op in sg.operators]
    assert "QUANTIZE" not in names and "DEQUANTIZE" not in names
    # Nothing unreachable is left in the file.
    used = {int(t) for op in sg.operators for t in list(op.inputs) + list(op.outputs)}
    assert used | {int(t) for t in sg.inputs} == set(range(len(sg.tensors)))
    referenced = {t.buffer for t in sg.tensors} | {m.buffer for m in model.metadata or []}
    assert referenced | {0} == set(range(len(model.buffers)))
    assert_buffers_aligned(model_bytes)
    return names


def assert_buffers_aligned(model_bytes):
    """Weight data starts on 16-byte boundaries (schema force_align, as TF writes it)."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(model_bytes, 0)
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0, f"buffer {i} starts at {start}"


@pytest.mark.parametrize("name", [
    "tiny", "costa2022-mnist", "costa2022-cifar10", "costa2022-smallnorb",
    pytest.param("sabour2017-mnist", marks=pytest.mark.slow)])
def test_zoo_model_converts_fully_int8(name, bundled_data):
    from tflm_caps import models
    from tflm_caps.converter import convert_detailed, kernels

    model = models.build(name)
    shape = tuple(model.inputs[0].shape[1:])
    samples = 4 if name == "sabour2017-mnist" else 16
    result = convert_detailed(model, _images(shape, samples, bundled_data),
                              num_samples=samples)
    names = check_fully_int8(result.model)
    convs = len(models.ZOO[name]["convs"]) + 1
    assert names == ["CONV_2D"] * convs + ["RESHAPE", "TFLMCaps_Squash",
                                           "TFLMCaps_ClassCaps", "TFLMCaps_Length"]
    s = result.summary
    print(f"\n{name}: float {s.float.size_bytes:,} B, int8 {s.int8.size_bytes:,} B "
          f"({100 * s.size_ratio:.1f}%), calibration {s.calibration_seconds:.1f} s, "
          f"conversion {s.conversion_seconds:.1f} s")
    if name in LARGE:
        assert s.size_ratio <= SIZE_RATIO
    assert s.size_ratio < 0.30
    # Schema round trip is lossless, and the model runs (int8 reference kernels).
    assert G.dump(G.load(result.model)) == G.dump(G.load(G.dump(G.load(result.model))))
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
    model = G.load(result.model)
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
    obj = G.load(result.model)
    cc = next(op for op in obj.subgraphs[0].operators
              if G.op_name(obj, op) == "TFLMCaps_ClassCaps")
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
    obj = G.load(result.model)
    sg = obj.subgraphs[0]
    regroup = sg.operators[3]
    for t in (int(regroup.inputs[0]), int(regroup.outputs[0])):
        q = sg.tensors[t].quantization
        assert list(q.scale) == [np.float32(1 / 128)] and list(q.zeroPoint) == [0]
    _, raw = kernels.run_model(result.model, bundled_data.x_test[:4])
    assert raw.shape == (4, 10)


def test_bias_quantization_strip_changes_no_output(bundled_data):
    """converter_patches.slim drops the bias quantization arrays; TFLM and
    tf.lite must give bit-identical int8 outputs with and without them."""
    from tflm_caps import models
    from tflm_caps.converter import convert_detailed, kernels
    from tflm_caps.converter_patches import slim
    from tflm_caps.runtime import TFLMRunner

    model = models.build("costa2022-cifar10")
    rng = np.random.default_rng(3)
    for layer in model.layers:  # realistic non-zero biases
        for w in layer.weights:
            if "bias" in w.path:
                w.assign(rng.normal(0, 0.05, w.shape).astype(np.float32))
    x = rng.random((12, 32, 32, 3)).astype(np.float32)
    result = convert_detailed(model, x, num_samples=12, metadata=None)
    stripped = G.load(result.model)
    assert slim.strip_bias_quantization(stripped) == 0  # already stripped
    with_quant = G.load(result.model)
    sg = with_quant.subgraphs[0]
    restored = 0
    for op in sg.operators:
        if G.op_name(with_quant, op) == "CONV_2D":
            bias = sg.tensors[int(op.inputs[2])]
            assert bias.quantization is None
            bias.quantization = G.affine([1e-4] * int(bias.shape[0]), [0] * int(bias.shape[0]))
            restored += 1
    assert restored == 5
    full = bytes(G.dump(with_quant))
    assert len(full) > len(result.model)
    a = TFLMRunner(result.model).predict(x, dequantize=False)
    b = TFLMRunner(full).predict(x, dequantize=False)
    np.testing.assert_array_equal(a, b)
    ka, _ = kernels.run_model(result.model, x[:4])
    kb, _ = kernels.run_model(full, x[:4])
    np.testing.assert_array_equal(ka, kb)
