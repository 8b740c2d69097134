"""What a .tflite contains: operators, I/O tensors, tensor types, sizes, metadata,
MACs of the compute builtins (``op_macs``).

For reports (conversion summary, ``tflm-caps export``) and tests.  Built on
the bounds-checked reader, so a malformed file is a ModelFormatError.
"""
import collections
import dataclasses

from tflm_caps.tflite.reader import check_model
from tflm_caps.tflite.tables import TFLITE_METADATA


@dataclasses.dataclass
class TensorSummary:
    """A graph input or output: dtype name, shape and per-tensor quantization
    (scale 0 and zero point 0 when it has none)."""

    name: str
    dtype: str
    shape: list
    scale: float
    zero_point: int

    @property
    def elements(self):
        n = 1
        for d in self.shape:
            n *= max(int(d), 1)
        return n


@dataclasses.dataclass
class ModelSummary:
    """Structure of one .tflite flatbuffer (its first subgraph)."""

    size_bytes: int
    operators: list            # op names in execution order (builtin name or custom code)
    builtin_ops: list          # builtin names used, sorted
    custom_ops: list           # custom codes used, sorted
    inputs: list               # TensorSummary
    outputs: list              # TensorSummary
    activation_types: dict     # dtype name -> count (tensors without data)
    weight_types: dict         # dtype name -> count (tensors with constant data)
    weight_bytes: int
    metadata: list             # metadata entry names

    @property
    def op_counts(self):
        return dict(collections.Counter(self.operators))

    @property
    def input_types(self):
        return [t.dtype for t in self.inputs]

    @property
    def output_types(self):
        return [t.dtype for t in self.outputs]

    @property
    def has_metadata(self):
        """True when the model carries tflite-support metadata."""
        return TFLITE_METADATA in self.metadata

    def to_dict(self):
        d = dataclasses.asdict(self)
        for key in ("op_counts", "input_types", "output_types", "has_metadata"):
            d[key] = getattr(self, key)
        return d


def _tensor_summary(tensor):
    quant = tensor.quantization
    scale, zero_point = quant if quant is not None else (0.0, 0)
    return TensorSummary(tensor.name, tensor.type_name, [int(d) for d in tensor.shape],
                         float(scale), int(zero_point))


def summarize(data, what="model"):
    """ModelSummary of a .tflite (bytes)."""
    info = check_model(bytes(data), what)
    activations, weights = collections.Counter(), collections.Counter()
    weight_bytes = 0
    for tensor in info.tensors:
        if tensor.is_constant:
            weights[tensor.type_name] += 1
            weight_bytes += len(tensor.data)
        else:
            activations[tensor.type_name] += 1
    return ModelSummary(
        size_bytes=len(data), operators=[op.op_name for op in info.operators],
        builtin_ops=sorted({op.op_name for op in info.operators if op.custom_code is None}),
        custom_ops=info.custom_codes,
        inputs=[_tensor_summary(t) for t in info.input_tensors()],
        outputs=[_tensor_summary(t) for t in info.output_tensors()],
        activation_types=dict(activations), weight_types=dict(weights),
        weight_bytes=int(weight_bytes), metadata=list(info.metadata_names))


@dataclasses.dataclass
class LayerWeights:
    """The constant inputs of one operator (weights, biases, shapes)."""

    op_index: int
    op_name: str
    output: str                # name of the op's first output tensor
    tensors: list              # dicts: slot (input index), name, dtype, bits, shape, bytes

    @property
    def bytes(self):
        return sum(t["bytes"] for t in self.tensors)

    def to_dict(self):
        return {"op_index": self.op_index, "op": self.op_name, "output": self.output,
                "tensors": self.tensors, "bytes": self.bytes}


def weights_by_layer(data, what="model"):
    """[LayerWeights] of every operator with constant inputs, in execution
    order, and {bits: bytes} of all constant data (4 for packed int4, 8 for
    int8, 32 for int32 biases and shapes, ...)."""
    info = check_model(bytes(data), what)
    layers, by_bits = [], collections.Counter()
    for op in info.operators:
        consts = []
        for slot, t in enumerate(op.inputs):
            if t < 0 or not info.tensors[t].is_constant:
                continue
            tensor = info.tensors[t]
            bits = tensor.bits
            consts.append({"slot": slot, "name": tensor.name, "dtype": tensor.type_name,
                           "bits": bits, "shape": [int(d) for d in tensor.shape],
                           "bytes": len(tensor.data)})
            by_bits[bits] += len(tensor.data)
        if consts:
            out = info.tensors[op.outputs[0]].name if op.outputs else ""
            layers.append(LayerWeights(op.index, op.op_name, out, consts))
    return layers, dict(sorted(by_bits.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def op_macs(info, op):
    """Multiply-accumulates of one builtin operator of a ModelInfo, from its
    tensor shapes: CONV_2D (output elements x kernel height x width x input
    channels per group), DEPTHWISE_CONV_2D (output elements x kernel height
    x width), FULLY_CONNECTED (input elements x units).  None for any other
    operator."""
    def shape(i):
        return [int(d) for d in info.tensors[i].shape]

    def count(dims):
        n = 1
        for d in dims:
            n *= d
        return n

    if op.op_name == "CONV_2D":
        w = shape(op.inputs[1])
        return count(shape(op.outputs[0])) * w[1] * w[2] * w[3]
    if op.op_name == "DEPTHWISE_CONV_2D":
        w = shape(op.inputs[1])
        return count(shape(op.outputs[0])) * w[1] * w[2]
    if op.op_name == "FULLY_CONNECTED":
        return count(shape(op.inputs[0])) * shape(op.inputs[1])[0]
    return None
