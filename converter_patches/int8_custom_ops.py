"""Make the capsule custom ops of a quantized TFLite model fully int8.

The TF converter quantizes builtins but leaves every CUSTOM op in float,
wrapped in DEQUANTIZE/QUANTIZE, with float weights ("Quantization not yet
supported for op: CUSTOM").  The passes here finish the job:

1. ``set_fixed_output_ranges`` (before ``mlir_quantize``): the calibrated
   min/max of each capsule op's output becomes the range of its fixed int8
   scale, so whatever the quantizer derives from it (QUANTIZE after the op,
   same-scale builtins downstream) already uses the contract's scale.
2. ``make_custom_ops_int8`` (after ``mlir_quantize``): every custom op reads
   the int8 tensor its producer writes (the DEQUANTIZE in between goes), its
   output becomes int8 with the fixed scale and is read directly (the
   QUANTIZE after it goes); a float graph output gets one DEQUANTIZE.
3. ``quantize_class_caps`` / ``quantize_self_attention``: int8 weights, or
   packed int4 ones for ClassCaps (per tensor or per output capsule,
   quantized_dimension 1), the self-attention coupling bias as int32 Q15
   (fixed scale 2^-15) and the versioned options with the calibrated scales.
4. ``add_squash_tables``: every int8 Squash gets its gain table (which
   depends only on the capsule dim and input quantization) as input 1, a
   constant int32 tensor the kernel reads in place from flash.
5. ``tflm_caps.tflite.prune`` then drops what became unreachable.
"""
from typing import NamedTuple, Optional

import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps.reference import int8 as int8_ref
from tflm_caps.reference import quant
from tflm_caps.tflite import graph as G
from tflm_caps.tflite import tables
from tflm_caps.tflite.model import constant_array, op_name, opcode_of, tensor_name

# Activation inputs of each op (ClassCaps input 1 is the constant W,
# SelfAttentionCaps inputs 1 and 2 the constant W and bias).
ACTIVATION_INPUTS = {C.SQUASH: (0,), C.CLASS_CAPS: (0,), C.LENGTH: (0,),
                     C.EFFICIENT_SQUASH: (0,), C.SELF_ATTENTION_CAPS: (0,)}


class PatchError(ValueError):
    """The model does not have the structure the int8 rewrite expects."""


def caps_ops(model, subgraph_index=0):
    """[(operator index, op name)] of the capsule custom ops, in execution order."""
    sg = model.subgraphs[subgraph_index]
    out = []
    for k, op in enumerate(sg.operators):
        name = op_name(model, op)
        if opcode_of(model, op) == tables.BUILTIN_CUSTOM and name.startswith(C.OP_PREFIX):
            if name not in C.OUTPUT_QUANT:
                raise PatchError(f"unknown capsule custom op {name!r}")
            out.append((k, name))
    return out


def fixed_range(name):
    """float [min, max] whose asymmetric int8 quantization is the fixed output scale."""
    scale, zp = C.OUTPUT_QUANT[name]
    return (-128 - zp) * scale, (127 - zp) * scale


def set_fixed_output_ranges(model):
    """Overwrite the calibrated min/max of every capsule op output (step 1)."""
    sg = model.subgraphs[0]
    for k, name in caps_ops(model):
        tensor = sg.tensors[sg.operators[k].outputs[0]]
        lo, hi = fixed_range(name)
        if tensor.quantization is None:
            tensor.quantization = tables.schema().QuantizationParametersT()
        tensor.quantization.min = np.array([lo], np.float32)
        tensor.quantization.max = np.array([hi], np.float32)
    return model


def _int8_quant_of(tensor):
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0])


def _fixed_quant(name):
    scale, zp = C.OUTPUT_QUANT[name]
    return G.affine([scale], [zp])


def _read_int8_inputs(model, ops):
    """Point every activation input of the capsule ops at the int8 tensor its
    DEQUANTIZE reads (inputs written by another capsule op become int8 later)."""
    sg = model.subgraphs[0]
    caps_indices = {k for k, _ in ops}
    for k, name in ops:
        op = sg.operators[k]
        prod = G.producers(sg)
        inputs = [int(t) for t in op.inputs]
        for slot in ACTIVATION_INPUTS[name]:
            t = inputs[slot]
            tensor = sg.tensors[t]
            if tensor.type == tables.INT8:
                continue
            p = prod.get(t)
            if p is not None and p in caps_indices:
                continue
            if p is not None and op_name(model, sg.operators[p]) == "DEQUANTIZE":
                src = int(sg.operators[p].inputs[0])
                if sg.tensors[src].type != tables.INT8:
                    raise PatchError(f"{name}: input {tensor_name(tensor)!r} is dequantized "
                                     f"from a {tables.type_name(sg.tensors[src].type)} tensor, "
                                     "expected int8")
                inputs[slot] = src  # the DEQUANTIZE goes if nothing else reads it
                continue
            where = ("a graph input" if p is None
                     else f"operator {op_name(model, sg.operators[p])}")
            raise PatchError(f"{name}: input {tensor_name(tensor)!r} is "
                             f"{tables.type_name(tensor.type)} written by {where}; expected an "
                             "int8 tensor (or a DEQUANTIZE of one)")
        op.inputs = np.array(inputs, np.int32)


def _write_int8_output(model, k, name, caps_indices, graph_outputs, removed, layer_name):
    """Make operator ``k``'s output int8 with the fixed quantization, read directly.

    ``graph_outputs``: the subgraph's outputs before the pass.  Adds the ids
    of QUANTIZE operators that became redundant to ``removed``; returns a
    DEQUANTIZE operator to insert after ``k`` (float graph output) or None.
    """
    sg = model.subgraphs[0]
    op = sg.operators[k]
    t = int(op.outputs[0])
    tensor = sg.tensors[t]
    scale, zp = C.OUTPUT_QUANT[name]
    cons = G.consumers(sg).get(t, [])
    quantizes = [c for c in cons if op_name(model, sg.operators[c]) == "QUANTIZE"]
    for c in cons:
        if c not in quantizes and c not in caps_indices:
            raise PatchError(f"{name}: output {tensor_name(tensor)!r} is read by float "
                             f"operator {op_name(model, sg.operators[c])}")
    target = t
    for c in quantizes:
        q_out = int(sg.operators[c].outputs[0])
        q_tensor = sg.tensors[q_out]
        if q_tensor.type == tables.INT8 and _int8_quant_of(q_tensor) == (scale, zp):
            # The QUANTIZE output already is what the op must write: adopt it.
            if target == t:
                target = q_out
            else:
                G.replace_uses(sg, q_out, target)
            removed.add(id(sg.operators[c]))
        else:
            # Another scale is wanted downstream: keep an int8 -> int8 requantize.
            sg.operators[c].inputs = np.array([t], np.int32)
    if target != t:
        G.replace_uses(sg, t, target)
        op.outputs = np.array([target], np.int32)
    out_tensor = sg.tensors[target]
    if layer_name is not None:
        out_tensor.name = layer_name.encode()
    if target == t and t in graph_outputs:
        # Float graph output: the op writes a new int8 tensor, DEQUANTIZE to float.
        new = G.add_tensor(sg, tensor, tensor_name(tensor) + "/int8", tables.INT8,
                           _fixed_quant(name))
        if layer_name is not None:
            sg.tensors[new].name = layer_name.encode()
        op.outputs = np.array([new], np.int32)
        G.replace_uses(sg, t, new)
        sg.outputs = np.array(graph_outputs, np.int32)  # graph keeps the float tensor
        deq = type(op)()
        deq.opcodeIndex = G.opcode_index(model, builtin="DEQUANTIZE")
        deq.inputs = np.array([new], np.int32)
        deq.outputs = np.array([t], np.int32)
        return deq
    if target == t:
        tensor.type = tables.INT8
    out_tensor.quantization = _fixed_quant(name)
    return None


def make_custom_ops_int8(model, layer_names=None):
    """Rewire the capsule ops to int8 tensors (step 2).

    ``layer_names``: optional {operator position among capsule ops: name}
    used to name the int8 output tensors after the Keras layers.
    """
    sg = model.subgraphs[0]
    ops = caps_ops(model)
    if not ops:
        raise PatchError("the model has no capsule custom ops")
    _read_int8_inputs(model, ops)
    caps_indices = {k for k, _ in ops}
    graph_outputs = [int(t) for t in sg.outputs]
    removed = set()
    inserted = {}  # id of an operator -> the DEQUANTIZE that follows it
    for pos, (k, name) in enumerate(ops):
        layer_name = (layer_names or {}).get(pos)
        deq = _write_int8_output(model, k, name, caps_indices, graph_outputs, removed,
                                 layer_name)
        if deq is not None:
            inserted[id(sg.operators[k])] = deq
    rebuilt = []
    for op in sg.operators:
        if id(op) in removed:
            continue
        rebuilt.append(op)
        if id(op) in inserted:
            rebuilt.append(inserted[id(op)])
    sg.operators = rebuilt
    return remove_dead_conversions(model)


def remove_dead_conversions(model):
    """Drop QUANTIZE/DEQUANTIZE operators whose output nobody reads."""
    sg = model.subgraphs[0]
    while True:
        readers = G.consumers(sg)
        outputs = {int(t) for t in sg.outputs}
        dead = [k for k, op in enumerate(sg.operators)
                if op_name(model, op) in ("QUANTIZE", "DEQUANTIZE")
                and not readers.get(int(op.outputs[0])) and int(op.outputs[0]) not in outputs]
        if not dead:
            return model
        G.remove_ops(sg, dead)


def class_caps_ops(model):
    """[(operator index, op)] of the ClassCaps ops in execution order."""
    sg = model.subgraphs[0]
    return [(k, sg.operators[k]) for k, name in caps_ops(model) if name == C.CLASS_CAPS]


def class_caps_weights(model, op):
    """Float W of a ClassCaps op (before ``quantize_class_caps``)."""
    sg = model.subgraphs[0]
    w = sg.tensors[int(op.inputs[1])]
    if w.type != tables.FLOAT32:
        raise PatchError(f"{C.CLASS_CAPS}: W {tensor_name(w)!r} is {tables.type_name(w.type)}, "
                         "expected the float32 constant written by the TF converter")
    data = constant_array(model, w, np.float32)
    if data is None:
        raise PatchError(f"{C.CLASS_CAPS}: W {tensor_name(w)!r} is not a constant")
    return data


def activation_quant(model, op, slot=0):
    """(scale, zero point) of an int8 activation input."""
    sg = model.subgraphs[0]
    tensor = sg.tensors[int(op.inputs[slot])]
    quant = _int8_quant_of(tensor)
    if tensor.type != tables.INT8 or quant is None:
        raise PatchError(f"input {tensor_name(tensor)!r} is not a per-tensor int8 tensor")
    return quant


class ClassCapsInt8(NamedTuple):
    """What one ClassCaps op gets in step 3."""

    weights: np.ndarray     # codes [N_in, N_out, D_out, D_in], symmetric, as int8
    scales: np.ndarray      # 1 or N_out weight scales
    options: bytes          # versioned FlexBuffer options (calibrated routing scales)
    weight_name: Optional[str] = None
    bits: int = 8           # 4: codes in [-7, 7] stored as a packed INT4 tensor


def quantize_class_caps(model, layers):
    """Install int8 W and the options of every ClassCaps op (step 3).

    ``layers``: one ``ClassCapsInt8`` per op of ``class_caps_ops``, in order.
    Each W gets a fresh tensor and buffer: the float buffer may have another reader.
    """
    sg = model.subgraphs[0]
    ops = class_caps_ops(model)
    if len(layers) != len(ops):
        raise PatchError(f"{len(layers)} int8 ClassCaps layers for {len(ops)} ClassCaps ops")
    for (_, op), layer in zip(ops, layers):
        w_index = int(op.inputs[1])
        old = sg.tensors[w_index]
        weights = np.ascontiguousarray(layer.weights, np.int8)
        if tuple(weights.shape) != tuple(int(d) for d in old.shape):
            raise PatchError(f"{C.CLASS_CAPS}: int8 W shape {weights.shape} != "
                             f"{tuple(old.shape)}")
        scales = np.asarray(layer.scales, np.float32).reshape(-1)
        if scales.size not in (1, weights.shape[1]):
            raise PatchError(f"{C.CLASS_CAPS}: W needs 1 or N_out scales, got {scales.size}")
        if layer.bits == 4:
            buffer = G.add_buffer(model, quant.pack_int4(weights).tobytes())
            w_type = tables.INT4
        else:
            buffer = G.add_buffer(model, weights.tobytes())
            w_type = tables.INT8
        new = G.add_tensor(sg, old, layer.weight_name or (tensor_name(old) + "/int8"),
                           w_type,
                           G.affine(scales, np.zeros(scales.size, np.int64),
                                    1 if scales.size > 1 else 0), buffer)
        inputs = [int(t) for t in op.inputs]
        inputs[1] = new
        op.inputs = np.array(inputs, np.int32)
        G.set_custom_options(op, layer.options)
    return model


def add_squash_tables(model):
    """Append the gain table input to every int8 Squash op (step 4).

    The table is what caps_squash_s8_init_table would fill in Prepare for the
    op's capsule dim and input quantization (``tflm_caps.reference.int8.squash_table``);
    the op's options must be of version ``C.SQUASH_TABLE_VERSION`` or later.
    """
    sg = model.subgraphs[0]
    for k, name in caps_ops(model):
        if name != C.SQUASH:
            continue
        op = sg.operators[k]
        if len(op.inputs) != 1:
            raise PatchError(f"{name}: expected 1 input before adding the gain table, "
                             f"got {len(op.inputs)}")
        x = sg.tensors[int(op.inputs[0])]
        scale, zp = activation_quant(model, op)
        try:
            params = quant.squash_params(scale, zp)
            words = int8_ref.squash_table(int(x.shape[-1]), params)
        except ValueError as exc:
            raise PatchError(f"{name}: no gain table for input {tensor_name(x)!r}: {exc}") \
                from exc
        buffer = G.add_buffer(model, words.astype("<i4").tobytes())
        out_name = tensor_name(sg.tensors[int(op.outputs[0])])
        t = G.add_tensor(sg, x, f"{out_name}/gain_table", tables.INT32, None, buffer)
        sg.tensors[t].shape = np.array([words.size], np.int32)
        sg.tensors[t].shapeSignature = None
        op.inputs = np.array([int(op.inputs[0]), t], np.int32)
    return model


def self_attention_ops(model):
    """[(operator index, op)] of the SelfAttentionCaps ops in execution order."""
    sg = model.subgraphs[0]
    return [(k, sg.operators[k]) for k, name in caps_ops(model) if name == C.SELF_ATTENTION_CAPS]


def _float_constant(model, op, slot, what):
    sg = model.subgraphs[0]
    t = sg.tensors[int(op.inputs[slot])]
    if t.type != tables.FLOAT32:
        raise PatchError(f"{C.SELF_ATTENTION_CAPS}: {what} {tensor_name(t)!r} is "
                         f"{tables.type_name(t.type)}, expected the float32 constant written "
                         "by the TF converter")
    data = constant_array(model, t, np.float32)
    if data is None:
        raise PatchError(f"{C.SELF_ATTENTION_CAPS}: {what} {tensor_name(t)!r} is not a constant")
    return data


def self_attention_constants(model, op):
    """Float (W, bias) of a SelfAttentionCaps op (before ``quantize_self_attention``)."""
    return _float_constant(model, op, 1, "W"), _float_constant(model, op, 2, "bias")


class SelfAttentionInt8(NamedTuple):
    """What one SelfAttentionCaps op gets in step 3."""

    weights: np.ndarray     # int8 [N_in, N_out, D_out, D_in], symmetric
    scales: np.ndarray      # 1 or N_out weight scales
    bias: np.ndarray        # int32 [N_in, N_out], Q15
    options: bytes          # versioned FlexBuffer options (calibrated scales)
    weight_name: Optional[str] = None
    bias_name: Optional[str] = None


def quantize_self_attention(model, layers):
    """Install int8 W, the int32 Q15 bias and the options of every
    SelfAttentionCaps op (one ``SelfAttentionInt8`` per op, in order)."""
    sg = model.subgraphs[0]
    ops = self_attention_ops(model)
    if len(layers) != len(ops):
        raise PatchError(f"{len(layers)} int8 SelfAttentionCaps layers for {len(ops)} ops")
    for (_, op), layer in zip(ops, layers):
        inputs = [int(t) for t in op.inputs]
        old_w, old_b = sg.tensors[inputs[1]], sg.tensors[inputs[2]]
        weights = np.ascontiguousarray(layer.weights, np.int8)
        bias = np.ascontiguousarray(layer.bias, np.int32)
        if tuple(weights.shape) != tuple(int(d) for d in old_w.shape) or \
                tuple(bias.shape) != tuple(int(d) for d in old_b.shape):
            raise PatchError(f"{C.SELF_ATTENTION_CAPS}: int8 W {weights.shape} / bias "
                             f"{bias.shape} do not match {tuple(old_w.shape)} / "
                             f"{tuple(old_b.shape)}")
        scales = np.asarray(layer.scales, np.float32).reshape(-1)
        if scales.size not in (1, weights.shape[1]):
            raise PatchError(f"{C.SELF_ATTENTION_CAPS}: W needs 1 or N_out scales, "
                             f"got {scales.size}")
        inputs[1] = G.add_tensor(
            sg, old_w, layer.weight_name or (tensor_name(old_w) + "/int8"), tables.INT8,
            G.affine(scales, np.zeros(scales.size, np.int64), 1 if scales.size > 1 else 0),
            G.add_buffer(model, weights.tobytes()))
        inputs[2] = G.add_tensor(
            sg, old_b, layer.bias_name or (tensor_name(old_b) + "/int32"), tables.INT32,
            G.affine([C.ATTENTION_BIAS_SCALE], [C.ATTENTION_BIAS_ZERO_POINT]),
            G.add_buffer(model, bias.tobytes()))
        op.inputs = np.array(inputs, np.int32)
        G.set_custom_options(op, layer.options)
    return model
