"""Build the inference-only tf.function that the TF converter turns into a .tflite.

The Keras graph is walked backwards from the class-capsule lengths, so the
training-only parts (label input, mask, decoder) are never traced.  Keras
built-in layers are called as they are (inside a ``keras.StatelessScope``
that feeds every variable as a constant, so the converter sees frozen
weights), capsule layers are re-expressed with the fusable composites of
``composites.py``: PrimaryCaps = its Conv2D + RESHAPE + Squash, ClassCaps =
one op with W as a constant input, Length = one op; Efficient-CapsNet's
DepthwisePrimaryCaps = its DepthwiseConv2D + RESHAPE + EfficientSquash,
SelfAttentionCaps = one op with W and the bias as constant inputs.
BatchNormalization followed by a 'valid' convolution is folded into that
convolution's weights (``batchnorm.py``).
"""
import dataclasses

import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps.converter.errors import ConversionError


@dataclasses.dataclass
class ClassCapsInfo:
    """A ClassCaps layer as exported (needed by calibration and the int8 patch)."""

    layer_name: str
    num_routing: int
    weights: np.ndarray  # float32 [N_in, N_out, D_out, D_in]


@dataclasses.dataclass
class SelfAttentionInfo:
    """A SelfAttentionCaps layer as exported."""

    layer_name: str
    weights: np.ndarray  # float32 [N_in, N_out, D_out, D_in]
    bias: np.ndarray     # float32 [N_in, N_out]


@dataclasses.dataclass
class InferenceExport:
    """The traced inference function and what the converter needs to know about it."""

    concrete_function: object
    input_shape: tuple  # (H, W, C)
    batch_size: int
    num_classes: int
    class_caps: list
    layer_path: list  # names of the layers on the image -> lengths path, in order
    model_name: str
    custom_ops: list  # (custom op name, Keras layer name) in call order
    self_attention: list = dataclasses.field(default_factory=list)
    folded_batch_norms: list = dataclasses.field(default_factory=list)


def _capsule_classes():
    from tflm_caps import layers as L
    return L


def _is_keras_builtin(op):
    module = type(op).__module__
    return module.startswith("keras.src.layers.") or module.startswith("keras.src.ops.")


def _find_length_output(model, L):
    candidates = []
    for kt in model.outputs:
        op = kt._keras_history.operation
        if isinstance(op, L.Length):
            candidates.append(kt)
    if len(candidates) != 1:
        ops = [kt._keras_history.operation for kt in model.outputs]
        names = [f"{op.name} ({type(op).__name__})" for op in ops]
        raise ConversionError(
            f"model {model.name!r}: expected exactly one output produced by a tflm_caps Length "
            f"layer (the class-capsule lengths), found {len(candidates)} among outputs {names}")
    return candidates[0]


def _functional(model):
    import keras
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ConversionError(f"model {model.name!r}: a Sequential model must be built "
                                  "(call it once or give it an Input) before conversion")
        return functional
    if not hasattr(model, "outputs") or not getattr(model, "_nodes_by_depth", None):
        raise ConversionError(f"model {getattr(model, 'name', model)!r}: only functional or "
                              "Sequential Keras models can be converted (a subclassed model has "
                              "no layer graph to walk)")
    return model


def _check_layers(order, L):
    """ConversionError for a layer on the image -> lengths path that cannot be
    exported; returns (ClassCapsInfo list, SelfAttentionInfo list,
    [(custom op, layer name)]) in call order."""
    import keras

    supported = (L.PrimaryCaps, L.Squash, L.ClassCaps, L.Length, L.EfficientSquash,
                 L.DepthwisePrimaryCaps, L.SelfAttentionCaps)
    training_only = (L.Mask, L.Decoder)
    class_caps, self_attention, custom_ops = [], [], []
    op_of = {L.PrimaryCaps: C.SQUASH, L.Squash: C.SQUASH, L.ClassCaps: C.CLASS_CAPS,
             L.Length: C.LENGTH, L.EfficientSquash: C.EFFICIENT_SQUASH,
             L.DepthwisePrimaryCaps: C.EFFICIENT_SQUASH,
             L.SelfAttentionCaps: C.SELF_ATTENTION_CAPS}
    for _, op in order:
        if isinstance(op, training_only):
            raise ConversionError(
                f"layer {op.name!r} ({type(op).__name__}) is on the path to the lengths; it is "
                "training-only (reconstruction) and cannot be part of the inference export")
        if isinstance(op, supported):
            custom_ops.append((next(v for k, v in op_of.items() if isinstance(op, k)), op.name))
            if isinstance(op, (L.Squash, L.EfficientSquash)) and op.axis not in (-1, 2):
                raise ConversionError(f"layer {op.name!r} ({type(op).__name__}): only axis=-1 "
                                      f"(capsule dimension) is supported, got axis={op.axis}")
            if isinstance(op, L.SelfAttentionCaps):
                if op.capsule_dim > C.MAX_ATTENTION_DIM_OUT:
                    raise ConversionError(
                        f"layer {op.name!r} (SelfAttentionCaps): capsule_dim={op.capsule_dim}, "
                        f"the int8 kernel takes at most {C.MAX_ATTENTION_DIM_OUT}")
                self_attention.append(SelfAttentionInfo(
                    op.name, np.asarray(op.W.numpy(), np.float32),
                    np.asarray(op.b.numpy(), np.float32)))
            if isinstance(op, L.ClassCaps):
                if not C.MIN_ROUTINGS <= op.routings <= C.MAX_ROUTINGS:
                    raise ConversionError(
                        f"layer {op.name!r} (ClassCaps): routings={op.routings}, the int8 "
                        f"kernels run {C.MIN_ROUTINGS} to {C.MAX_ROUTINGS} routing iterations")
                class_caps.append(ClassCapsInfo(op.name, int(op.routings),
                                                np.asarray(op.W.numpy(), np.float32)))
            continue
        if isinstance(op, keras.Model):
            raise ConversionError(f"layer {op.name!r}: nested models are not supported; "
                                  "build the CapsNet as one functional model")
        if not _is_keras_builtin(op):
            raise ConversionError(
                f"layer {op.name!r} ({type(op).__module__}.{type(op).__name__}) cannot be "
                "converted: only Keras built-in layers and the tflm_caps capsule layers "
                "(PrimaryCaps, Squash, ClassCaps, Length, DepthwisePrimaryCaps, "
                "EfficientSquash, SelfAttentionCaps) are supported")
    return class_caps, self_attention, custom_ops


def build_inference_export(model, batch_size=1, store_predictions=True):
    """Trace ``model``'s image -> lengths path as a concrete tf.function."""
    import keras
    import tensorflow as tf

    from tflm_caps.converter import batchnorm, composites

    L = _capsule_classes()
    if not isinstance(model, keras.Model):
        raise ConversionError(f"expected a keras.Model, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConversionError(f"batch_size must be a positive integer, got {batch_size!r}")
    functional = _functional(model)
    target = _find_length_output(functional, L)

    # Find the image input the lengths depend on and check every layer first,
    # so that an unsupported layer is reported before anything is traced.
    order, inputs, seen = [], [], set()

    def visit(kt):
        if id(kt) in seen:
            return
        seen.add(id(kt))
        op, node_index, _ = kt._keras_history
        if op is None or isinstance(op, keras.layers.InputLayer):
            inputs.append(kt)
            return
        node = op._inbound_nodes[node_index]
        for arg in node.arguments.keras_tensors:
            visit(arg)
        if node not in [n for n, _ in order]:
            order.append((node, op))

    visit(target)
    if len({id(t) for t in inputs}) != 1:
        raise ConversionError(
            f"model {model.name!r}: the class-capsule lengths must depend on exactly one "
            f"input (the image), they depend on {len(inputs)}")
    image = inputs[0]
    shape = tuple(image.shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ConversionError(f"model {model.name!r}: input {image.name!r} must be an NHWC image "
                              f"with known height, width and channels, got {tuple(image.shape)}")

    class_caps, self_attention, custom_ops = _check_layers(order, L)
    if not class_caps and not self_attention:
        raise ConversionError(f"model {model.name!r}: no ClassCaps or SelfAttentionCaps layer "
                              "on the path to the lengths; nothing to convert into capsule ops")

    # Constants for every variable: frozen weights for the converter (the
    # convolutions that absorb a BatchNorm get their folded weights).
    folded, overrides, folded_names = batchnorm.fold_plan(order, L)
    values = [(v, overrides.get(id(v), np.asarray(v.numpy()))) for v in functional.variables]
    squash = composites.squash_fn()
    efficient_squash = composites.efficient_squash_fn()
    self_attention_op = composites.self_attention_fn()
    length = composites.length_fn()
    routing_fns = {}

    def run_node(op, args, kwargs, W_consts):
        if id(op) in folded:
            return args[0]  # the BatchNorm lives in the next convolution's weights
        if isinstance(op, (L.PrimaryCaps, L.DepthwisePrimaryCaps)):
            x = op.conv(args[0])
            h, w, c = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
            x = tf.reshape(x, [batch_size, h * w * c // op.capsule_dim, op.capsule_dim])
            return squash(x) if isinstance(op, L.PrimaryCaps) else efficient_squash(x)
        if isinstance(op, L.Squash):
            return squash(args[0])
        if isinstance(op, L.EfficientSquash):
            return efficient_squash(args[0])
        if isinstance(op, L.SelfAttentionCaps):
            w, b = W_consts[op.name]
            return self_attention_op(args[0], w, b)
        if isinstance(op, L.ClassCaps):
            key = (op.routings, bool(store_predictions))
            if key not in routing_fns:
                routing_fns[key] = composites.class_caps_fn(op.routings, store_predictions)
            return routing_fns[key](args[0], W_consts[op.name])
        if isinstance(op, L.Length):
            return length(args[0])
        kwargs = dict(kwargs)
        if "training" in kwargs:
            kwargs["training"] = False
        return op(*args, **kwargs)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([batch_size, *shape], tf.float32, name="image")])
    def infer(x):
        mapping = [(v, tf.constant(a, dtype=a.dtype)) for v, a in values]
        W_consts = {c.layer_name: tf.constant(c.weights) for c in class_caps}
        W_consts.update({a.layer_name: (tf.constant(a.weights), tf.constant(a.bias))
                         for a in self_attention})
        cache = {id(image): x}
        with keras.StatelessScope(state_mapping=mapping):
            for node, op in order:
                args, kwargs = node.arguments.fill_in(cache)
                out = run_node(op, args, kwargs, W_consts)
                flat = tf.nest.flatten(out)
                for kt, value in zip(node.outputs, flat):
                    cache[id(kt)] = value
        return {"lengths": tf.identity(cache[id(target)], name="lengths")}

    try:
        concrete = infer.get_concrete_function()
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"model {model.name!r}: tracing the inference function failed: "
                              f"{exc}") from exc
    num_classes = int(target.shape[-1])
    return InferenceExport(concrete, shape, batch_size, num_classes, class_caps,
                           [op.name for _, op in order], model.name, custom_ops,
                           self_attention, folded_names)
