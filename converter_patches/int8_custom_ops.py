"""Make the capsule custom ops of a quantized TFLite model fully int8.

The TF converter quantizes builtins but leaves every CUSTOM op in float,
wrapped in DEQUANTIZE/QUANTIZE, with float weights ("Quantization not yet
supported for op: CUSTOM").  The rewrites here finish the job:

1. ``set_fixed_output_ranges`` (before ``mlir_quantize``): the calibrated
   min/max of each capsule op's output becomes the range of its fixed int8
   scale, so whatever the quantizer derives from it (QUANTIZE after the op,
   same-scale builtins downstream) already uses the contract's scale.
2. ``make_custom_ops_int8`` (after ``mlir_quantize``): every custom op reads
   the int8 tensor its producer writes (the DEQUANTIZE in between goes), its
   output becomes int8 with the fixed scale and is read directly (the
   QUANTIZE after it goes); a float graph output gets one DEQUANTIZE.
3. ``quantize_class_caps``: int8 weights (per tensor or per output capsule,
   quantized_dimension 1) and the versioned options with the calibrated
   routing scales.
4. ``graph.prune`` then drops what became unreachable.
"""
import numpy as np

from tflm_caps.converter_patches import graph as G

SQUASH = "TFLMCaps_Squash"
CLASS_CAPS = "TFLMCaps_ClassCaps"
LENGTH = "TFLMCaps_Length"

# (scale, zero point) of each op's int8 output, docs/quantization.md.
FIXED_OUTPUT = {
    SQUASH: (1.0 / 128.0, 0),
    CLASS_CAPS: (1.0 / 128.0, 0),
    LENGTH: (1.0 / 256.0, -128),
}
# Activation inputs of each op (ClassCaps input 1 is the constant W).
ACTIVATION_INPUTS = {SQUASH: (0,), CLASS_CAPS: (0,), LENGTH: (0,)}


class PatchError(ValueError):
    """The model does not have the structure the int8 rewrite expects."""


def is_caps_op(name):
    return name in FIXED_OUTPUT


def caps_ops(model, subgraph_index=0):
    """[(operator index, op name)] of the capsule custom ops, in execution order."""
    sg = model.subgraphs[subgraph_index]
    out = []
    for k, op in enumerate(sg.operators):
        name = G.op_name(model, op)
        if G.opcode_of(model, op) == G.BUILTIN.CUSTOM and name.startswith("TFLMCaps_"):
            if not is_caps_op(name):
                raise PatchError(f"unknown capsule custom op {name!r}")
            out.append((k, name))
    return out


def fixed_range(op_name):
    """float [min, max] whose asymmetric int8 quantization is the fixed output scale."""
    scale, zp = FIXED_OUTPUT[op_name]
    return (-128 - zp) * scale, (127 - zp) * scale


def set_fixed_output_ranges(model):
    """Overwrite the calibrated min/max of every capsule op output (step 1)."""
    sg = model.subgraphs[0]
    for k, name in caps_ops(model):
        tensor = sg.tensors[sg.operators[k].outputs[0]]
        lo, hi = fixed_range(name)
        if tensor.quantization is None:
            tensor.quantization = G.schema.QuantizationParametersT()
        tensor.quantization.min = np.array([lo], np.float32)
        tensor.quantization.max = np.array([hi], np.float32)


def _int8_quant_of(tensor):
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0])


def _fixed_quant(op_name):
    scale, zp = FIXED_OUTPUT[op_name]
    return G.affine([scale], [zp])


def make_custom_ops_int8(model, layer_names=None):
    """Rewire the capsule ops to int8 tensors (step 2).

    ``layer_names``: optional {operator position among capsule ops: name}
    used to name the int8 output tensors after the Keras layers.
    Returns the number of QUANTIZE/DEQUANTIZE operators removed.
    """
    sg = model.subgraphs[0]
    ops = caps_ops(model)
    if not ops:
        raise PatchError("the model has no capsule custom ops")
    caps_indices = {k for k, _ in ops}
    removed = set()
    inserted = []  # (id of the operator it follows, new DEQUANTIZE operator)

    # Inputs: read the int8 producer directly.
    for k, name in ops:
        op = sg.operators[k]
        prod = G.producers(sg)
        inputs = [int(t) for t in op.inputs]
        for slot in ACTIVATION_INPUTS[name]:
            t = inputs[slot]
            tensor = sg.tensors[t]
            if tensor.type == G.TENSOR_TYPE.INT8:
                continue
            p = prod.get(t)
            if p is not None and p in caps_indices:
                continue  # another capsule op: becomes int8 below
            if p is not None and G.op_name(model, sg.operators[p]) == "DEQUANTIZE":
                src = int(sg.operators[p].inputs[0])
                if sg.tensors[src].type != G.TENSOR_TYPE.INT8:
                    raise PatchError(f"{name}: input {G.tensor_name(tensor)!r} is dequantized "
                                     f"from a {G.type_name(sg.tensors[src].type)} tensor, "
                                     "expected int8")
                inputs[slot] = src  # the DEQUANTIZE goes if nothing else reads it
                continue
            where = ("a graph input" if p is None
                     else f"operator {G.op_name(model, sg.operators[p])}")
            raise PatchError(f"{name}: input {G.tensor_name(tensor)!r} is "
                             f"{G.type_name(tensor.type)} written by {where}; expected an int8 "
                             "tensor (or a DEQUANTIZE of one)")
        op.inputs = np.array(inputs, np.int32)

    # Outputs: int8 with the fixed scale, read directly.
    graph_outputs = [int(t) for t in sg.outputs]
    for pos, (k, name) in enumerate(ops):
        op = sg.operators[k]
        t = int(op.outputs[0])
        tensor = sg.tensors[t]
        scale, zp = FIXED_OUTPUT[name]
        cons = G.consumers(sg).get(t, [])
        quantizes = [c for c in cons if G.op_name(model, sg.operators[c]) == "QUANTIZE"]
        others = [c for c in cons if c not in quantizes]
        for c in others:
            if c not in caps_indices:
                raise PatchError(f"{name}: output {G.tensor_name(tensor)!r} is read by float "
                                 f"operator {G.op_name(model, sg.operators[c])}")
        target = t
        for c in quantizes:
            q_out = int(sg.operators[c].outputs[0])
            q_tensor = sg.tensors[q_out]
            if q_tensor.type == G.TENSOR_TYPE.INT8 and _int8_quant_of(q_tensor) == (scale, zp):
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
        if layer_names and pos in layer_names:
            out_tensor.name = layer_names[pos].encode()
        if target == t:
            if t in graph_outputs:
                # Float graph output: the op writes a new int8 tensor, DEQUANTIZE to float.
                new = G.add_tensor(sg, tensor, G.tensor_name(tensor) + "/int8",
                                   G.TENSOR_TYPE.INT8, _fixed_quant(name))
                if layer_names and pos in layer_names:
                    sg.tensors[new].name = layer_names[pos].encode()
                op.outputs = np.array([new], np.int32)
                G.replace_uses(sg, t, new)
                sg.outputs = np.array(graph_outputs, np.int32)  # graph keeps the float tensor
                deq = type(op)()
                deq.opcodeIndex = G.opcode_index(model, builtin=G.BUILTIN.DEQUANTIZE)
                deq.inputs = np.array([new], np.int32)
                deq.outputs = np.array([t], np.int32)
                inserted.append((id(op), deq))
                continue
            tensor.type = G.TENSOR_TYPE.INT8
        out_tensor.quantization = _fixed_quant(name)

    before = len(sg.operators)
    after_op = dict(inserted)
    rebuilt = []
    for op in sg.operators:
        if id(op) in removed:
            continue
        rebuilt.append(op)
        if id(op) in after_op:
            rebuilt.append(after_op[id(op)])
    sg.operators = rebuilt
    remove_dead_conversions(model)
    return before + len(inserted) - len(sg.operators)


def remove_dead_conversions(model):
    """Drop QUANTIZE/DEQUANTIZE operators whose output nobody reads."""
    sg = model.subgraphs[0]
    while True:
        readers = G.consumers(sg)
        outputs = {int(t) for t in sg.outputs}
        dead = [k for k, op in enumerate(sg.operators)
                if G.op_name(model, op) in ("QUANTIZE", "DEQUANTIZE")
                and not readers.get(int(op.outputs[0])) and int(op.outputs[0]) not in outputs]
        if not dead:
            return
        G.remove_ops(sg, dead)


def class_caps_ops(model):
    """[(operator index, op)] of the ClassCaps ops in execution order."""
    sg = model.subgraphs[0]
    return [(k, sg.operators[k]) for k, name in caps_ops(model) if name == CLASS_CAPS]


def class_caps_weights(model, op):
    """Float W of a ClassCaps op (before ``quantize_class_caps``)."""
    sg = model.subgraphs[0]
    w = sg.tensors[int(op.inputs[1])]
    if w.type != G.TENSOR_TYPE.FLOAT32:
        raise PatchError(f"{CLASS_CAPS}: W {G.tensor_name(w)!r} is {G.type_name(w.type)}, "
                         "expected the float32 constant written by the TF converter")
    data = G.constant_array(model, w, np.float32)
    if data is None:
        raise PatchError(f"{CLASS_CAPS}: W {G.tensor_name(w)!r} is not a constant")
    return data


def activation_quant(model, op, slot=0):
    """(scale, zero point) of an int8 activation input."""
    sg = model.subgraphs[0]
    tensor = sg.tensors[int(op.inputs[slot])]
    quant = _int8_quant_of(tensor)
    if tensor.type != G.TENSOR_TYPE.INT8 or quant is None:
        raise PatchError(f"input {G.tensor_name(tensor)!r} is not a per-tensor int8 tensor")
    return quant


def quantize_class_caps(model, op, weights_int8, weight_scales, options_bytes, weight_name=None):
    """Install int8 W (new buffer, symmetric, 1 or N_out scales) and the options (step 3)."""
    sg = model.subgraphs[0]
    w_index = int(op.inputs[1])
    old = sg.tensors[w_index]
    weights_int8 = np.ascontiguousarray(weights_int8, np.int8)
    if tuple(weights_int8.shape) != tuple(int(d) for d in old.shape):
        raise PatchError(f"{CLASS_CAPS}: int8 W shape {weights_int8.shape} != {tuple(old.shape)}")
    scales = np.asarray(weight_scales, np.float32).reshape(-1)
    if scales.size not in (1, weights_int8.shape[1]):
        raise PatchError(f"{CLASS_CAPS}: W needs 1 or N_out scales, got {scales.size}")
    # A fresh tensor + buffer: the float buffer may be shared with another reader.
    buffer = G.add_buffer(model, weights_int8.tobytes())
    new = G.add_tensor(sg, old, weight_name or (G.tensor_name(old) + "/int8"),
                       G.TENSOR_TYPE.INT8,
                       G.affine(scales, np.zeros(scales.size, np.int64),
                                1 if scales.size > 1 else 0), buffer)
    inputs = [int(t) for t in op.inputs]
    inputs[1] = new
    op.inputs = np.array(inputs, np.int32)
    set_options(op, options_bytes)


def set_options(op, options_bytes):
    op.customOptions = np.frombuffer(bytes(options_bytes), np.uint8).copy()
    op.customOptionsFormat = 0  # FLEXBUFFERS
