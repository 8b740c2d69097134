"""Per-layer weight widths: int8, or packed int4 (docs/converter.md).

The weighted layers of a conversion are the builtins TFLM runs with INT4
filters (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: a Keras Conv2D,
DepthwiseConv2D, Dense, or the convolution of a PrimaryCaps) and every
ClassCaps W.  ``weight_bits`` of ``convert`` chooses their widths:

- ``8``: all int8 (the default); ``4``: every layer that can be int4 (a
  ClassCaps W needs N_out*D_out*D_in even);
- a dict ``{layer name: 8 or 4}``: those layers, the others int8;
- ``"auto"``: ``search``, a Q-CapsNets-style greedy search (Marchisio et
  al., DAC 2020) on a validation split carved from the training data:
  each layer alone at 4 bits gives its sensitivity (validation accuracy
  drop); from the least sensitive (ties: the larger first) each layer
  goes to 4 bits if the model with it and every earlier choice stays within
  ``max_drop`` points of the float model's validation accuracy.  Candidates
  run in the TFLM host interpreter with the project's operators.
"""
import dataclasses
import math
import numbers

import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps.converter.errors import ConversionError
from tflm_caps.reference import quant

WIDTHS = C.CLASS_CAPS_WEIGHT_BITS  # the builtins' int4 is TFLM's; the same two widths
AUTO = "auto"
DEFAULT_VALIDATION_SAMPLES = 1000
VALIDATION_SEED = 1  # the calibration subset uses seed 0
CLASS_CAPS = "class_caps"
BUILTIN = "builtin"


@dataclasses.dataclass
class WeightLayer:
    """A layer whose weights can be int8 or int4."""

    name: str           # Keras layer name (or OP_k when the graph does not map)
    kind: str           # BUILTIN or CLASS_CAPS
    op: str             # CONV_2D, ..., TFLMCaps_ClassCaps
    index: int          # position among the layers of its kind, in execution order
    params: int         # weights (filter or W), biases excluded
    int4_ok: bool
    note: str = ""      # why not int4, or how (FULLY_CONNECTED: per tensor)

    def weight_bytes(self, bits):
        return quant.int4_packed_size(self.params) if bits == 4 else self.params


def keras_weighted_layers(model, layer_path):
    """Names of the Keras layers on the path that become weighted builtins."""
    import keras

    from tflm_caps import layers as L

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense,
             L.PrimaryCaps)
    out = []
    for name in layer_path:
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        if isinstance(layer, kinds):
            out.append(name)
    return out


def weight_layers(model, ex, float_model):
    """[WeightLayer] of a conversion: the weighted builtins of the calibrated
    float model (named after the Keras layers when they map one to one) and
    the ClassCaps layers, in execution order."""
    from tflm_caps.converter_patches import int4_weights

    builtins = int4_weights.weighted_builtins(float_model)
    weights = int4_weights.float_weights(float_model)
    names = keras_weighted_layers(model, ex.layer_path)
    if len(names) != len(builtins):
        names = [f"{op.lower()}_{k}" for k, (_, op) in enumerate(builtins)]
    out = []
    for k, ((_, op), w, name) in enumerate(zip(builtins, weights, names)):
        note = "per-tensor scale (TFLM runs int4 FULLY_CONNECTED per tensor only)" \
            if op == "FULLY_CONNECTED" else "per-channel scales"
        out.append(WeightLayer(name, BUILTIN, op, k, int(w.filter.size), True, note))
    for k, info in enumerate(ex.class_caps):
        n_in, n_out, d_out, d_in = info.weights.shape
        ok = (n_out * d_out * d_in) % C.INT4_W_BLOCK_MULTIPLE == 0
        note = "" if ok else (f"int8 only: N_out*D_out*D_in = {n_out * d_out * d_in} is odd "
                              "(int4 kernels need each input capsule's weights on a byte)")
        out.append(WeightLayer(info.layer_name, CLASS_CAPS, C.CLASS_CAPS, k,
                               int(info.weights.size), ok, note))
    return out


def check_spec(weight_bits, max_drop):
    """Validate ``weight_bits`` / ``max_drop`` before any work; returns the spec."""
    if isinstance(weight_bits, str):
        if weight_bits != AUTO:
            raise ConversionError(f"weight_bits must be 8, 4, 'auto' or a dict of layer "
                                  f"widths, got {weight_bits!r}")
        if max_drop is None:
            raise ConversionError("weight_bits='auto' needs max_drop: the accuracy drop "
                                  "(points) the search may spend")
    elif isinstance(weight_bits, dict):
        for name, bits in weight_bits.items():
            if isinstance(bits, bool) or bits not in WIDTHS:
                raise ConversionError(f"weight_bits[{name!r}] must be 8 or 4, got {bits!r}")
    elif isinstance(weight_bits, bool) or weight_bits not in WIDTHS:
        raise ConversionError(f"weight_bits must be 8, 4, 'auto' or a dict of layer widths, "
                              f"got {weight_bits!r}")
    if max_drop is not None:
        if weight_bits != AUTO:
            raise ConversionError("max_drop only applies to weight_bits='auto'")
        if isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real) or \
                not math.isfinite(max_drop) or max_drop < 0:
            raise ConversionError(f"max_drop must be a number of accuracy points >= 0, got "
                                  f"{max_drop!r}")
    return weight_bits


def resolve(weight_bits, layers):
    """{layer name: bits} for a fixed spec (8, 4 or a dict)."""
    if isinstance(weight_bits, dict):
        known = {layer.name: layer for layer in layers}
        unknown = sorted(set(weight_bits) - set(known))
        if unknown:
            raise ConversionError(f"weight_bits names unknown layer(s) {', '.join(unknown)}; "
                                  f"the weighted layers are {', '.join(known) or 'none'}")
        for name, bits in weight_bits.items():
            if bits == 4 and not known[name].int4_ok:
                raise ConversionError(f"layer {name!r} cannot have int4 weights: "
                                      f"{known[name].note}")
        return {layer.name: int(weight_bits.get(layer.name, 8)) for layer in layers}
    return {layer.name: 4 if weight_bits == 4 and layer.int4_ok else 8 for layer in layers}


def validation_split(validation_data, data, input_shape, samples):
    """(x, y) of the search's validation images: ``validation_data`` as given,
    else a stratified subset of the training split of ``data`` (a
    tflm_caps.data.Dataset; never its test split)."""
    if validation_data is not None:
        try:
            x, y = validation_data
        except (TypeError, ValueError):
            raise ConversionError("validation_data must be a pair (images, labels)") from None
        x = np.asarray(x, np.float32)
        y = np.asarray(y).reshape(-1)
    elif hasattr(data, "x_train") and hasattr(data, "y_train") and hasattr(data, "subset"):
        n = min(int(samples), len(data.x_train))
        if n < 1:
            raise ConversionError("the training split is empty: no validation images")
        sub = data.subset(train=n, seed=VALIDATION_SEED) if n < len(data.x_train) else data
        x, y = np.asarray(sub.x_train, np.float32), np.asarray(sub.y_train).reshape(-1)
    else:
        raise ConversionError("weight_bits='auto' needs labelled validation images from the "
                              "training data: pass a tflm_caps.data.Dataset as "
                              "representative_dataset, or validation_data=(images, labels)")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ConversionError(f"validation images must be [N, {', '.join(map(str, input_shape))}]"
                              f", got shape {x.shape}")
    if len(x) != len(y) or len(x) == 0:
        raise ConversionError(f"validation data: {len(x)} images and {len(y)} labels")
    if not np.all(np.isfinite(x)):
        raise ConversionError("validation images contain NaN or infinite values")
    return x, y


def float_scores(ex, x):
    """Class-capsule lengths of the float inference function on images x."""
    import tensorflow as tf

    b = ex.batch_size
    n = len(x)
    pad = (-n) % b
    xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)]) if pad else x
    out = [ex.concrete_function(tf.constant(xp[s:s + b]))["lengths"].numpy()
           for s in range(0, len(xp), b)]
    return np.concatenate(out)[:n]


def _accuracy(model_bytes, x, y):
    from tflm_caps.runtime import TFLMRunner

    runner = TFLMRunner(model_bytes)
    try:
        b = runner.batch_size
        pad = (-len(x)) % b
        xp = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
        pred = np.argmax(runner.predict(xp), axis=-1)[:len(x)]
    finally:
        runner.close()
    return int(np.sum(pred == y))


def search(build, layers, ex, x, y, max_drop, progress=False):
    """Greedy search (module doc); ``build(bits by layer name)`` returns model bytes.

    Returns ({layer name: bits}, report dict).
    """
    from tflm_caps.console import progress as progress_bar

    n = len(y)
    float_correct = int(np.sum(np.argmax(float_scores(ex, x), axis=-1) == y))
    cache = {}
    candidates = [layer for layer in layers if layer.int4_ok]
    total = 1 + len(candidates) + max(len(candidates) - 1, 0)
    bar = progress_bar(total=total, desc="bit-width search", unit="model", enabled=progress,
                       leave=False)

    def evaluate(four):
        key = frozenset(four)
        if key not in cache:
            bits = {layer.name: 4 if layer.name in key else 8 for layer in layers}
            bar.set_postfix_str(",".join(sorted(key)) or "all int8")
            cache[key] = _accuracy(build(bits), x, y)
            bar.update(1)
        return cache[key]

    def drop(correct):  # accuracy points below float
        return 100.0 * (float_correct - correct) / n

    steps = []
    alone, chosen = {}, []
    try:
        base = current = evaluate(())
        steps.append({"int4": [], "correct": base, "accuracy": base / n, "kept": True})
        if drop(base) > max_drop + 1e-9:
            candidates = []  # nothing can stay within max_drop: all int8
        alone = {layer.name: evaluate((layer.name,)) for layer in candidates}
        order = sorted(candidates, key=lambda layer: (-alone[layer.name], -layer.params,
                                                      layer.name))
        for layer in order:
            if drop(alone[layer.name]) > max_drop + 1e-9:
                steps.append({"int4": chosen + [layer.name], "correct": alone[layer.name],
                              "accuracy": alone[layer.name] / n, "kept": False,
                              "reason": "alone already beyond max_drop"})
                continue
            correct = evaluate(chosen + [layer.name])
            kept = drop(correct) <= max_drop + 1e-9
            steps.append({"int4": chosen + [layer.name], "correct": correct,
                          "accuracy": correct / n, "kept": kept})
            if kept:
                chosen, current = chosen + [layer.name], correct
    finally:
        bar.close()
    report = {"max_drop": float(max_drop), "validation_samples": n,
              "float_accuracy": float_correct / n, "int8_accuracy": base / n,
              "accuracy": current / n, "evaluations": len(cache),
              "sensitivity": {name: {"accuracy": c / n, "drop_points": drop(c)}
                              for name, c in alone.items()},
              "steps": steps}
    if drop(base) > max_drop + 1e-9:
        report["note"] = (f"the all-int8 model is already {drop(base):.2f} points below float "
                          f"on the validation split (max_drop {max_drop}): every layer stays "
                          "int8")
    return {layer.name: 4 if layer.name in chosen else 8 for layer in layers}, report


def layer_report(layers, bits):
    """Per-layer rows of the summary: name, op, params, chosen bits, bytes."""
    return [{"layer": layer.name, "op": layer.op, "params": layer.params,
             "bits": int(bits[layer.name]), "bytes": layer.weight_bytes(bits[layer.name]),
             "int8_bytes": layer.weight_bytes(8), "int4_bytes": layer.weight_bytes(4),
             "int4_possible": layer.int4_ok, "note": layer.note} for layer in layers]
