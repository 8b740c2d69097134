"""Converter on Efficient-CapsNet (mazzia2021-mnist, briefly trained): BatchNorm
folded into the convolutions, builtins stay builtins, the capsule layers
become int8 TFLMCaps_EfficientSquash / TFLMCaps_SelfAttentionCaps ops, no
QUANTIZE/DEQUANTIZE; TFLM on the host is bit-exact with the numpy reference."""
import numpy as np
import pytest

from tflm_caps import ops_contract as C
from tflm_caps import tflite
from tflm_caps.converter import options as caps_options
from tflm_caps.tflite import model as M
from tflm_caps.tflite import tables

OPS = ["CONV_2D", "CONV_2D", "CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE",
       C.EFFICIENT_SQUASH, C.SELF_ATTENTION_CAPS, C.LENGTH]


@pytest.fixture(scope="module")
def trained(bundled_data):
    """mazzia2021-mnist after one epoch on 1,000 training images (non-trivial
    BatchNorm statistics and coupling bias)."""
    from tflm_caps import models, train
    train.set_seed(0)
    model = models.compile_for_training(models.build("mazzia2021-mnist"), learning_rate=2e-3)
    part = bundled_data.subset(train=1000, seed=0)
    model.fit(part.x_train, part.y_train_onehot, batch_size=32, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def result(trained, bundled_data):
    from tflm_caps.converter import convert_detailed
    return convert_detailed(trained, bundled_data, num_samples=64)


def _names(model_bytes):
    model = tflite.load(model_bytes)
    return model, [M.op_name(model, op) for op in model.subgraphs[0].operators]


def test_ops_and_all_int8(result):
    model, names = _names(result.model)
    assert names == OPS  # BatchNorm folded: no MUL / ADD, no QUANTIZE / DEQUANTIZE
    sg = model.subgraphs[0]
    for tensor in sg.tensors:
        data = model.buffers[tensor.buffer].data
        kind = tables.type_name(tensor.type)
        assert kind in (("int8", "int32") if data is not None and len(data) else ("int8",)), \
            (M.tensor_name(tensor), kind)
    att = next(op for op in sg.operators if M.op_name(model, op) == C.SELF_ATTENTION_CAPS)
    w, b = (sg.tensors[int(t)] for t in att.inputs[1:])
    assert (M.tensor_name(w), tables.type_name(w.type)) == ("class_caps/W", "int8")
    assert (M.tensor_name(b), tables.type_name(b.type)) == ("class_caps/b", "int32")
    assert list(b.quantization.scale) == [C.ATTENTION_BIAS_SCALE]
    assert list(b.quantization.zeroPoint) == [0] and list(b.shape) == [16, 10]
    opts = caps_options.decode(C.SELF_ATTENTION_CAPS, bytes(att.customOptions))
    report = result.summary.class_caps[0]
    assert opts[C.OPT_VERSION] == C.OPTIONS_VERSION and report["routing"] == "self-attention"
    assert opts[C.OPT_U_HAT_SCALE] == pytest.approx(report["uhat_scale"], rel=1e-7)
    assert opts[C.OPT_S_SCALE] == pytest.approx(report["s_scale"], rel=1e-7)
    assert M.tensor_name(sg.tensors[int(att.outputs[0])]) == "class_caps"
    assert result.summary.int8.size_bytes <= 0.27 * result.summary.float.size_bytes


def test_batchnorm_folding_is_exact(trained, bundled_data, result):
    from tflm_caps.converter import export, kernels

    ex = export.build_inference_export(trained)
    assert ex.folded_batch_norms == ["bn1", "bn2", "bn3", "bn4"]
    _, names = _names(result.float_model)
    assert names == OPS
    x = bundled_data.x_test[:20]
    lengths, _ = kernels.run_model(result.float_model, x)  # float kernels, folded weights
    np.testing.assert_allclose(lengths, trained.predict(x, verbose=0), atol=2e-5)


def test_int8_agrees_with_keras(trained, bundled_data, result):
    from tflm_caps.converter import kernels

    x = bundled_data.x_test[:300]
    q_lengths, _ = kernels.run_model(result.model, x)
    f_lengths = trained.predict(x, verbose=0)
    error = np.abs(q_lengths - f_lengths).max()
    assert error <= 0.06
    # One short epoch leaves many near ties; a class may only change where the
    # float top-two lengths are closer than twice the largest length error.
    same = q_lengths.argmax(1) == f_lengths.argmax(1)
    top2 = np.sort(f_lengths, axis=1)[:, -2:]
    assert np.all(same[top2[:, 1] - top2[:, 0] > 2 * error])
    assert same.mean() >= 0.95


def test_tflm_host_bit_exact_with_numpy(bundled_data, result):
    """TFLM (C operators) == tf.lite with the numpy reference kernels, and each
    capsule op's output == the numpy reference applied to TFLM's own inputs."""
    from tflm_caps.converter import kernels
    from tflm_caps.reference import int8 as ref
    from tflm_caps.reference import quant as q
    from tflm_caps.runtime import TFLMRunner

    x = bundled_data.x_test[:40]
    _, expected = kernels.run_model(result.model, x)
    runner = TFLMRunner(result.model, preserve_all_tensors=True)
    np.testing.assert_array_equal(runner.predict(x, dequantize=False), expected)
    info = runner.info
    squash, att = info.ops_named(C.EFFICIENT_SQUASH)[0], info.ops_named(C.SELF_ATTENTION_CAPS)[0]
    raw = runner.intermediates(x, [squash.inputs[0], squash.outputs[0], att.outputs[0]])
    t_in = info.tensors[squash.inputs[0]]
    scale, zp = t_in.quantization
    np.testing.assert_array_equal(raw[squash.outputs[0]], ref.efficient_squash_s8(
        raw[squash.inputs[0]], q.efficient_squash_params(scale, zp)))
    w, b = info.tensors[att.inputs[1]], info.tensors[att.inputs[2]]
    weights = np.frombuffer(w.data, np.int8).reshape(w.shape)
    bias = np.frombuffer(b.data, np.int32).reshape(b.shape)
    opts = caps_options.decode(C.SELF_ATTENTION_CAPS, att.custom_options)
    quant = q.SelfAttentionQuant(1 / 128, 0, tuple(w.scale), opts[C.OPT_U_HAT_SCALE],
                                 opts[C.OPT_S_SCALE])
    params = q.self_attention_params(q.ClassCapsDims(16, 8, 10, 16), quant, bias)
    np.testing.assert_array_equal(raw[att.outputs[0]], ref.self_attention_s8(
        raw[squash.outputs[0]], weights, bias, params))


def test_per_capsule_and_float_io(trained, bundled_data):
    from tflm_caps.converter import convert_detailed, kernels
    from tflm_caps.runtime import TFLMRunner

    res = convert_detailed(trained, bundled_data, num_samples=32,
                           weight_granularity="per-capsule", io_dtype="float32", metadata=None)
    model, names = _names(res.model)
    assert names == ["QUANTIZE"] + OPS + ["DEQUANTIZE"]
    att = next(op for op in model.subgraphs[0].operators
               if M.op_name(model, op) == C.SELF_ATTENTION_CAPS)
    w = model.subgraphs[0].tensors[int(att.inputs[1])]
    assert len(w.quantization.scale) == 10 and w.quantization.quantizedDimension == 1
    x = bundled_data.x_test[:20]
    np.testing.assert_array_equal(TFLMRunner(res.model).predict(x),
                                  kernels.run_model(res.model, x)[1])


def test_unfoldable_batchnorm_stays_int8_builtins(bundled_data):
    """A BatchNorm before a 'same'-padded convolution cannot be folded exactly:
    it stays an int8 builtin (MUL + ADD), the graph is still fully int8."""
    import keras

    from tflm_caps import layers
    from tflm_caps.converter import convert_detailed, export

    image = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 5, strides=2, activation="relu", name="conv1")(image)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.DepthwisePrimaryCaps(4, 5, strides=2, name="primary_caps")(x)
    v = layers.SelfAttentionCaps(10, 4, name="class_caps")(x)
    model = keras.Model(image, layers.Length(name="length")(v))
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(0, 0.3, 8).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 8).astype(np.float32))
    assert export.build_inference_export(model).folded_batch_norms == []
    res = convert_detailed(model, bundled_data, num_samples=16, metadata=None)
    _, names = _names(res.model)
    assert "QUANTIZE" not in names and "DEQUANTIZE" not in names
    assert {C.EFFICIENT_SQUASH, C.SELF_ATTENTION_CAPS} <= set(names)
    assert res.summary.int8.activation_types.keys() == {"int8"}


def test_conversion_errors(bundled_data):
    import keras

    from tflm_caps import layers
    from tflm_caps.converter import ConversionError, convert

    def model_with(layer):
        image = keras.Input((12, 12, 1))
        x = keras.layers.Conv2D(8, 3, activation="relu")(image)
        x = layers.DepthwisePrimaryCaps(4, 10, name="primary_caps")(x)
        return keras.Model(image, layers.Length()(layer(x)))

    data = bundled_data.x_train[:8, 8:20, 8:20]
    with pytest.raises(ConversionError, match="capsule_dim=129.*at most 128"):
        convert(model_with(layers.SelfAttentionCaps(3, 129, name="att")), data, num_samples=8)
    att = layers.SelfAttentionCaps(3, 4, name="att")
    model = model_with(att)
    att.b.assign(np.full(att.b.shape, 600.0, np.float32))
    with pytest.raises(ConversionError, match="'att'.*bias.*exceeds 512"):
        convert(model, data, num_samples=8)
