"""Packed int4 weights for the builtins TFLM runs with INT4 filters.

TFLM (and CMSIS-NN) run CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
with int8 activations and INT4 filters (two values per byte, low nibble
first: ``tflm_caps.reference.quant.pack_int4``).  The pinned host
interpreter accepts per-channel INT4 filters for CONV_2D (scales along
dimension 0) and DEPTHWISE_CONV_2D (along dimension 3), but per-tensor
only for FULLY_CONNECTED: a per-channel INT4 FULLY_CONNECTED fails to
prepare with "fully_connected_common.cc:98 (input->type == kTfLiteInt8 &&
filter->type != kTfLiteInt4) || (input->type == kTfLiteInt16 &&
filter->type != kTfLiteInt4) was not true".

``requantize_int4`` turns one quantized builtin of the int8 model into
int4 from the float weights of the same op in the calibrated float model
(``float_weights``): symmetric scales max|w| / 7 (per output channel, or
per tensor for FULLY_CONNECTED), codes in [-7, 7], and an int32 bias
requantized to the new bias scale input_scale * filter_scale[c] (round half
away from zero), so the op computes the same function on the int4 grid.
The int8 filter and bias tensors are replaced by new ones (the old ones
may have other readers; ``tflm_caps.tflite.prune`` drops them otherwise).
"""
from typing import NamedTuple, Optional

import numpy as np

from tflm_caps.reference import quant
from tflm_caps.tflite import graph as G
from tflm_caps.tflite import tables
from tflm_caps.tflite.model import constant_array, op_name, tensor_name

# op -> (filter input, bias input, quantized dimension of a per-channel
# filter, or None: per tensor).
INT4_BUILTINS = {
    "CONV_2D": (1, 2, 0),
    "DEPTHWISE_CONV_2D": (1, 2, 3),
    "FULLY_CONNECTED": (1, 2, None),
}


class Int4Error(ValueError):
    """The op cannot take int4 weights (not a supported builtin, no float weights)."""


class FloatWeights(NamedTuple):
    """Float filter and bias of one weighted builtin of the float model."""

    op: str
    filter: np.ndarray
    bias: Optional[np.ndarray]


def weighted_builtins(model):
    """[(operator index, op name)] of the int4-capable builtins with a constant
    filter, in execution order."""
    sg = model.subgraphs[0]
    out = []
    for k, op in enumerate(sg.operators):
        name = op_name(model, op)
        slots = INT4_BUILTINS.get(name)
        if slots is None or len(op.inputs) <= slots[0]:
            continue
        if model.buffers[sg.tensors[int(op.inputs[slots[0]])].buffer].data is not None:
            out.append((k, name))
    return out


def float_weights(model):
    """FloatWeights of every ``weighted_builtins`` op of a float model, in order."""
    sg = model.subgraphs[0]
    out = []
    for k, name in weighted_builtins(model):
        op = sg.operators[k]
        f_slot, b_slot, _ = INT4_BUILTINS[name]
        filt = sg.tensors[int(op.inputs[f_slot])]
        if filt.type != tables.FLOAT32:
            raise Int4Error(f"{name} {tensor_name(filt)!r}: filter is "
                            f"{tables.type_name(filt.type)}, expected float32")
        bias = None
        if len(op.inputs) > b_slot and int(op.inputs[b_slot]) >= 0:
            b = sg.tensors[int(op.inputs[b_slot])]
            bias = constant_array(model, b, np.float32)
        out.append(FloatWeights(name, constant_array(model, filt, np.float32), bias))
    return out


def int4_filter(filter_float, quantized_dimension):
    """(int4 codes as int8 in [-7, 7], float32 scales) of a float filter:
    symmetric per channel along ``quantized_dimension`` (None: per tensor)."""
    w = np.asarray(filter_float, np.float64)
    if not np.all(np.isfinite(w)):
        raise Int4Error("filter contains NaN or inf")
    qmax = quant.weight_qmax(4)
    if quantized_dimension is None:
        scales = np.array([quant.symmetric_scale(np.abs(w).max(), qmax)])
        codes = quant.quantize(w, scales[0])
    else:
        axes = tuple(a for a in range(w.ndim) if a != quantized_dimension)
        scales = np.array([quant.symmetric_scale(m, qmax) for m in np.abs(w).max(axis=axes)])
        shape = [1] * w.ndim
        shape[quantized_dimension] = scales.size
        codes = quant.quantize(w, scales.reshape(shape))
    return np.clip(codes, -qmax, qmax).astype(np.int8), scales.astype(np.float32)


def int32_bias(bias_float, input_scale, filter_scales, channels):
    """int32 bias on the scale input_scale * filter_scale[c] (round half away from zero)."""
    scales = (np.float64(np.float32(input_scale))
              * np.asarray(filter_scales, np.float32).astype(np.float64))
    scales = np.broadcast_to(scales, (channels,))
    q = np.asarray(bias_float, np.float64).reshape(-1) / scales
    q = np.sign(q) * np.floor(np.abs(q) + 0.5)
    return np.clip(q, -2**31, 2**31 - 1).astype(np.int32), scales


def requantize_int4(model, op_index, weights):
    """Give builtin ``op_index`` of a quantized model int4 weights from the
    float ``weights`` (FloatWeights of the same op); returns its report dict.

    Raises Int4Error for an op TFLM cannot run with INT4 filters or whose
    tensors are not what the int8 quantizer writes.
    """
    sg = model.subgraphs[0]
    op = sg.operators[op_index]
    name = op_name(model, op)
    if name not in INT4_BUILTINS:
        raise Int4Error(f"operator {op_index} is {name}; int4 weights exist for "
                        f"{', '.join(INT4_BUILTINS)}")
    if name != weights.op:
        raise Int4Error(f"operator {op_index} is {name}, the float weights are of a {weights.op}")
    f_slot, b_slot, qdim = INT4_BUILTINS[name]
    inputs = [int(t) for t in op.inputs]
    act = sg.tensors[inputs[0]]
    old = sg.tensors[inputs[f_slot]]
    if act.type != tables.INT8 or act.quantization is None or len(act.quantization.scale) != 1:
        raise Int4Error(f"{name} {tensor_name(old)!r}: input is not a per-tensor int8 tensor")
    if tuple(int(d) for d in old.shape) != weights.filter.shape:
        raise Int4Error(f"{name} {tensor_name(old)!r}: filter shape {tuple(old.shape)} != "
                        f"float filter {weights.filter.shape}")
    codes, scales = int4_filter(weights.filter, qdim)
    buffer = G.add_buffer(model, quant.pack_int4(codes).tobytes())
    new = G.add_tensor(sg, old, tensor_name(old) + "/int4", tables.INT4,
                       G.affine(scales, np.zeros(scales.size, np.int64), qdim or 0), buffer)
    inputs[f_slot] = new
    report = {"op": name, "filter": tensor_name(old), "scales": int(scales.size),
              "params": int(codes.size), "bytes": quant.int4_packed_size(codes.size)}
    if weights.bias is not None and len(inputs) > b_slot and inputs[b_slot] >= 0:
        old_b = sg.tensors[inputs[b_slot]]
        channels = int(np.asarray(weights.bias).size)
        bias_q, bias_scales = int32_bias(weights.bias, float(act.quantization.scale[0]), scales,
                                         channels)
        b_buffer = G.add_buffer(model, bias_q.tobytes())
        inputs[b_slot] = G.add_tensor(
            sg, old_b, tensor_name(old_b) + "/int4_scale", tables.INT32,
            G.affine(bias_scales.astype(np.float32), np.zeros(channels, np.int64), 0), b_buffer)
        report["bias_bytes"] = int(bias_q.nbytes)
    op.inputs = np.array(inputs, np.int32)
    return report
