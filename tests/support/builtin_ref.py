"""Numpy reference of TFLite's quantized builtins the converted models use
(tests only): CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED with int8
activations and int8 or packed int4 weights (int32 bias, per-channel or
per-tensor requantization, fused activation), RESHAPE, and a runner of a
whole converted model with the capsule ops from ``tflm_caps.reference``.

Written from TFLite's arithmetic (reference_integer_ops::ConvPerChannel /
DepthwiseConvPerChannel / FullyConnected): acc = sum (x - x_zp) w + bias,
MultiplyByQuantizedMultiplier with the multiplier of input_scale *
filter_scale[c] / output_scale (QuantizeMultiplier), plus the output zero
point, clamped to the activation range.
"""
import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps import tflite
from tflm_caps.converter import options as caps_options
from tflm_caps.reference import fixedpoint as fp
from tflm_caps.reference import int8 as caps_ref
from tflm_caps.reference import quant as q
from tflm_caps.tflite import tables
from tflm_caps.tflite.model import op_name

_RELU, _RELU_N1_TO_1, _RELU6 = 1, 2, 3


def multipliers(input_scale, filter_scales, output_scale):
    """(multipliers, shifts) of each channel: input * filter / output in double."""
    ins, outs = float(np.float32(input_scale)), float(np.float32(output_scale))
    pairs = [q.quantize_multiplier((ins * float(np.float32(f))) / outs)
             for f in np.ravel(filter_scales)]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def activation_range(activation, scale, zero_point):
    """TFLite CalculateActivationRangeQuantized for int8."""
    def qv(v):
        return zero_point + int(np.round(v / np.float32(scale)))
    lo, hi = -128, 127
    if activation == _RELU:
        lo = max(lo, qv(0.0))
    elif activation == _RELU6:
        lo, hi = max(lo, qv(0.0)), min(hi, qv(6.0))
    elif activation == _RELU_N1_TO_1:
        lo, hi = max(lo, qv(-1.0)), min(hi, qv(1.0))
    return lo, hi


def _padding(size, kernel, stride, dilation, same):
    eff = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride if same else (size - eff + stride) // stride
    pad = max((out - 1) * stride + eff - size, 0) // 2 if same else 0
    return out, pad


def _requant(acc, mult, shift, out_zp, act):
    y = fp.requantize(acc, mult, shift) + out_zp
    return np.clip(y, act[0], act[1]).astype(np.int8)


def conv2d(x, x_zp, w, bias, stride, dilation, same, mult, shift, out_zp, act, depthwise=False,
           depth_multiplier=1):
    """x int8 [B, H, W, Cin]; w int8-valued [Cout, kh, kw, Cin] (depthwise:
    [1, kh, kw, Cout]); mult/shift per output channel (or one)."""
    x = x.astype(np.int64) - x_zp
    w = w.astype(np.int64)
    b, h, wd, cin = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh, pt = _padding(h, kh, stride[0], dilation[0], same)
    ow, pl = _padding(wd, kw, stride[1], dilation[1], same)
    cout = w.shape[3] if depthwise else w.shape[0]
    acc = np.zeros((b, oh, ow, cout), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            ys = np.arange(oh) * stride[0] - pt + ky * dilation[0]
            xs = np.arange(ow) * stride[1] - pl + kx * dilation[1]
            vy, vx = (ys >= 0) & (ys < h), (xs >= 0) & (xs < wd)
            patch = np.zeros((b, oh, ow, cin), np.int64)  # outside the image: x_zp, i.e. 0
            patch[:, vy[:, None] & vx[None, :]] = \
                x[:, ys[vy]][:, :, xs[vx]].reshape(b, -1, cin)
            if depthwise:
                acc += np.repeat(patch, depth_multiplier, axis=-1) * w[0, ky, kx]
            else:
                acc += np.einsum("bhwc,oc->bhwo", patch, w[:, ky, kx, :])
    if bias is not None:
        acc += bias.astype(np.int64)
    m = np.broadcast_to(np.asarray(mult), (cout,))
    s = np.broadcast_to(np.asarray(shift), (cout,))
    return _requant(acc, m, s, out_zp, act)


def fully_connected(x, x_zp, w, bias, mult, shift, out_zp, act):
    """x int8 [B, ..., in] (flattened to [-1, in]); w int8-valued [out, in]."""
    xx = x.reshape(-1, w.shape[1]).astype(np.int64) - x_zp
    acc = xx @ w.astype(np.int64).T
    if bias is not None:
        acc += bias.astype(np.int64)
    m = np.broadcast_to(np.asarray(mult), (w.shape[0],))
    s = np.broadcast_to(np.asarray(shift), (w.shape[0],))
    return _requant(acc, m, s, out_zp, act)


# ----------------------------------------------------------------------------
# A whole converted model
# ----------------------------------------------------------------------------

def _const(model, tensor):
    data = model.buffers[tensor.buffer].data
    if data is None:
        return None
    raw = np.asarray(data, np.uint8).tobytes()
    shape = tuple(int(d) for d in tensor.shape)
    if tensor.type == tables.INT4:
        return q.unpack_int4(raw, shape)
    return np.frombuffer(raw, tables.NUMPY_DTYPES[tensor.type]).reshape(shape)


def _quant(tensor):
    qp = tensor.quantization
    return np.asarray(qp.scale, np.float64), np.asarray(qp.zeroPoint, np.int64)


def run_model(model_bytes, x):
    """Run an int8-I/O converted model on int8 images x [N, H, W, C] in numpy
    (batch 1 models); returns the int8 output [N, ...]."""
    model = tflite.load(model_bytes)
    sg = model.subgraphs[0]
    outs = []
    for image in x:
        values = {int(sg.inputs[0]): image[None]}
        for op in sg.operators:
            values[int(op.outputs[0])] = _run_op(model, sg, op, values)
        outs.append(values[int(sg.outputs[0])][0])
    return np.stack(outs)


def _run_op(model, sg, op, values):
    name = op_name(model, op)
    ins = [sg.tensors[int(t)] if int(t) >= 0 else None for t in op.inputs]
    out_t = sg.tensors[int(op.outputs[0])]

    def val(k):
        t = int(op.inputs[k])
        return values[t] if t in values else _const(model, sg.tensors[t])

    if name == "RESHAPE":
        return val(0).reshape([int(d) for d in out_t.shape])
    x = val(0)
    x_scale, x_zp = _quant(ins[0])
    if name in C.CUSTOM_OPS:
        raw = bytes(np.asarray(op.customOptions, np.uint8)) if op.customOptions is not None \
            else b""
        opts = caps_options.decode(name, raw)
        if name == C.SQUASH:
            return caps_ref.squash_s8(x, q.squash_params(x_scale[0], int(x_zp[0])))
        if name == C.LENGTH:
            return caps_ref.length_s8(x, q.length_params(x_scale[0], int(x_zp[0])))
        w = val(1)
        w_scale, _ = _quant(ins[1])
        quant = q.ClassCapsQuant(x_scale[0], int(x_zp[0]), tuple(w_scale),
                                 opts[C.OPT_U_HAT_SCALE], tuple(opts[C.OPT_S_SCALES]),
                                 tuple(opts[C.OPT_B_SCALES]))
        params = q.class_caps_params(q.ClassCapsDims.from_shapes(x.shape, w.shape), quant)
        return caps_ref.class_caps_s8(x, w, params)
    w, bias = val(1), (val(2) if len(ins) > 2 and ins[2] is not None else None)
    w_scale, _ = _quant(ins[1])
    o_scale, o_zp = _quant(out_t)
    mult, shift = multipliers(x_scale[0], w_scale, o_scale[0])
    opts = op.builtinOptions
    act = activation_range(opts.fusedActivationFunction, o_scale[0], int(o_zp[0]))
    if name == "FULLY_CONNECTED":
        y = fully_connected(x, int(x_zp[0]), w, bias, mult, shift, int(o_zp[0]), act)
        return y.reshape([int(d) for d in out_t.shape])
    same = opts.padding == tables.schema().Padding.SAME
    stride, dilation = (opts.strideH, opts.strideW), (opts.dilationHFactor, opts.dilationWFactor)
    if name == "CONV_2D":
        return conv2d(x, int(x_zp[0]), w, bias, stride, dilation, same, mult, shift,
                      int(o_zp[0]), act)
    if name == "DEPTHWISE_CONV_2D":
        return conv2d(x, int(x_zp[0]), w, bias, stride, dilation, same, mult, shift,
                      int(o_zp[0]), act, depthwise=True, depth_multiplier=opts.depthMultiplier)
    raise NotImplementedError(f"numpy reference has no {name}")
