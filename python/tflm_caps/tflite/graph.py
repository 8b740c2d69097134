"""Editing of ``ModelT`` graphs: rewire, add, remove, prune, strip metadata.

Find producers/consumers, rewire tensor uses, drop operators, then ``prune``
removes whatever became unreachable (tensors, buffers, operator codes) and
renumbers every reference so the file really shrinks.  The int8 passes of
``tflm_caps.converter_patches`` are written with these.
"""
import numpy as np

from tflm_caps.tflite import tables
from tflm_caps.tflite.model import decode_name, dump, load


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
    """Drop the operators at ``indices`` (their tensors stay until ``prune``)."""
    drop = set(indices)
    subgraph.operators = [op for k, op in enumerate(subgraph.operators) if k not in drop]


def add_tensor(subgraph, like, name, tensor_type, quantization=None, buffer=0):
    """Append a tensor with the shape of ``like``; returns its index."""
    tensor = tables.schema().TensorT()
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
    """Append a buffer holding ``data``; returns its index."""
    buf = tables.schema().BufferT()
    buf.data = np.frombuffer(bytes(data), np.uint8).copy()
    model.buffers.append(buf)
    return len(model.buffers) - 1


def affine(scales, zero_points, quantized_dimension=0):
    """Affine quantization parameters (per tensor, or per channel along a dimension)."""
    q = tables.schema().QuantizationParametersT()
    q.scale = np.asarray(scales, np.float32).reshape(-1)
    q.zeroPoint = np.asarray(zero_points, np.int64).reshape(-1)
    q.quantizedDimension = int(quantized_dimension)
    return q


def opcode_index(model, builtin=None, custom=None, version=1):
    """Index of the operator code of a builtin (schema name, 'DEQUANTIZE') or a
    custom op (its code), appended when missing."""
    if custom is None:
        builtin = tables.builtin_codes()[builtin]
    for i, code in enumerate(model.operatorCodes):
        kind = max(code.builtinCode, code.deprecatedBuiltinCode)
        if custom is not None:
            name = code.customCode
            name = name.decode() if isinstance(name, bytes) else name
            if name == custom and kind == tables.BUILTIN_CUSTOM:
                return i
        elif kind == builtin and code.version == version:
            return i
    code = tables.schema().OperatorCodeT()
    code.builtinCode = tables.BUILTIN_CUSTOM if custom is not None else builtin
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    code.customCode = custom
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def set_custom_options(op, options_bytes):
    """Replace an operator's custom options (FlexBuffer bytes)."""
    op.customOptions = np.frombuffer(bytes(options_bytes), np.uint8).copy()
    op.customOptionsFormat = tables.CUSTOM_OPTIONS_FLEXBUFFERS


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


def strip_metadata(data):
    """The model without tflite-support metadata and its associated files.

    Drops the ``TFLITE_METADATA`` entries, then ``prune`` drops their
    buffers; the zip appended after the flatbuffer is not written back.
    Tensors, weights and custom options are kept.  A model without such
    metadata is returned as is.
    """
    model = load(data)
    entries = model.metadata or []
    kept = [m for m in entries if decode_name(m.name) != tables.TFLITE_METADATA]
    if len(kept) == len(entries):
        return bytes(data)
    model.metadata = kept or None
    prune(model)
    return dump(model)
