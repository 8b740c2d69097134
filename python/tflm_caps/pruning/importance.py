"""Importance scores: which capsule types and channels to keep.

Capsule types (measured on training images, never the test split):

- ``routing`` (default): the coupling-weighted mass of the type's
  predictions, sum over its capsules i and the class capsules j of
  c_ij |u_hat_j|i| with the couplings c of the last routing iteration,
  averaged over the images.  s_j = sum_i c_ij u_hat_j|i is all the class
  capsules ever see of the input capsules, so this is how much of s a type
  actually supplies after routing has decided where its votes go: a type
  whose predictions are small, or whose couplings routing spreads over
  classes that do not need it, scores low.
- ``length``: the mean squared length of the type's primary capsules
  (its activation energy before routing).  Cheaper, blind to W and to
  routing.

Convolution channels (weights only, no data needed):

- ``l1`` (default): L1 norm of the channel's filter;
- ``l2``: L2 norm of the filter;
- ``bn``: |gamma| of the BatchNormalization after the convolution.
"""
import sys

import numpy as np

from tflm_caps.pruning.structure import PruningError

TYPE_CRITERIA = ("routing", "length")
CHANNEL_CRITERIA = ("l1", "l2", "bn")


def _primary_outputs(model, structure, images, batch_size, progress):
    """Yields the primary capsules ``u`` [B, N_in, D_in] batch by batch."""
    import keras
    from tqdm.auto import tqdm

    probe = keras.Model(model.inputs[0], model.get_layer(structure.primary).output)
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="scoring capsule types", unit="batch", leave=False,
                      disable=not progress, file=sys.stderr, dynamic_ncols=True):
        yield probe(images[start:start + batch_size], training=False)


def type_scores(model, structure, images, criterion="routing", batch_size=64, progress=False):
    """One score per primary capsule type (higher = more important), float64 [K]."""
    import tensorflow as tf

    from tflm_caps.layers import capsule_math as ops

    if criterion not in TYPE_CRITERIA:
        raise PruningError(f"capsule type criterion must be one of {', '.join(TYPE_CRITERIA)}, "
                           f"got {criterion!r}")
    images = np.asarray(images, np.float32)
    if len(images) == 0:
        raise PruningError("scoring needs at least one training image")
    cc = model.get_layer(structure.class_caps)
    positions = structure.grid[0] * structure.grid[1]
    total = np.zeros(structure.num_types, np.float64)
    for u in _primary_outputs(model, structure, images, batch_size, progress):
        if criterion == "length":
            per_capsule = tf.reduce_sum(tf.square(u), axis=-1)                 # [B, N_in]
        else:
            u_hat = ops.predictions(u, tf.cast(cc.W, u.dtype))                 # [B, N_in, N_out, D]
            _, trace = ops.dynamic_routing(u_hat, cc.routings, return_intermediates=True)
            per_capsule = tf.reduce_sum(trace["c"][-1] * ops.length(u_hat), axis=-1)
        per_type = tf.reshape(per_capsule, [-1, positions, structure.num_types])
        total += tf.reduce_sum(per_type, axis=[0, 1]).numpy().astype(np.float64)
    return total / len(images)


def channel_scores(model, structure, conv_name, criterion="l1"):
    """One score per output channel of convolution ``conv_name``, float64 [C]."""
    if criterion not in CHANNEL_CRITERIA:
        raise PruningError(f"channel criterion must be one of {', '.join(CHANNEL_CRITERIA)}, "
                           f"got {criterion!r}")
    group = structure.conv(conv_name)
    if criterion == "bn":
        for bn_name in group.batch_norms:
            bn = model.get_layer(bn_name)
            if getattr(bn, "scale", False):
                return np.abs(np.asarray(bn.gamma.numpy(), np.float64))
        raise PruningError(f"channel criterion 'bn': convolution {conv_name!r} has no "
                           "BatchNormalization with a scale after it; use 'l1' or 'l2'")
    kernel = np.asarray(model.get_layer(conv_name).kernel.numpy(), np.float64)
    flat = kernel.reshape(-1, kernel.shape[-1])
    if criterion == "l1":
        return np.sum(np.abs(flat), axis=0)
    return np.sqrt(np.sum(flat * flat, axis=0))


def top(scores, count):
    """Indices of the ``count`` highest scores, ascending (ties: lower index wins)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return sorted(int(i) for i in order[:count])
