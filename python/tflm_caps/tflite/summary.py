"""What a .tflite contains: operators, I/O tensors, tensor types, sizes, metadata.

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
