"""Keras CapsNet -> fully int8 .tflite with the capsule layers as CUSTOM ops.

Pipeline (docs/converter.md):

1. ``export.build_inference_export``: image -> lengths tf.function, capsule
   math as fusable composites (TFLMCaps_Squash / _ClassCaps / _Length).
2. TF converter with ``_experimental_calibrate_only``: the float graph runs
   over the representative data (float Python kernels for the custom ops)
   and every activation gets min/max statistics; the ClassCaps inputs are
   recorded on the way.
3. ``converter_patches.int8_custom_ops.set_fixed_output_ranges`` +
   ``mlir_quantize``: builtins quantized by TensorFlow exactly as its
   converter would.
4. ``converter_patches``: custom ops int8, weights int8 (or packed int4 where
   ``weight_bits`` says, ``bit_widths``), routing scales calibrated
   (``tflm_caps.reference.quant.calibrate_class_caps``) and written into the
   ops' options, QUANTIZE/DEQUANTIZE pairs and dead data removed.
5. Optional TFLite metadata.

Models are read and written with ``tflm_caps.tflite``.
"""
import dataclasses
import os
import time
import zipfile

import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps.console import progress as progress_bar
from tflm_caps.console import quiet_native
from tflm_caps import tflite
from tflm_caps.converter import bit_widths, calibration, export
from tflm_caps.converter import options as caps_options
from tflm_caps.converter.errors import ConversionError
from tflm_caps.converter.summary import ConversionSummary
from tflm_caps.converter_patches import int4_weights
from tflm_caps.converter_patches import int8_custom_ops as P
from tflm_caps.converter_patches import slim
from tflm_caps.tflite import graph as G
from tflm_caps.tflite import tables
from tflm_caps.tflite.model import op_name, tensor_name

WEIGHT_GRANULARITIES = ("per-tensor", "per-capsule")
IO_DTYPES = ("int8", "float32")
DEFAULT_NUM_SAMPLES = 200
_FLT_MIN = float(np.finfo(np.float32).tiny)


@dataclasses.dataclass
class ConversionResult:
    """The int8 model, the float model of the same graph, and a summary."""

    model: bytes
    float_model: bytes
    summary: ConversionSummary


def load_keras_model(model):
    """``model`` itself, or the Keras model saved at that path (capsule layers registered)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise FileNotFoundError(f"model file not found: {path}")
        _check_keras_archive(path)
        import keras

        import tflm_caps.layers  # noqa: F401 - registers the capsule layers
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:
            raise ConversionError(f"cannot load Keras model {path}: {exc}") from exc
    check_not_nested(model)
    return model


def _check_keras_archive(path):
    """A .keras file is a zip holding config.json; Keras itself says "File not
    found" for a truncated one."""
    if os.path.isdir(path):
        raise ConversionError(f"{path}: is a directory, expected a .keras file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ConversionError(f"{path}: not a valid .keras archive (not a readable zip file: "
                              f"{exc}); truncated or not saved with model.save()?") from None
    if "config.json" not in names:
        raise ConversionError(f"{path}: not a valid .keras archive (no config.json inside)")


def check_not_nested(model):
    """ConversionError naming the first layer that is itself a Keras model."""
    import keras

    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.Model):
            raise ConversionError(
                f"layer {layer.name!r} of model {model.name!r} is a nested Keras model: nested "
                "models are not supported; build one functional model from the inner model's "
                "layers (call them on the outer model's tensors)")


def _check_positive(name, value):
    """Checked before the model loads: these need no model."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConversionError(f"{name} must be a positive integer, got {value!r}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConversionError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                              f"got {value!r}")


def _tf_converter(concrete_function):
    import tensorflow as tf

    # Passing a trackable object selects the saved-model import path, which
    # keeps the composite functions intact so they fuse into CUSTOM ops (the
    # frozen-graph path inlines them first).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function],
                                                                tf.Module())
    converter.allow_custom_ops = True
    return converter


def _run_tf_converter(converter, what):
    try:
        with quiet_native():
            return converter.convert()
    except Exception as exc:
        raise ConversionError(f"TensorFlow Lite converter failed ({what}): {exc}") from exc


def _float_options(model_obj):
    """Versioned options on the custom ops of a float graph (no calibrated scales)."""
    for k, name in P.caps_ops(model_obj):
        op = model_obj.subgraphs[0].operators[k]
        raw = bytes(op.customOptions) if op.customOptions is not None else b""
        attrs = {}
        if raw:
            from flatbuffers import flexbuffers
            attrs = dict(flexbuffers.GetRoot(raw).Value)
        opts = {}
        if name == C.CLASS_CAPS:
            opts = {C.OPT_NUM_ROUTING: int(attrs[C.OPT_NUM_ROUTING]),
                    C.OPT_STORE_PREDICTIONS: int(bool(attrs.get(C.OPT_STORE_PREDICTIONS, 1)))}
        G.set_custom_options(op, caps_options.encode(name, opts, float_model=True))
    tflite.prune(model_obj)


def _float_model_bytes(ex):
    raw = _run_tf_converter(_tf_converter(ex.concrete_function), "float model")
    model_obj = tflite.load(raw)
    _float_options(model_obj)
    _name_custom_outputs(model_obj, ex)
    return tflite.dump(model_obj)


def _layer_names(model_obj, ex):
    """{position among capsule ops: Keras layer name} (execution order per op type)."""
    by_type = {}
    for name, layer in ex.custom_ops:
        by_type.setdefault(name, []).append(layer)
    names = {}
    seen = {}
    for pos, (_, name) in enumerate(P.caps_ops(model_obj)):
        k = seen.get(name, 0)
        seen[name] = k + 1
        layers = by_type.get(name, [])
        if k < len(layers):
            names[pos] = layers[k]
    return names


def _name_custom_outputs(model_obj, ex):
    sg = model_obj.subgraphs[0]
    outputs = {int(t) for t in sg.outputs}
    names = _layer_names(model_obj, ex)
    for pos, (k, _) in enumerate(P.caps_ops(model_obj)):
        t = int(sg.operators[k].outputs[0])
        if pos in names and t not in outputs:
            sg.tensors[t].name = names[pos].encode()


def _check_activation_ranges(model_obj, num_samples):
    """ConversionError for an activation whose calibrated range is a single value."""
    sg = model_obj.subgraphs[0]
    writers = G.producers(sg)
    caps_outputs = {int(sg.operators[k].outputs[0]) for k, _ in P.caps_ops(model_obj)}
    for index, tensor in enumerate(sg.tensors):
        q = tensor.quantization
        if q is None or q.min is None or q.max is None or not len(q.min):
            continue
        if index in caps_outputs:
            continue  # fixed ranges
        lo, hi = float(np.min(q.min)), float(np.max(q.max))
        # The calibrator records a constant tensor as [v, v + FLT_MIN].
        if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 4 * _FLT_MIN:
            who = "graph input" if index not in writers else \
                op_name(model_obj, sg.operators[writers[index]])
            raise ConversionError(
                f"activation {tensor_name(tensor)!r} (written by {who}) has a zero range: it "
                f"is constant ({lo:g}) over {num_samples} calibration samples; int8 needs a "
                "non-empty range (check the representative data and the layer's weights)")


def _default_metadata(model_name, num_classes, input_shape, data):
    names = getattr(data, "class_names", None) or ()
    labels = list(names) if len(names) == num_classes else [str(k) for k in range(num_classes)]
    from tflm_caps import __version__
    return {
        "name": model_name,
        "description": f"CapsNet {model_name}: image {list(input_shape)} -> class-capsule "
                       "lengths (int8 capsule custom ops, tflm-caps)",
        "version": __version__,
        "labels": labels,
        "mean": [0.0] * int(input_shape[-1]),
        "std": [255.0] * int(input_shape[-1]),
    }


def _add_metadata(tflite_bytes, metadata):
    from tflm_caps import metadata as md
    return md.write(tflite_bytes, **metadata)


def _resolve_metadata(metadata, ex, data):
    if metadata is None or metadata is False:
        return None
    auto = _default_metadata(ex.model_name, ex.num_classes, ex.input_shape, data)
    if metadata is True or metadata == "auto":
        return auto
    if isinstance(metadata, dict):
        return {**auto, **metadata}
    raise ConversionError(f"metadata must be None, 'auto' or a dict, got {type(metadata).__name__}")


def _verify_int8(model_obj, io_dtype):
    """Every activation int8, every weight int8 or packed int4 (int32
    biases/shapes); float and Q/DQ only at float I/O (an int8 -> int8
    requantizing QUANTIZE is allowed)."""
    sg = model_obj.subgraphs[0]
    io = {int(t) for t in sg.inputs} | {int(t) for t in sg.outputs}
    allowed_float = io if io_dtype == "float32" else set()
    for index, tensor in enumerate(sg.tensors):
        if tensor.type in (tables.INT8, tables.INT32):
            continue
        if tensor.type == tables.INT4 and model_obj.buffers[tensor.buffer].data is not None:
            continue  # packed int4 weights
        if index in allowed_float and tensor.type == tables.FLOAT32:
            continue
        raise ConversionError(f"internal: tensor {tensor_name(tensor)!r} is "
                              f"{tables.type_name(tensor.type)} after conversion")
    for op in sg.operators:
        name = op_name(model_obj, op)
        requantize = all(sg.tensors[int(t)].type == tables.INT8
                         for t in list(op.inputs) + list(op.outputs))
        if name == "QUANTIZE" and not (int(op.inputs[0]) in allowed_float or requantize):
            raise ConversionError("internal: a QUANTIZE remains inside the graph")
        if name == "DEQUANTIZE" and not (int(op.outputs[0]) in allowed_float):
            raise ConversionError("internal: a DEQUANTIZE remains inside the graph")


def _calibrate(ex, batches, progress):
    """Step 2: the float graph over the calibration batches, with float kernels
    recording the ClassCaps inputs.  Returns (model bytes with min/max
    statistics, the recorder, seconds)."""
    import tensorflow as tf

    from tflm_caps.converter import kernels

    recorder = calibration.RoutingRecorder()
    kernel_set = kernels.float_kernels(recorder)
    converter = _tf_converter(ex.concrete_function)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    bars = []  # made inside the converter call, so it writes past quiet_native

    def representative():
        bars.append(progress_bar(total=len(batches), desc="calibrating", unit="batch",
                                 enabled=progress, leave=False))
        for batch in batches:
            yield [batch]
            bars[-1].update(1)
        bars[-1].close()  # while its stream is open

    converter.representative_dataset = representative
    converter.target_spec._experimental_custom_op_registerers = [kernel_set.registerer]
    converter._experimental_calibrate_only = True
    t0 = time.perf_counter()
    try:
        calibrated = _run_tf_converter(converter, "calibration")
        kernel_set.raise_pending()
    finally:
        for bar in bars:
            bar.close()
    return calibrated, recorder, time.perf_counter() - t0


def _quantize_builtins(cal_model, io_dtype):
    """Step 3: the builtins quantized by TensorFlow (capsule ops left in float)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    io_tf = tf.int8 if io_dtype == "int8" else tf.float32
    try:
        with quiet_native():
            return tf_convert.mlir_quantize(tflite.dump(cal_model), input_data_type=io_tf,
                                            output_data_type=io_tf)
    except Exception as exc:
        raise ConversionError(f"TensorFlow Lite quantizer failed: {exc}") from exc


class _Finisher:
    """Step 4 for any choice of weight widths, from one quantized model.

    ClassCaps calibrations (the routing scales depend on the weights'
    grid) are computed once per layer and width; ``finish(bits)`` returns
    (int8 model bytes, per-layer reports of the ClassCaps and
    SelfAttentionCaps ops, QUANTIZE/DEQUANTIZE removed).
    """

    def __init__(self, quantized, ex, routing_inputs, attention_inputs, per_capsule,
                 store_predictions, io_dtype, layers, float_weights):
        self.quantized = quantized
        self.ex = ex
        self.routing_inputs = routing_inputs
        self.attention_inputs = attention_inputs
        self.per_capsule = per_capsule
        self.store_predictions = store_predictions
        self.io_dtype = io_dtype
        self.layers = layers
        self.float_weights = float_weights
        self._class_caps = {}
        self._attention = {}

    def _class_caps_quant(self, k, info, u, scale, zp, weights, bits):
        key = (k, bits)
        if key not in self._class_caps:
            self._class_caps[key] = calibration.class_caps_quant(
                info.layer_name, u, weights, info.num_routing, scale, zp, self.per_capsule,
                weight_bits=bits)
        return self._class_caps[key]

    def finish(self, bits):
        """The model with ``bits`` ({layer name: 8 or 4}) weights."""
        q_model = tflite.load(self.quantized)
        quantized_ops = {id(op) for op in q_model.subgraphs[0].operators}
        try:
            P.make_custom_ops_int8(q_model, _layer_names(q_model, self.ex))
        except P.PatchError as exc:
            raise ConversionError(f"cannot make the capsule ops int8: {exc}") from exc
        removed = len(quantized_ops - {id(op) for op in q_model.subgraphs[0].operators})
        by_kind = {(layer.kind, layer.index): layer for layer in self.layers}
        reports, cc_layers = [], []
        for k, ((_, op), info, u) in enumerate(zip(P.class_caps_ops(q_model), self.ex.class_caps,
                                                    self.routing_inputs)):
            w_bits = bits[by_kind[(bit_widths.CLASS_CAPS, k)].name]
            scale, zp = P.activation_quant(q_model, op)
            weights = P.class_caps_weights(q_model, op)
            q, w_codes = self._class_caps_quant(k, info, u, scale, zp, weights, w_bits)
            opts = caps_options.encode(C.CLASS_CAPS, {
                C.OPT_NUM_ROUTING: info.num_routing,
                C.OPT_STORE_PREDICTIONS: int(bool(self.store_predictions)),
                C.OPT_U_HAT_SCALE: q.uhat_scale, C.OPT_S_SCALES: list(q.s_scales),
                C.OPT_B_SCALES: list(q.b_scales)})
            cc_layers.append(P.ClassCapsInt8(w_codes, q.weight_scales, opts,
                                             f"{info.layer_name}/W", w_bits))
            reports.append({"layer": info.layer_name, "num_routing": info.num_routing,
                            "calibration_samples": int(len(u)), "weight_bits": w_bits,
                            **q.to_dict()})
        P.quantize_class_caps(q_model, cc_layers)
        sa_layers = []
        for k, ((_, op), info, u) in enumerate(zip(P.self_attention_ops(q_model),
                                                   self.ex.self_attention,
                                                   self.attention_inputs)):
            if k not in self._attention:  # independent of the weight widths searched
                scale, zp = P.activation_quant(q_model, op)
                weights, bias = P.self_attention_constants(q_model, op)
                self._attention[k] = calibration.self_attention_quant(
                    info.layer_name, u, weights, bias, scale, zp, self.per_capsule)
            q, w_int8, b_int32 = self._attention[k]
            opts = caps_options.encode(C.SELF_ATTENTION_CAPS, {
                C.OPT_U_HAT_SCALE: q.uhat_scale, C.OPT_S_SCALE: q.s_scale})
            sa_layers.append(P.SelfAttentionInt8(w_int8, q.weight_scales, b_int32, opts,
                                                 f"{info.layer_name}/W", f"{info.layer_name}/b"))
            reports.append({"layer": info.layer_name, "routing": "self-attention",
                            "calibration_samples": int(len(u)), **q.to_dict()})
        P.quantize_self_attention(q_model, sa_layers)
        builtins = int4_weights.weighted_builtins(q_model)
        if len(builtins) != len(self.float_weights):
            raise ConversionError(f"internal: {len(builtins)} weighted builtins in the int8 "
                                  f"model, {len(self.float_weights)} in the float model")
        for k, ((op_index, _), weights) in enumerate(zip(builtins, self.float_weights)):
            layer = by_kind[(bit_widths.BUILTIN, k)]
            if bits[layer.name] == 4:
                try:
                    int4_weights.requantize_int4(q_model, op_index, weights)
                except int4_weights.Int4Error as exc:
                    raise ConversionError(f"layer {layer.name!r}: {exc}") from exc
        for k, name in P.caps_ops(q_model):
            if name not in (C.CLASS_CAPS, C.SELF_ATTENTION_CAPS):
                G.set_custom_options(q_model.subgraphs[0].operators[k],
                                     caps_options.encode(name, {}))
        try:
            P.add_squash_tables(q_model)
        except P.PatchError as exc:
            raise ConversionError(f"cannot add the squash gain tables: {exc}") from exc
        slim.strip_bias_quantization(q_model)
        tflite.prune(q_model)
        _verify_int8(q_model, self.io_dtype)
        return tflite.dump(q_model), reports, removed


def convert_detailed(model, representative_dataset, *, num_samples=DEFAULT_NUM_SAMPLES,
                     weight_granularity="per-tensor", io_dtype="int8", store_predictions=True,
                     batch_size=1, metadata="auto", progress=False, weight_bits=8,
                     max_drop=None, validation_data=None,
                     validation_samples=bit_widths.DEFAULT_VALIDATION_SAMPLES):
    """Convert ``model`` (keras.Model or .keras path); returns a ConversionResult.

    representative_dataset: calibration images of the train split (array
    [N, H, W, C] in the model's input range, a ``tflm_caps.data.Dataset``,
    an iterable / callable / tf.data yielding images); at most
    ``num_samples`` are used.  weight_granularity: ``"per-tensor"`` or
    ``"per-capsule"`` (one ClassCaps weight scale per output capsule).
    io_dtype: ``"int8"`` (int8 input/output tensors) or ``"float32"`` (one
    QUANTIZE at the input, one DEQUANTIZE at the output).  batch_size: the
    model's fixed batch dimension.  metadata: ``"auto"``, None or a dict
    (keys of ``tflm_caps.metadata.write``).  progress: tqdm bars.

    weight_bits: width of each weighted layer's weights (builtin
    convolutions / dense layers and ClassCaps W): ``8``, ``4`` (every layer
    that can be int4, packed two per byte), a dict ``{layer name: 8 or 4}``,
    or ``"auto"``: the greedy search of ``bit_widths`` keeping the lowest
    widths whose validation accuracy stays within ``max_drop`` points of
    the float model.  Its validation images are ``validation_data``
    (images, labels) or ``validation_samples`` images of the training split
    of a Dataset ``representative_dataset`` (never the test split).
    """
    start = time.perf_counter()
    _check_choice("weight_granularity", weight_granularity, WEIGHT_GRANULARITIES)
    _check_choice("io_dtype", io_dtype, IO_DTYPES)
    bit_widths.check_spec(weight_bits, max_drop)
    if not isinstance(store_predictions, (bool, np.bool_)) and store_predictions not in (0, 1):
        raise ConversionError(f"store_predictions must be a bool, got {store_predictions!r}")
    _check_positive("num_samples", num_samples)
    _check_positive("batch_size", batch_size)
    model = load_keras_model(model)
    ex = export.build_inference_export(model, batch_size=batch_size,
                                       store_predictions=bool(store_predictions))
    samples = calibration.calibration_samples(representative_dataset, ex.input_shape,
                                              num_samples)
    n_batches = len(samples) // batch_size
    if n_batches == 0:
        raise ConversionError(f"representative_dataset: {len(samples)} sample(s) cannot fill "
                              f"one batch of batch_size={batch_size}")
    used = n_batches * batch_size
    batches = samples[:used].reshape(n_batches, batch_size, *ex.input_shape)
    meta = _resolve_metadata(metadata, ex, representative_dataset)
    if weight_bits == bit_widths.AUTO:  # checked before the long work
        x_val, y_val = bit_widths.validation_split(validation_data, representative_dataset,
                                                   ex.input_shape, validation_samples)

    float_bytes = _float_model_bytes(ex)
    calibrated, recorder, calibration_seconds = _calibrate(ex, batches, progress)
    cal_model = tflite.load(calibrated)
    _check_activation_ranges(cal_model, used)
    # ClassCaps ops in execution order -> their recorded float inputs.
    routing_inputs = [recorder.samples(int(op.outputs[0]))
                      for _, op in P.class_caps_ops(cal_model)]
    if len(routing_inputs) != len(ex.class_caps):
        raise ConversionError(f"internal: {len(routing_inputs)} ClassCaps ops in the graph, "
                              f"{len(ex.class_caps)} ClassCaps layers in the model")
    attention_inputs = [recorder.samples(int(op.outputs[0]))
                        for _, op in P.self_attention_ops(cal_model)]
    if len(attention_inputs) != len(ex.self_attention):
        raise ConversionError(f"internal: {len(attention_inputs)} SelfAttentionCaps ops in the "
                              f"graph, {len(ex.self_attention)} layers in the model")
    layers = bit_widths.weight_layers(model, ex, cal_model)
    float_weights = int4_weights.float_weights(cal_model)
    P.set_fixed_output_ranges(cal_model)
    quantized = _quantize_builtins(cal_model, io_dtype)
    finisher = _Finisher(quantized, ex, routing_inputs, attention_inputs,
                         weight_granularity == "per-capsule",
                         store_predictions, io_dtype, layers, float_weights)
    search = None
    if weight_bits == bit_widths.AUTO:
        bits, search = bit_widths.search(lambda b: finisher.finish(b)[0], layers, ex, x_val,
                                         y_val, float(max_drop), progress)
    else:
        bits = bit_widths.resolve(weight_bits, layers)
    int8_bytes, cc_reports, removed = finisher.finish(bits)

    if meta is not None:
        int8_bytes = _add_metadata(int8_bytes, meta)
        float_bytes = _add_metadata(float_bytes, meta)

    summary = ConversionSummary(
        model_name=ex.model_name, int8=tflite.summarize(int8_bytes),
        float=tflite.summarize(float_bytes),
        io_dtype=io_dtype, weight_granularity=weight_granularity, batch_size=batch_size,
        calibration_samples=used, calibration_seconds=calibration_seconds,
        conversion_seconds=time.perf_counter() - start, class_caps=cc_reports,
        removed_conversions=removed, weights=bit_widths.layer_report(layers, bits),
        bit_search=search)
    return ConversionResult(int8_bytes, float_bytes, summary)


def convert(model, representative_dataset, *, num_samples=DEFAULT_NUM_SAMPLES,
            weight_granularity="per-tensor", io_dtype="int8", store_predictions=True,
            batch_size=1, metadata="auto", progress=False, weight_bits=8, max_drop=None,
            validation_data=None, validation_samples=bit_widths.DEFAULT_VALIDATION_SAMPLES):
    """Fully int8 .tflite (bytes) of a Keras CapsNet; see ``convert_detailed``."""
    return convert_detailed(model, representative_dataset, num_samples=num_samples,
                            weight_granularity=weight_granularity, io_dtype=io_dtype,
                            store_predictions=store_predictions, batch_size=batch_size,
                            metadata=metadata, progress=progress, weight_bits=weight_bits,
                            max_drop=max_drop, validation_data=validation_data,
                            validation_samples=validation_samples).model


def convert_float(model, *, batch_size=1, store_predictions=True, metadata=None):
    """Float .tflite of the same graph (custom ops in float), for size comparison and
    validation; runs in ``tf.lite`` with ``kernels.make_interpreter``."""
    _check_positive("batch_size", batch_size)
    model = load_keras_model(model)
    ex = export.build_inference_export(model, batch_size=batch_size,
                                       store_predictions=bool(store_predictions))
    data = _float_model_bytes(ex)
    meta = _resolve_metadata(metadata, ex, None)
    return _add_metadata(data, meta) if meta is not None else data
