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
    weights: list = dataclasses.field(default_factory=list)  # per weighted layer: bits, bytes
    bit_search: dict = None  # weight_bits="auto": the search (bit_widths.search)

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
        if self.weights:
            lines.append("weights per layer:")
            for w in self.weights:
                lines.append(f"  {w['layer']:<20} {w['op']:<19} {w['params']:>9,} params  "
                             f"int{w['bits']}  {w['bytes']:>9,} B"
                             + (f"  ({w['note']})" if w["note"] and (
                                 w["bits"] == 4 or not w["int4_possible"]) else ""))
        s = self.bit_search
        if s:
            lines.append(f"bit-width search (max drop {s['max_drop']:g} points, "
                         f"{s['validation_samples']} validation images from the train split, "
                         f"{s['evaluations']} models): float {100 * s['float_accuracy']:.2f}%, "
                         f"all int8 {100 * s['int8_accuracy']:.2f}%, chosen "
                         f"{100 * s['accuracy']:.2f}%")
            for name, sens in s["sensitivity"].items():
                lines.append(f"  {name} alone at int4: {100 * sens['accuracy']:.2f}% "
                             f"({sens['drop_points']:.2f} points below float)")
            for step in s["steps"][1:]:
                lines.append(f"  int4 {', '.join(step['int4'])}: "
                             f"{100 * step['accuracy']:.2f}% -> "
                             f"{'kept' if step['kept'] else 'rejected'}")
            if s.get("note"):
                lines.append(f"  {s['note']}")
        return "\n".join(lines)
