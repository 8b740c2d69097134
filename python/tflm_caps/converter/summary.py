"""What a conversion produced: both models' structure and how calibration went."""
import dataclasses

from tflm_caps.tflite import ModelSummary


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
