"""Float Keras vs int8 TFLM validation of a converted CapsNet.

``validate(keras_model, tflite_model, data)`` runs the same images through
the float Keras model and through the int8 ``.tflite`` in the TFLM host
interpreter (with the tflm-caps operators) and reports:

- float and int8 top-1 accuracy and their top-1 agreement;
- per capsule layer (the outputs of every TFLMCaps_* op: primary-capsule
  squash, class capsules, lengths), read from TFLM's own intermediate
  tensors (interpreter run with all tensors preserved) and dequantized:
  * ``sqnr_db`` / ``max_abs_error``: against the Keras layer of the same
    name on the same images, i.e. the error accumulated up to that layer;
  * ``op_sqnr_db`` / ``op_max_abs_error``: against the float reference
    (tflm_caps.reference.float_ref) of that op applied to the op's own
    dequantized int8 inputs as TFLM saw them, i.e. the error the op itself
    adds;
- flash: float and int8 ``.tflite`` bytes, the constant bytes of each
  layer with its weight width (int8 or packed int4) and the constant bytes
  per bit width (``weight_report``); RAM: the exact minimum tensor arena
  (tflm_caps.runtime.find_min_arena_size).

``write_report`` stores the JSON, a Markdown summary and a PNG plot.
"""
import json
import math
import os
import time

import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps.console import quiet_native


def sqnr_db(reference, test):
    """10 log10(sum ref^2 / sum (ref - test)^2); None when the error is 0."""
    ref = np.asarray(reference, np.float64)
    err = ref - np.asarray(test, np.float64)
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return None
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _dequant(tensor, q):
    if tensor.quantization is None:
        return np.asarray(q, np.float64)
    scale, zp = tensor.quantization
    return (np.asarray(q, np.float64) - zp) * scale


def _weights_float(tensor):
    if tensor.type_name == "int4":
        from tflm_caps.reference.quant import unpack_int4
        raw = unpack_int4(tensor.data, tensor.shape).astype(np.float64)
    else:
        raw = np.frombuffer(tensor.data, dtype=np.int8).reshape(tensor.shape).astype(np.float64)
    scale = tensor.scale.astype(np.float64)
    if scale.size > 1:
        shape = [1] * len(tensor.shape)
        shape[tensor.quantized_dimension] = scale.size
        scale = scale.reshape(shape)
    return raw * scale


def _op_reference(info, op, deq_inputs):
    """Float reference of one capsule op on its dequantized int8 inputs."""
    from tflm_caps.converter import options
    from tflm_caps.reference import float_ref

    if op.op_name == C.SQUASH:
        return float_ref.squash(deq_inputs[0])
    if op.op_name == C.LENGTH:
        return float_ref.length(deq_inputs[0])
    if op.op_name == C.EFFICIENT_SQUASH:
        return float_ref.efficient_squash(deq_inputs[0])
    if op.op_name == C.SELF_ATTENTION_CAPS:
        w = _weights_float(info.tensors[op.inputs[1]])
        b = info.tensors[op.inputs[2]]
        bias = np.frombuffer(b.data, dtype=np.int32).reshape(b.shape) * C.ATTENTION_BIAS_SCALE
        return float_ref.self_attention_float(deq_inputs[0], w, bias, return_intermediates=False)
    routings = int(options.decode(op.op_name, op.custom_options)[C.OPT_NUM_ROUTING])
    w = _weights_float(info.tensors[op.inputs[1]])
    return float_ref.class_caps_float(deq_inputs[0], w, routings, return_intermediates=False)


def weight_report(keras_model, tflite_bytes):
    """Weights per layer and per bit width of a converted model.

    Returns (rows, bytes by bits): one row per operator with constant
    inputs (layer name: the Keras layer when the weighted builtins map one
    to one onto the model's Conv2D / DepthwiseConv2D / Dense / PrimaryCaps
    layers, the capsule ops' output names otherwise), its weight width
    (bits of input 1 of the weighted ops, the filter or W; None for the
    others, e.g. a RESHAPE's shape), weight bytes and total bytes.
    """
    from tflm_caps.converter import bit_widths
    from tflm_caps.converter_patches.int4_weights import INT4_BUILTINS
    from tflm_caps.tflite import weights_by_layer

    layers, by_bits = weights_by_layer(tflite_bytes)
    builtins = [lw for lw in layers if lw.op_name in INT4_BUILTINS]
    names = bit_widths.keras_weighted_layers(keras_model, [ly.name for ly in keras_model.layers])
    keras_name = dict(zip((lw.op_index for lw in builtins), names)) \
        if len(names) == len(builtins) else {}
    rows = []
    weighted = set(INT4_BUILTINS) | {C.CLASS_CAPS}
    for lw in layers:
        weight = next((t for t in lw.tensors if t["slot"] == 1), None) \
            if lw.op_name in weighted else None
        rows.append({"layer": keras_name.get(lw.op_index, lw.output), "op": lw.op_name,
                     "weight_bits": None if weight is None else weight["bits"],
                     "weight_bytes": 0 if weight is None else weight["bytes"],
                     "bytes": lw.bytes, "tensors": lw.tensors})
    return rows, {str(k): v for k, v in by_bits.items()}


def load_keras(model):
    """A keras.Model as is, or loaded from a .keras path (with our layers)."""
    from tflm_caps.converter import load_keras_model
    return load_keras_model(model)


def _as_dataset(data, input_shape, fit):
    from tflm_caps import data as caps_data

    ds = caps_data.load(data) if isinstance(data, str) else data
    return caps_data.fit_for_model(ds, input_shape, fit, data if isinstance(data, str) else None)


def _keras_outputs(model, x, layer_names, batch_size=256):
    """Final output and {layer name: output} of a functional Keras model."""
    import keras

    names = [n for n in layer_names if n is not None]
    outputs = [model.get_layer(n).output for n in names]
    probe = keras.Model(inputs=model.inputs, outputs=[model.outputs[0]] + outputs)
    with quiet_native():  # a new probe model per call: Keras warns about retracing
        res = probe.predict(x, batch_size=batch_size, verbose=0)
    res = res if isinstance(res, (list, tuple)) else [res]
    return np.asarray(res[0]), {n: np.asarray(r) for n, r in zip(names, res[1:])}


def _keras_layer_names(model):
    return {layer.name for layer in model.layers}


def _layer_errors(model, info, op, raw, layer_for_op, keras_layers, float_scores):
    """Report entry of one capsule op: its TFLM output against the Keras layer
    of the same name (accumulated error) and against the float op on its own
    int8 inputs (the op's error)."""
    t_out = info.tensors[op.outputs[0]]
    t_in = info.tensors[op.inputs[0]]
    got = _dequant(t_out, raw[op.outputs[0]])
    deq_in = _dequant(t_in, raw[op.inputs[0]])
    entry = {"name": layer_for_op.get(op.index, t_out.name), "op": op.op_name,
             "tensor": t_out.name, "shape": list(t_out.shape)}
    if op.index in layer_for_op:
        ref = keras_layers[layer_for_op[op.index]]
    elif op.outputs[0] in info.outputs:
        ref = float_scores  # the graph output is the Keras model output
        history = getattr(model.outputs[0], "_keras_history", None)
        entry["name"] = getattr(getattr(history, "operation", None), "name", entry["name"])
    else:
        ref = None
    if ref is not None and np.shape(ref) == got.shape:
        entry["sqnr_db"] = sqnr_db(ref, got)
        entry["max_abs_error"] = float(np.max(np.abs(np.asarray(ref, np.float64) - got)))
    else:
        entry["sqnr_db"] = None
        entry["max_abs_error"] = None
        entry["note"] = "no Keras layer of that name: only the op's own error is reported"
    op_ref = _op_reference(info, op, [deq_in])
    entry["op_sqnr_db"] = sqnr_db(op_ref, got)
    entry["op_max_abs_error"] = float(np.max(np.abs(op_ref - got)))
    return entry


def validate(keras_model, tflite_model, data, *, samples=None, float_tflite=None,
             arena_bytes="search", progress=False, fit="none"):
    """Compare float Keras with int8 TFLM on the held-out split of ``data``.

    keras_model: keras.Model or .keras path (image -> capsule lengths).
    tflite_model: int8 .tflite path or bytes (from tflm_caps.convert).
    data: a tflm_caps.data.Dataset, a data source string (tflm_caps.data.load)
    or a tuple (x, y).  samples: use the first N held-out images (None: all).
    fit: images of another shape than the model's are an error ("none") or
    adapted ("auto", "pad", "resize"; see tflm_caps.data.fit_images).  A
    model with a fixed batch of B runs on the largest multiple of B images
    (``report["samples_dropped"]`` says how many were left out).
    float_tflite: float .tflite (path or bytes) for the size comparison;
    None converts the Keras model with tflm_caps.converter.convert_float.
    arena_bytes: "search" (exact minimum, a few seconds), an int to report
    as is, or None to skip.  Returns the report dict (see module doc).
    """
    from tflm_caps.runtime import TFLMRunner, find_min_arena_size
    from tflm_caps.runtime.runner import read_model

    from tflm_caps.data import DataError
    from tflm_caps.tflite import check_model

    t0 = time.perf_counter()
    # Arguments first: they need no model.
    if samples is not None and (isinstance(samples, bool) or int(samples) < 1):
        raise DataError(f"samples must be >= 1, got {samples}")
    if fit not in ("none", "auto", "pad", "resize"):
        raise DataError(f"fit must be none, auto, pad or resize, got {fit!r}")
    int8_bytes, int8_name = read_model(tflite_model)
    batch = check_model(int8_bytes, int8_name).input_tensors()[0].shape[:1] or (1,)
    batch = max(int(batch[0]), 1)
    model = load_keras(keras_model)
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if isinstance(data, tuple):
        x, y = data
        data_name = "arrays"
    else:
        ds = _as_dataset(data, input_shape, fit)
        x, y, data_name = ds.x_test, ds.y_test, ds.name
    x = np.asarray(x, np.float32)
    y = np.asarray(y).reshape(-1)
    if samples is not None:
        x, y = x[:int(samples)], y[:int(samples)]
    if tuple(x.shape[1:]) != input_shape:
        raise DataError(f"validation images have shape {tuple(x.shape[1:])}, the Keras model "
                        f"takes {input_shape}")
    usable = len(x) // batch * batch
    dropped = len(x) - usable
    if usable == 0:
        raise DataError(f"{int8_name} has a fixed batch of {batch}: {len(x)} validation "
                        f"image(s) are fewer than one batch")
    x, y = x[:usable], y[:usable]

    runner = TFLMRunner(int8_bytes, preserve_all_tensors=True)
    runner.name = int8_name
    info = runner.info
    tflm_input = info.input_tensors()[0]
    if tuple(tflm_input.shape[1:]) != input_shape:
        raise ValueError(f"{int8_name} takes inputs of shape {list(tflm_input.shape[1:])}, the "
                         f"Keras model {list(input_shape)}: not the same model")
    caps_ops = [op for op in info.operators if op.op_name in C.CUSTOM_OPS]
    needed = sorted({i for op in caps_ops for i in (op.inputs[:1] + op.outputs)} |
                    set(info.outputs))
    raw = runner.intermediates(x, needed, progress=progress)
    out_tensor = info.output_tensors()[0]
    int8_scores = _dequant(out_tensor, raw[info.outputs[0]])

    keras_names = _keras_layer_names(model)
    layer_for_op = {}
    for op in caps_ops:
        name = info.tensors[op.outputs[0]].name
        if name in keras_names:
            layer_for_op[op.index] = name
    float_scores, keras_layers = _keras_outputs(model, x, list(layer_for_op.values()))

    layers = [_layer_errors(model, info, op, raw, layer_for_op, keras_layers, float_scores)
              for op in caps_ops]

    float_pred = np.argmax(float_scores, axis=-1)
    int8_pred = np.argmax(int8_scores, axis=-1)
    if float_tflite is None:
        from tflm_caps.converter import convert_float
        float_bytes = convert_float(model, batch_size=runner.batch_size,
                                    metadata="auto" if info.metadata_names else None)
    else:
        float_bytes, _ = read_model(float_tflite)
    if arena_bytes == "search":
        arena = find_min_arena_size(int8_bytes)
    else:
        arena = None if arena_bytes is None else int(arena_bytes)

    weight_rows, bytes_by_bits = weight_report(model, int8_bytes)
    report = {
        "model": getattr(model, "name", "model"),
        "tflite": int8_name,
        "data": data_name,
        "samples": int(len(x)),
        "batch_size": batch,
        "samples_dropped": int(dropped),
        "float_accuracy": float(np.mean(float_pred == y)),
        "int8_accuracy": float(np.mean(int8_pred == y)),
        "agreement": float(np.mean(float_pred == int8_pred)),
        "disagreements": int(np.sum(float_pred != int8_pred)),
        "float_tflite_bytes": len(float_bytes),
        "int8_tflite_bytes": len(int8_bytes),
        "int8_to_float_size": len(int8_bytes) / len(float_bytes),
        "arena_bytes": arena,
        "layers": layers,
        "weights": weight_rows,
        "weight_bytes_by_bits": bytes_by_bits,
        "max_length_error": float(np.max(np.abs(float_scores - int8_scores))),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    report["_lengths"] = (np.asarray(float_scores, np.float32), np.asarray(int8_scores,
                                                                           np.float32), y)
    return report


def agreement(keras_model, tflite_model, x, *, progress=False, batch_size=256):
    """Top-1 agreement of float Keras and int8 TFLM on images x; returns
    (agreement, disagreements, float_pred, int8_pred)."""
    from tflm_caps.runtime import TFLMRunner

    model = load_keras(keras_model)
    runner = tflite_model if isinstance(tflite_model, TFLMRunner) else TFLMRunner(tflite_model)
    with quiet_native():
        float_pred = np.argmax(model.predict(x, batch_size=batch_size, verbose=0), axis=-1)
    int8_pred = np.argmax(runner.predict(x, progress=progress), axis=-1)
    return (float(np.mean(float_pred == int8_pred)), int(np.sum(float_pred != int8_pred)),
            float_pred, int8_pred)


# ----------------------------------------------------------------------------
# Report files
# ----------------------------------------------------------------------------

def _fmt_db(v):
    return "exact" if v is None else f"{v:.1f}"


def to_json(report):
    """JSON-safe copy (private arrays dropped, infinities as null)."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not k.startswith("_")}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, (np.floating, np.integer)):
            return clean(v.item())
        return v
    return clean(report)


def markdown(report, title="tflm-caps validation"):
    """Markdown summary of a report."""
    r = report
    lines = [f"# {title}", "",
             f"Model `{r['model']}` ({r.get('tflite', '')}) on {r['samples']} held-out images "
             f"of `{r['data']}`." + (
                 f" The model's fixed batch is {r['batch_size']}: the last "
                 f"{r['samples_dropped']} image(s) (not a whole batch) were left out."
                 if r.get("samples_dropped") else ""), "",
             "| metric | value |", "| --- | --- |",
             f"| float accuracy (Keras) | {100 * r['float_accuracy']:.2f}% |",
             f"| int8 accuracy (TFLM) | {100 * r['int8_accuracy']:.2f}% |",
             f"| top-1 agreement | {100 * r['agreement']:.2f}% ({r['disagreements']} differ) |",
             f"| float .tflite | {r['float_tflite_bytes']:,} bytes |",
             f"| int8 .tflite | {r['int8_tflite_bytes']:,} bytes "
             f"({100 * r['int8_to_float_size']:.1f}% of float) |"]
    if r.get("arena_bytes") is not None:
        lines.append(f"| tensor arena (exact minimum, TFLM host) | {r['arena_bytes']:,} bytes |")
    for key, label in (("all_images_agreement", "top-1 agreement, all images"),):
        if key in r:
            lines.append(f"| {label} | {100 * r[key]:.2f}% of {r.get('all_images', '?')} |")
    lines += ["", "Per capsule layer (TFLM int8 output, dequantized): SQNR vs the Keras layer "
              "(error accumulated up to the layer) and vs the float op on the op's own int8 "
              "inputs (error of the op alone).", "",
              "| layer | op | SQNR vs Keras (dB) | max abs err | op SQNR (dB) | op max abs err |",
              "| --- | --- | --- | --- | --- | --- |"]
    for layer in r["layers"]:
        mae = layer.get("max_abs_error")
        lines.append(f"| {layer['name']} | {layer['op']} | {_fmt_db(layer.get('sqnr_db'))} | "
                     f"{'-' if mae is None else f'{mae:.4f}'} | "
                     f"{_fmt_db(layer.get('op_sqnr_db'))} | {layer['op_max_abs_error']:.4f} |")
    if r.get("weights"):
        lines += ["", "Constant data per layer (weights, biases, shapes) and per bit width.", "",
                  "| layer | op | weight bits | weight bytes | all bytes |",
                  "| --- | --- | --- | --- | --- |"]
        for w in r["weights"]:
            bits = "-" if w["weight_bits"] is None else str(w["weight_bits"])
            lines.append(f"| {w['layer']} | {w['op']} | {bits} | {w['weight_bytes']:,} | "
                         f"{w['bytes']:,} |")
        lines += ["", "| bits | bytes |", "| --- | --- |"]
        for bits, n in r.get("weight_bytes_by_bits", {}).items():
            lines.append(f"| {bits} | {n:,} |")
    if "targets" in r:
        lines += ["", "| target | required | measured | met |", "| --- | --- | --- | --- |"]
        for t in r["targets"]:
            lines.append(f"| {t['name']} | {t['required']} | {t['measured']} | "
                         f"{'yes' if t['met'] else '**NO**'} |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    """PNG: per-layer SQNR bars and float vs int8 capsule lengths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [f"{layer['name']}\n({layer['op'].replace(C.OP_PREFIX, '')})"
             for layer in report["layers"]]
    pos = np.arange(len(names))
    cum = [layer.get("sqnr_db") or 0.0 for layer in report["layers"]]
    own = [layer.get("op_sqnr_db") or 0.0 for layer in report["layers"]]
    ax1.bar(pos - 0.2, cum, 0.4, label="vs Keras (accumulated)")
    ax1.bar(pos + 0.2, own, 0.4, label="op alone")
    ax1.set_xticks(pos, names, fontsize=8)
    ax1.set_ylabel("SQNR (dB)")
    ax1.set_title("int8 error per capsule layer")
    ax1.legend(fontsize=8)
    if "_lengths" in report:
        f, q, y = report["_lengths"]
        ax2.scatter(f.ravel(), q.ravel(), s=2, alpha=0.3, label="all capsules")
        idx = np.arange(len(y))
        ax2.scatter(f[idx, y], q[idx, y], s=3, alpha=0.5, c="tab:red", label="true class")
        lim = [0, max(1.0, float(f.max()), float(q.max()))]
        ax2.plot(lim, lim, "k--", lw=0.8)
        ax2.set_xlabel("float capsule length (Keras)")
        ax2.set_ylabel("int8 capsule length (TFLM)")
        ax2.set_title(f"agreement {100 * report['agreement']:.2f}%")
        ax2.legend(fontsize=8, markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report, json_path, markdown_path=None, png_path=None, title=None):
    """Write the JSON report and, next to it unless given, the .md and .png."""
    base = os.path.splitext(json_path)[0]
    markdown_path = markdown_path or base + ".md"
    png_path = png_path or base + ".png"
    with open(json_path, "w") as f:
        json.dump(to_json(report), f, indent=2)
        f.write("\n")
    with open(markdown_path, "w") as f:
        f.write(markdown(report, title or "tflm-caps validation"))
    plot(report, png_path)
    return {"json": json_path, "markdown": markdown_path, "png": png_path}
