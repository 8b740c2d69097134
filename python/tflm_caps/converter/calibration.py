"""Representative data for calibration, and the float statistics it yields.

``calibration_samples`` turns whatever the user passes (array, Dataset,
generator, callable, tf.data) into a float32 array of NHWC samples, checked
against the model input.  ``RoutingRecorder`` collects the float input
capsules of every ClassCaps op while the calibrator runs the float graph;
``class_caps_quant`` turns them into the routing scales with
``tflm_caps.reference.quant.calibrate_class_caps`` (the single definition of
those scales).
"""
import numbers

import numpy as np

from tflm_caps.converter.errors import ConversionError


def _as_sample_array(item, index, input_shape):
    if isinstance(item, dict):
        if len(item) != 1:
            raise ConversionError(f"representative_dataset: sample {index} is a dict with "
                                  f"{len(item)} entries; the model has one input (the image)")
        item = next(iter(item.values()))
    if isinstance(item, (list, tuple)):
        if len(item) != 1:
            raise ConversionError(f"representative_dataset: sample {index} holds {len(item)} "
                                  "arrays; the model has one input (the image)")
        item = item[0]
    if hasattr(item, "numpy"):
        item = item.numpy()
    try:
        arr = np.asarray(item)
    except Exception as exc:  # noqa: BLE001 - reported with the sample index
        raise ConversionError(f"representative_dataset: sample {index} is not an array "
                              f"({exc})") from exc
    if arr.dtype.kind not in "fiu":
        raise ConversionError(f"representative_dataset: sample {index} has dtype {arr.dtype}, "
                              "expected float images")
    shape = tuple(input_shape)
    if arr.shape == shape:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
        raise ConversionError(f"representative_dataset: sample {index} has shape {arr.shape}, "
                              f"expected {shape} or [n, {', '.join(map(str, shape))}] (NHWC)")
    return arr.astype(np.float32)


def calibration_samples(data, input_shape, num_samples):
    """float32 [n, H, W, C] of at most ``num_samples`` calibration images.

    ``data``: an array [N, H, W, C]; a ``tflm_caps.data.Dataset`` (a
    stratified subset of its train split); an iterable or a callable
    returning one (TF's representative_dataset convention: each item an
    array or a one-element list); a ``tf.data.Dataset``.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) \
            or num_samples < 1:
        raise ConversionError(f"num_samples must be a positive integer, got {num_samples!r}")
    if data is None:
        raise ConversionError("representative_dataset is required (calibration images from "
                              "the train split)")
    if hasattr(data, "calibration_subset") and hasattr(data, "x_train"):
        n = min(int(num_samples), len(data.x_train))
        if n == 0:
            raise ConversionError(f"representative_dataset: dataset {data.name!r} has an empty "
                                  "train split")
        data = data.calibration_subset(n, seed=0)
    if isinstance(data, np.ndarray):
        if data.size == 0:
            raise ConversionError(f"representative_dataset is empty (shape {data.shape})")
        samples = _as_sample_array(data, 0, input_shape)[:num_samples]
    else:
        source = data() if callable(data) else data
        try:
            iterator = iter(source)
        except TypeError as exc:
            raise ConversionError(f"representative_dataset must be an array, a Dataset, an "
                                  f"iterable or a callable returning one; got "
                                  f"{type(data).__name__}") from exc
        chunks, count = [], 0
        for index, item in enumerate(iterator):
            arr = _as_sample_array(item, index, input_shape)
            chunks.append(arr)
            count += len(arr)
            if count >= num_samples:
                break
        if not count:
            raise ConversionError("representative_dataset is empty (it yielded no samples)")
        samples = np.concatenate(chunks)[:num_samples]
    if not np.all(np.isfinite(samples)):
        raise ConversionError("representative_dataset contains NaN or infinite values")
    return np.ascontiguousarray(samples, np.float32)


class RoutingRecorder:
    """Float ClassCaps inputs seen during calibration, keyed by output tensor index."""

    def __init__(self):
        self.inputs = {}

    def __call__(self, output_index, u):
        self.inputs.setdefault(int(output_index), []).append(np.asarray(u, np.float32))

    def samples(self, output_index):
        chunks = self.inputs.get(int(output_index))
        if not chunks:
            return None
        return np.concatenate(chunks)


def class_caps_quant(layer_name, u, weights, num_routing, input_scale, input_zero_point,
                     per_capsule, weight_bits=8):
    """(ClassCapsQuant, weight codes) for one layer with ``weight_bits`` (8 or
    4) weights; ConversionError on zero ranges."""
    from tflm_caps.reference import quant

    if u is None or len(u) == 0:
        raise ConversionError(f"layer {layer_name!r}: the calibration never ran the ClassCaps op")
    if not np.any(weights):
        raise ConversionError(f"layer {layer_name!r}: weight W is all zero (zero range); "
                              "cannot choose an int8 scale for it")
    if per_capsule:
        zero = [j for j in range(weights.shape[1]) if not np.any(weights[:, j])]
        if zero:
            raise ConversionError(f"layer {layer_name!r}: weight W of output capsule(s) {zero} "
                                  "is all zero (zero range); use per-tensor weight scales or "
                                  "retrain")
    if not np.any(u):
        raise ConversionError(f"layer {layer_name!r}: its input capsules are all zero on every "
                              "calibration sample (zero activation range)")
    w_scales = quant.weight_scales(weights, per_capsule=per_capsule, bits=weight_bits)
    q = quant.calibrate_class_caps(u, weights, num_routing, input_scale, input_zero_point,
                                   w_scales=w_scales, per_capsule=per_capsule,
                                   weight_bits=weight_bits)
    # calibrate_class_caps gives a zero range a tiny positive scale; a range
    # that is exactly zero means the layer carries no signal: refuse it.
    for name, max_abs in _routing_maxima(u[:64], weights, num_routing).items():
        if max_abs == 0.0:
            raise ConversionError(f"layer {layer_name!r}: routing intermediate {name} is zero "
                                  "on the calibration samples (zero activation range)")
    return q, quant.quantize_weights(weights, w_scales, weight_bits)


def _routing_maxima(u, weights, num_routing):
    """max |x| of u_hat, s[r], b[r] in float (names as in docs/quantization.md)."""
    from tflm_caps.reference import float_ref

    _, inter = float_ref.class_caps_float(u, weights, num_routing, return_intermediates=True)
    out = {"u_hat": float(np.abs(inter["u_hat"]).max())}
    out.update({f"s[{r}]": float(np.abs(s).max()) for r, s in enumerate(inter["s"])})
    out.update({f"b[{r}]": float(np.abs(b).max()) for r, b in enumerate(inter["b"])})
    return out


def self_attention_quant(layer_name, u, weights, bias, input_scale, input_zero_point,
                         per_capsule):
    """(SelfAttentionQuant, int8 W, int32 Q15 bias) for one SelfAttentionCaps layer;
    ConversionError on zero ranges or a bias beyond the kernel's limit."""
    from tflm_caps.reference import float_ref, quant

    what = f"layer {layer_name!r} (SelfAttentionCaps)"
    if u is None or len(u) == 0:
        raise ConversionError(f"{what}: the calibration never ran the op")
    if not np.any(weights):
        raise ConversionError(f"{what}: weight W is all zero (zero range); cannot choose an "
                              "int8 scale for it")
    if per_capsule:
        zero = [j for j in range(weights.shape[1]) if not np.any(weights[:, j])]
        if zero:
            raise ConversionError(f"{what}: weight W of output capsule(s) {zero} is all zero "
                                  "(zero range); use per-tensor weight scales or retrain")
    if not np.any(u):
        raise ConversionError(f"{what}: its input capsules are all zero on every calibration "
                              "sample (zero activation range)")
    try:
        bias_q15 = quant.quantize_attention_bias(bias)
    except ValueError as exc:
        raise ConversionError(f"{what}: {exc}") from exc
    w_scales = quant.weight_scales(weights, per_capsule=per_capsule)
    q = quant.calibrate_self_attention(u, weights, bias, input_scale, input_zero_point,
                                       w_scales=w_scales, per_capsule=per_capsule)
    _, inter = float_ref.self_attention_float(u[:64], weights, bias, return_intermediates=True)
    for name in ("u_hat", "s"):
        if float(np.abs(inter[name]).max()) == 0.0:
            raise ConversionError(f"{what}: intermediate {name} is zero on the calibration "
                                  "samples (zero activation range)")
    return q, quant.quantize_weights(weights, w_scales), bias_q15
