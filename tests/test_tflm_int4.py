"""Packed int4 weights in TFLM: TFLMCaps_ClassCaps with an INT4 W equals
the numpy reference bit for bit."""
import numpy as np
import pytest

from support.model_builder import class_caps_model
from tflm_caps import reference as ref
from tflm_caps.reference import quant as q
from tflm_caps.runtime import TFLMRunner


def _int4_problem(seed, n_in, d_in, n_out, d_out, routings, per_capsule):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5 / np.sqrt(d_in), (n_in, n_out, d_out, d_in))
    w[:, 0] *= 3.0
    u = rng.normal(0, 0.4, (12, n_in, d_in))
    u = u / (1 + np.linalg.norm(u, axis=-1, keepdims=True))
    quant = q.calibrate_class_caps(u[:8], w, routings, 1 / 128, 0, per_capsule=per_capsule,
                                   weight_bits=4)
    w_q = q.quantize_weights(w, quant.weight_scales, bits=4)
    return q.quantize(u, 1 / 128), w_q, quant


INT4_CASES = [  # (n_in, d_in, n_out, d_out, routings, per_capsule, store, batch)
    (64, 4, 10, 6, 3, True, True, 1),
    (64, 4, 10, 6, 3, False, False, 2),
    (40, 8, 10, 16, 3, True, True, 1),
    (21, 3, 4, 2, 2, True, False, 1),
]


@pytest.mark.parametrize("n_in,d_in,n_out,d_out,routings,per_capsule,store,batch", INT4_CASES)
def test_class_caps_int4_weights_bit_exact(n_in, d_in, n_out, d_out, routings, per_capsule,
                                           store, batch):
    u_q, w_q, quant = _int4_problem(n_in + d_out, n_in, d_in, n_out, d_out, routings,
                                    per_capsule)
    params = q.class_caps_params(q.ClassCapsDims(n_in, d_in, n_out, d_out), quant)
    model = class_caps_model(batch, w_q, quant, store_predictions=store, weight_dtype="int4")
    runner = TFLMRunner(model)
    w_info = runner.info.tensors[runner.info.operators[0].inputs[1]]
    assert w_info.type_name == "int4" and len(w_info.data) == w_q.size // 2
    np.testing.assert_array_equal(q.unpack_int4(w_info.data, w_q.shape), w_q)
    y = runner.predict(u_q, dequantize=False)
    expected = ref.class_caps_s4(u_q, q.pack_int4(w_q), w_q.shape, params)
    np.testing.assert_array_equal(y, expected)
    assert np.abs(expected.astype(int)).max() > 10


# ---------------------------------------------------------------------------
# Builtins with INT4 filters in the pinned TFLM interpreter
# ---------------------------------------------------------------------------

def _builtin_model(op, x_shape, w_codes, w_scales, qdim, bias, y_shape, options):
    """One builtin with a packed INT4 filter; ``options(schema, operator)`` sets
    its builtin options."""
    from support.model_builder import OpSpec, TensorSpec, build_model
    from tflm_caps import tflite
    from tflm_caps.tflite import tables

    n = len(np.atleast_1d(w_scales))
    tensors = [TensorSpec("x", x_shape, "int8", scale=0.05, zero_point=3),
               TensorSpec("w", w_codes.shape, "int4", scale=w_scales, zero_point=[0] * n,
                          quantized_dimension=qdim, data=w_codes),
               TensorSpec("b", bias.shape, "int32", data=bias),
               TensorSpec("y", y_shape, "int8", scale=0.2, zero_point=-5)]
    model = tflite.load(build_model(tensors, [OpSpec(op, [0, 1, 2], [3])], [0], [3]))
    options(tables.schema(), model.subgraphs[0].operators[0])
    return tflite.dump(model)


def _conv_options(kind, stride, same, activation):
    def set_options(fb, op):
        o = getattr(fb, f"{kind}OptionsT")()
        o.padding = fb.Padding.SAME if same else fb.Padding.VALID
        o.strideH, o.strideW = stride
        o.dilationHFactor = o.dilationWFactor = 1
        o.fusedActivationFunction = activation
        if kind == "DepthwiseConv2D":
            o.depthMultiplier = 1
        op.builtinOptionsType = getattr(fb.BuiltinOptions, f"{kind}Options")
        op.builtinOptions = o
    return set_options


@pytest.mark.parametrize("same,stride,activation", [(False, (1, 1), 0), (True, (2, 1), 1)])
def test_conv2d_int4_filter_per_channel_matches_numpy(same, stride, activation):
    from support import builtin_ref as B

    rng = np.random.default_rng(11)
    w = rng.integers(-8, 8, (6, 3, 3, 5)).astype(np.int8)
    scales = rng.uniform(0.01, 0.05, 6)
    bias = rng.integers(-300, 300, 6).astype(np.int32)
    x = rng.integers(-128, 128, (4, 7, 6, 5)).astype(np.int8)
    oh, pt = B._padding(7, 3, stride[0], 1, same)
    ow, _ = B._padding(6, 3, stride[1], 1, same)
    model = _builtin_model("CONV_2D", (1, 7, 6, 5), w, scales, 0, bias, (1, oh, ow, 6),
                           _conv_options("Conv2D", stride, same, activation))
    y = TFLMRunner(model).predict(x, dequantize=False)
    mult, shift = B.multipliers(0.05, scales, 0.2)
    expect = B.conv2d(x, 3, w, bias, stride, (1, 1), same, mult, shift, -5,
                      B.activation_range(activation, 0.2, -5))
    np.testing.assert_array_equal(y, expect)
    assert len(np.unique(expect)) > 20


def test_depthwise_conv_int4_filter_per_channel_matches_numpy():
    from support import builtin_ref as B

    rng = np.random.default_rng(12)
    w = rng.integers(-8, 8, (1, 3, 3, 4)).astype(np.int8)
    scales = rng.uniform(0.02, 0.08, 4)
    bias = rng.integers(-100, 100, 4).astype(np.int32)
    x = rng.integers(-128, 128, (3, 6, 6, 4)).astype(np.int8)
    model = _builtin_model("DEPTHWISE_CONV_2D", (1, 6, 6, 4), w, scales, 3, bias,
                           (1, 4, 4, 4), _conv_options("DepthwiseConv2D", (1, 1), False, 0))
    y = TFLMRunner(model).predict(x, dequantize=False)
    mult, shift = B.multipliers(0.05, scales, 0.2)
    expect = B.conv2d(x, 3, w, bias, (1, 1), (1, 1), False, mult, shift, -5, (-128, 127),
                      depthwise=True)
    np.testing.assert_array_equal(y, expect)


def _fc_options(fb, op):
    op.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = fb.FullyConnectedOptionsT()


def test_fully_connected_int4_per_tensor_matches_numpy_per_channel_refused():
    from support import builtin_ref as B
    from tflm_caps.runtime import TFLMError

    rng = np.random.default_rng(13)
    w = rng.integers(-8, 8, (5, 9)).astype(np.int8)
    bias = rng.integers(-200, 200, 5).astype(np.int32)
    x = rng.integers(-128, 128, (4, 9)).astype(np.int8)
    model = _builtin_model("FULLY_CONNECTED", (1, 9), w, 0.03, 0, bias, (1, 5), _fc_options)
    y = TFLMRunner(model).predict(x, dequantize=False)
    mult, shift = B.multipliers(0.05, [0.03], 0.2)
    np.testing.assert_array_equal(y, B.fully_connected(x, 3, w, bias, mult, shift, -5,
                                                       (-128, 127)))
    # the pinned TFLM refuses per-channel scales on an INT4 FULLY_CONNECTED
    per_channel = _builtin_model("FULLY_CONNECTED", (1, 9), w, [0.03] * 5, 0, bias, (1, 5),
                                 _fc_options)
    with pytest.raises(TFLMError, match=r"fully_connected_common\.cc.*filter->type != "
                                        r"kTfLiteInt4"):
        TFLMRunner(per_channel)
