"""What a .tflite contains: operators, tensor types, sizes (for reports and tests)."""
import collections
import dataclasses

import numpy as np


@dataclasses.dataclass
class ModelSummary:
    """Structure of one .tflite flatbuffer."""

    size_bytes: int
    operators: list            # op names in execution order
    activation_types: dict     # type name -> count (non-constant tensors)
    weight_types: dict         # type name -> count (constant tensors with data)
    weight_bytes: int
    input_types: list
    output_types: list
    has_metadata: bool

    @property
    def op_counts(self):
        return dict(collections.Counter(self.operators))

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["op_counts"] = self.op_counts
        return d


@dataclasses.dataclass
class ConversionSummary:
    """Result of ``convert_detailed``: both models' structure and how calibration went."""

    model_name: str
    int8: ModelSummary
    float: ModelSummary
    io_dtype: str
    weight_granularity: str
    batch_size: int
    calibration_samples: int
    calibration_seconds: float
    conversion_seconds: float
    class_caps: list  # per ClassCaps layer: dict of its quantization
    removed_conversions: int

    @property
    def size_ratio(self):
        return self.int8.size_bytes / self.float.size_bytes

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["size_ratio"] = self.size_ratio
        d["int8"] = self.int8.to_dict()
        d["float"] = self.float.to_dict()
        return d

    def format(self):
        lines = [
            f"model {self.model_name}: {len(self.int8.operators)} ops "
            + ", ".join(f"{k} x{v}" for k, v in self.int8.op_counts.items()),
            f"tensor types: activations {self.int8.activation_types}, "
            f"weights {self.int8.weight_types}, io {self.io_dtype}",
            f"size: float {self.float.size_bytes:,} B -> int8 {self.int8.size_bytes:,} B "
            f"({100 * self.size_ratio:.1f}%), weights {self.weight_granularity}",
            f"calibration: {self.calibration_samples} samples in "
            f"{self.calibration_seconds:.1f} s (conversion {self.conversion_seconds:.1f} s)",
        ]
        return "\n".join(lines)


def summarize(tflite_bytes):
    """ModelSummary of a .tflite (bytes)."""
    from tflm_caps.converter_patches import graph as G

    model = G.load(tflite_bytes)
    sg = model.subgraphs[0]
    ops = [G.op_name(model, op) for op in sg.operators]
    acts, weights = collections.Counter(), collections.Counter()
    weight_bytes = 0
    for tensor in sg.tensors:
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if data is not None and len(data):
            weights[G.type_name(tensor.type)] += 1
            weight_bytes += len(data)
        else:
            acts[G.type_name(tensor.type)] += 1
    return ModelSummary(
        size_bytes=len(tflite_bytes), operators=ops, activation_types=dict(acts),
        weight_types=dict(weights), weight_bytes=int(weight_bytes),
        input_types=[G.type_name(sg.tensors[t].type) for t in sg.inputs],
        output_types=[G.type_name(sg.tensors[t].type) for t in sg.outputs],
        has_metadata=any(m.name in (b"TFLITE_METADATA", "TFLITE_METADATA")
                         for m in model.metadata or []))


def is_int8_model(tflite_bytes):
    """True when the ClassCaps weights are int8 (a converted, not a float, model)."""
    from tflm_caps.converter_patches import graph as G

    model = G.load(tflite_bytes)
    sg = model.subgraphs[0]
    for op in sg.operators:
        if G.op_name(model, op) == "TFLMCaps_ClassCaps":
            return sg.tensors[int(op.inputs[1])].type == G.TENSOR_TYPE.INT8
    return all(sg.tensors[t].type == G.TENSOR_TYPE.INT8 for t in np.asarray(sg.inputs))
