"""Small editing toolkit for TFLite flatbuffers (object API of the schema).

The rewrites of this package work on ``schema_py_generated.ModelT`` objects:
find producers/consumers, rewire tensor uses, drop operators, then ``prune``
removes whatever became unreachable (tensors, buffers, operator codes) and
renumbers every reference so the file really shrinks.
"""
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

BUILTIN = schema.BuiltinOperator
TENSOR_TYPE = schema.TensorType
_BUILTIN_NAMES = {v: k for k, v in vars(BUILTIN).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(TENSOR_TYPE).items() if not k.startswith("_")}


def load(tflite_bytes):
    """ModelT of a .tflite (bytes); ValueError if it is not a TFLite flatbuffer."""
    data = bytes(tflite_bytes)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (missing 'TFL3' identifier)")
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


BUFFER_ALIGNMENT = 16  # as the TF converter writes buffers (schema: force_align 16)


class _AlignedBuffer(schema.BufferT):
    """BufferT whose data is packed 16-byte aligned.

    The generated Python ``Pack`` ignores the schema's ``force_align: 16``
    and aligns weight data to 1 byte; kernels reading int32 biases or doing
    wide loads from the flatbuffer want the alignment the TF converter gives.
    """

    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = np.asarray(self.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def _aligned(buffer):
    out = _AlignedBuffer()
    out.data, out.offset, out.size = buffer.data, buffer.offset, buffer.size
    return out


def dump(model):
    """Serialized bytes of a ModelT (buffers 16-byte aligned)."""
    original = model.buffers
    model.buffers = [_aligned(b) for b in original]
    try:
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    finally:
        model.buffers = original


def opcode_of(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def op_name(model, op):
    """Builtin name ('CONV_2D') or the custom code ('TFLMCaps_Squash')."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = opcode_of(model, op)
    if builtin == BUILTIN.CUSTOM:
        return code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
    return _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")


def type_name(tensor_type):
    return _TYPE_NAMES.get(tensor_type, str(tensor_type))


def tensor_name(tensor):
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def opcode_index(model, builtin=None, custom=None, version=1):
    """Index of an operator code, appended when missing."""
    for i, code in enumerate(model.operatorCodes):
        kind = max(code.builtinCode, code.deprecatedBuiltinCode)
        if custom is not None:
            name = code.customCode
            name = name.decode() if isinstance(name, bytes) else name
            if name == custom and kind == BUILTIN.CUSTOM:
                return i
        elif kind == builtin and code.version == version:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = BUILTIN.CUSTOM if custom is not None else builtin
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    code.customCode = custom
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _ints(values):
    return [] if values is None else [int(v) for v in values]


def producers(subgraph):
    """tensor index -> index of the operator writing it."""
    out = {}
    for k, op in enumerate(subgraph.operators):
        for t in _ints(op.outputs):
            out[t] = k
    return out


def consumers(subgraph):
    """tensor index -> indices of the operators reading it."""
    out = {}
    for k, op in enumerate(subgraph.operators):
        for t in _ints(op.inputs):
            if t >= 0:
                out.setdefault(t, []).append(k)
    return out


def replace_uses(subgraph, old, new, skip_op=None):
    """Make every reader of tensor ``old`` (and the graph outputs) use ``new``."""
    for k, op in enumerate(subgraph.operators):
        if k == skip_op:
            continue
        op.inputs = np.array([new if t == old else t for t in _ints(op.inputs)], np.int32)
    subgraph.outputs = np.array([new if t == old else t for t in _ints(subgraph.outputs)],
                                np.int32)


def remove_ops(subgraph, indices):
    drop = set(indices)
    subgraph.operators = [op for k, op in enumerate(subgraph.operators) if k not in drop]


def add_tensor(subgraph, like, name, tensor_type, quantization=None, buffer=0):
    """Append a tensor with the shape of ``like``; returns its index."""
    tensor = schema.TensorT()
    tensor.shape = np.array(like.shape, np.int32)
    if like.shapeSignature is not None:
        tensor.shapeSignature = np.array(like.shapeSignature, np.int32)
    tensor.type = tensor_type
    tensor.buffer = buffer
    tensor.name = name.encode() if isinstance(name, str) else name
    tensor.quantization = quantization
    tensor.hasRank = like.hasRank
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def add_buffer(model, data):
    buf = schema.BufferT()
    buf.data = np.frombuffer(bytes(data), np.uint8).copy()
    model.buffers.append(buf)
    return len(model.buffers) - 1


def affine(scales, zero_points, quantized_dimension=0):
    q = schema.QuantizationParametersT()
    q.scale = np.asarray(scales, np.float32).reshape(-1)
    q.zeroPoint = np.asarray(zero_points, np.int64).reshape(-1)
    q.quantizedDimension = int(quantized_dimension)
    return q


def buffer_bytes(model, tensor):
    buf = model.buffers[tensor.buffer]
    if buf.data is None:
        return None
    return np.asarray(buf.data, np.uint8).tobytes()


def constant_array(model, tensor, dtype):
    """Numpy copy of a constant tensor's data (None when it has no buffer)."""
    data = buffer_bytes(model, tensor)
    if data is None:
        return None
    return np.frombuffer(data, dtype).reshape(_ints(tensor.shape)).copy()


def _has_data(model, index):
    """Buffer ``index`` holds bytes (in the flatbuffer, or outside it in the
    large-model layout, where ``offset`` > 1)."""
    buf = model.buffers[index]
    return (buf.data is not None and len(buf.data) > 0) or (buf.offset or 0) > 1


def drop_dead_data(model):
    """Remove data that no reader uses; returns (tensors moved, metadata entries dropped).

    - Tensors without data (activations, graph I/O) each get an empty buffer
      from the TF converter; the schema's sentinel buffer 0 means the same
      thing, so they are pointed at it and the empty buffers become
      unreferenced (8 bytes each in the file).
    - Metadata entries repeating a name: TF's quantizer leaves a second,
      all-zero ``min_runtime_version`` after the one it filled in. Readers
      look entries up by name, so one per name stays: the first with
      non-zero content (else the first).
    """
    moved = 0
    for sg in model.subgraphs:
        for tensor in sg.tensors:
            if tensor.buffer != 0 and not _has_data(model, tensor.buffer):
                tensor.buffer = 0
                moved += 1
    entries = list(model.metadata or [])

    def content(entry):
        data = model.buffers[entry.buffer].data
        return data is not None and bool(np.any(np.asarray(data)))

    keep = {}
    for k, entry in enumerate(entries):
        if entry.name not in keep or (content(entry) and not content(entries[keep[entry.name]])):
            keep[entry.name] = k
    if len(keep) < len(entries):
        kept = set(keep.values())
        model.metadata = [e for k, e in enumerate(entries) if k in kept]
    return moved, len(entries) - len(keep)


def prune(model, *, dead_data=True):
    """Drop tensors, buffers and operator codes nothing refers to; renumber references.

    ``dead_data``: first ``drop_dead_data`` (empty per-tensor buffers,
    repeated metadata entries).  Returns (tensors removed, buffers removed).
    """
    if dead_data:
        drop_dead_data(model)
    removed_tensors = 0
    for sg_index, sg in enumerate(model.subgraphs):
        used = set(_ints(sg.inputs)) | set(_ints(sg.outputs))
        for op in sg.operators:
            for field in (op.inputs, op.outputs, op.intermediates):
                used.update(t for t in _ints(field) if t >= 0)
        keep = [t for t in range(len(sg.tensors)) if t in used]
        remap = {old: new for new, old in enumerate(keep)}
        removed_tensors += len(sg.tensors) - len(keep)
        sg.tensors = [sg.tensors[t] for t in keep]

        def renum(values):
            return np.array([remap[t] if t >= 0 else t for t in _ints(values)], np.int32)

        sg.inputs, sg.outputs = renum(sg.inputs), renum(sg.outputs)
        for op in sg.operators:
            op.inputs, op.outputs = renum(op.inputs), renum(op.outputs)
            if op.intermediates is not None:
                op.intermediates = renum(op.intermediates)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == sg_index:
                for tmap in list(sig.inputs or []) + list(sig.outputs or []):
                    tmap.tensorIndex = remap[tmap.tensorIndex]

    # Buffers: index 0 is the schema's empty sentinel and always stays.
    used_buffers = {0}
    for sg in model.subgraphs:
        used_buffers.update(t.buffer for t in sg.tensors)
    used_buffers.update(m.buffer for m in model.metadata or [])
    used_buffers.update(_ints(model.metadataBuffer))
    keep = sorted(used_buffers)
    remap = {old: new for new, old in enumerate(keep)}
    removed_buffers = len(model.buffers) - len(keep)
    model.buffers = [model.buffers[b] for b in keep]
    for sg in model.subgraphs:
        for t in sg.tensors:
            t.buffer = remap[t.buffer]
    for m in model.metadata or []:
        m.buffer = remap[m.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = np.array([remap[b] for b in _ints(model.metadataBuffer)],
                                        np.int32)

    # Operator codes.
    used_codes = sorted({op.opcodeIndex for sg in model.subgraphs for op in sg.operators})
    remap = {old: new for new, old in enumerate(used_codes)}
    model.operatorCodes = [model.operatorCodes[c] for c in used_codes]
    for sg in model.subgraphs:
        for op in sg.operators:
            op.opcodeIndex = remap[op.opcodeIndex]
    return removed_tensors, removed_buffers
