"""Fold inference-mode BatchNormalization into the convolution that reads it.

Efficient-CapsNet puts BatchNorm after the ReLU of each convolution, so it
cannot merge into the convolution before it; it is an affine map per
channel, ``y = a x + c`` (``a = gamma / sqrt(var + eps)``, ``c = beta -
mean a``), which merges exactly into the *next* convolution when that one
has 'valid' padding (no zero padding sees the un-normalized border):
``conv_K(a x + c) = conv_{K a}(x) + sum K c``.  The exported graph then
keeps plain CONV_2D / DEPTHWISE_CONV_2D builtins with new weights and
biases, and no MUL/ADD for the normalization.  A BatchNorm that cannot be
folded (other consumer, 'same' padding, no bias, shared layer) stays a
Keras builtin, which the TF converter turns into int8 MUL + ADD.
"""
import numpy as np


def _conv_of(op, L):
    """The Conv2D / DepthwiseConv2D doing the convolution of layer ``op``, or None."""
    import keras

    if isinstance(op, (L.PrimaryCaps, L.DepthwisePrimaryCaps)):
        op = op.conv
    if isinstance(op, keras.layers.DepthwiseConv2D):
        return op
    if isinstance(op, keras.layers.Conv2D) and type(op).__name__ == "Conv2D" and op.groups == 1:
        return op
    return None


def _affine(bn):
    """(a, c) of an inference-mode BatchNormalization, float64 per channel."""
    mean = np.asarray(bn.moving_mean.numpy(), np.float64)
    var = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else np.zeros_like(mean)
    a = gamma / np.sqrt(var + float(bn.epsilon))
    return a, beta - mean * a


def _foldable(bn, node, consumers, count_calls, L):
    import keras

    if not isinstance(bn, keras.layers.BatchNormalization):
        return None
    shape = node.outputs[0].shape
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    if len(shape) != 4 or axis not in (-1, 3) or len(consumers) != 1:
        return None
    op = consumers[0]
    conv = _conv_of(op, L)
    if (conv is None or count_calls.get(id(op), 0) != 1 or conv.padding != "valid"
            or not conv.use_bias or conv.data_format != "channels_last"):
        return None
    return conv


def fold_plan(order, L):
    """Which BatchNorm layers on the export path fold into their consumer.

    ``order``: [(node, layer)] in execution order.  Returns (ids of folded
    BatchNorm layers, {id(variable): folded value} for the convolutions'
    kernels and biases, names of the folded layers).
    """
    readers = {}
    count_calls = {}
    for node, op in order:
        count_calls[id(op)] = count_calls.get(id(op), 0) + 1
        for kt in node.arguments.keras_tensors:
            readers.setdefault(id(kt), []).append(op)
    folded, overrides, names = set(), {}, []
    for node, bn in order:
        if count_calls[id(bn)] != 1:
            continue
        conv = _foldable(bn, node, readers.get(id(node.outputs[0]), []), count_calls, L)
        if conv is None or id(conv.kernel) in overrides:
            continue
        a, c = _affine(bn)
        kernel = overrides.get(id(conv.kernel), np.asarray(conv.kernel.numpy(), np.float64))
        bias = np.asarray(conv.bias.numpy(), np.float64)
        if kernel.shape[2] != a.size:
            continue
        import keras
        if isinstance(conv, keras.layers.DepthwiseConv2D):
            # kernel [kh, kw, C, m]: output channel C*m + k reads input channel C
            bias = bias + (kernel.sum(axis=(0, 1)) * c[:, None]).reshape(-1)
            kernel = kernel * a[None, None, :, None]
        else:
            # kernel [kh, kw, C_in, C_out]
            bias = bias + np.einsum("hwio,i->o", kernel, c)
            kernel = kernel * a[None, None, :, None]
        overrides[id(conv.kernel)] = kernel.astype(np.float32)
        overrides[id(conv.bias)] = bias.astype(np.float32)
        folded.add(id(bn))
        names.append(bn.name)
    return folded, overrides, names
