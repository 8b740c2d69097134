"""Per-layer cost of a CapsNet: parameters, MACs of one inference, int8 bytes.

MACs count multiply-accumulates of one image:
- Conv2D / primary-capsule convolution: H_out W_out k_h k_w C_in C_out;
- squash (PrimaryCaps): N D (the squared norms);
- ClassCaps: predictions N_in N_out D_out D_in plus routing
  (2R - 1) N_in N_out D_out (R weighted sums, R - 1 agreement updates);
- Length: N D; Dense: inputs x units; BatchNormalization: one per element.

Estimated int8 bytes are the constant data the int8 .tflite stores for the
layer: one byte per weight, four per bias (int32), nothing for a
BatchNormalization (the converter folds it into the convolution before it).
They leave out the flatbuffer's own overhead (tensor and operator tables,
quantization scales, options, metadata), which is why the measured file is
somewhat larger.
"""
import math


def _shape(tensor):
    return tuple(int(d) if d is not None else None for d in tensor.shape[1:])


def _conv_cost(kernel_shape, out_shape, has_bias):
    kh, kw, cin, cout = kernel_shape
    weights = kh * kw * cin * cout
    macs = out_shape[0] * out_shape[1] * weights
    params = weights + (cout if has_bias else 0)
    return params, macs, weights + (4 * cout if has_bias else 0)


def layer_costs(model):
    """One dict per layer with weights or work: name, kind, output shape,
    params, macs, int8_bytes (and ``capsules`` for capsule layers)."""
    import keras

    from tflm_caps.layers import ClassCaps, Length, PrimaryCaps

    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        kind = type(layer).__name__
        try:
            out_shape = _shape(layer.output)
        except (AttributeError, ValueError):
            continue  # a layer that is not called in this model
        params = int(layer.count_params())
        macs, nbytes, extra = 0, params, {}
        if isinstance(layer, PrimaryCaps):
            conv = layer.conv
            grid = layer.grid_shape((None, *_shape(layer.input)))
            params, macs, nbytes = _conv_cost(tuple(conv.kernel.shape), grid, conv.use_bias)
            n, d = out_shape
            macs += n * d
            extra = {"capsule_types": int(layer.num_capsules), "capsules": n}
        elif isinstance(layer, ClassCaps):
            n_in, n_out, d_out, d_in = (int(d) for d in layer.W.shape)
            macs = n_in * n_out * d_out * d_in + (2 * layer.routings - 1) * n_in * n_out * d_out
            nbytes = params
            extra = {"input_capsules": n_in, "capsules": n_out}
        elif isinstance(layer, Length):
            macs = math.prod(_shape(layer.input))
        elif kind == "Conv2D":
            params, macs, nbytes = _conv_cost(tuple(layer.kernel.shape), out_shape,
                                              layer.use_bias)
        elif kind == "Dense":
            units = int(layer.units)
            fan_in = params - (units if layer.use_bias else 0)
            macs = fan_in
            nbytes = fan_in + (4 * units if layer.use_bias else 0)
        elif kind == "BatchNormalization":
            macs = math.prod(out_shape)
            nbytes = 0
        elif params == 0:
            continue  # reshapes, activations, pooling: no weights, no MACs counted
        rows.append({"name": layer.name, "kind": kind, "output_shape": list(out_shape),
                     "params": params, "macs": int(macs), "int8_bytes": int(nbytes), **extra})
    return rows


def model_cost(model, structure=None):
    """Totals and per-layer rows: {capsule_types, input_capsules, params, macs,
    int8_bytes, layers}."""
    from tflm_caps.pruning.structure import find

    structure = structure or find(model)
    rows = layer_costs(model)
    return {
        "capsule_types": structure.num_types,
        "input_capsules": structure.input_capsules,
        "params": int(model.count_params()),
        "macs": sum(r["macs"] for r in rows),
        "int8_bytes": sum(r["int8_bytes"] for r in rows),
        "layers": rows,
    }
