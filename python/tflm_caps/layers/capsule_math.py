"""Capsule math as small pure TensorFlow functions.

The Keras layers and losses in this package are thin wrappers around these
functions, so the converter (which wraps them in fusable composite
functions) and the tests use exactly the same equations as training.  (The
module is not called ``ops`` so that it does not read as ``keras.ops``.)

Shapes: capsule tensors are ``[batch, capsules, dim]``; routing tensors use
``i`` for input capsules, ``j`` for output capsules.
"""
import tensorflow as tf


def squared_norm(x, axis=-1, keepdims=False):
    """Sum of squares along ``axis``."""
    return tf.reduce_sum(tf.square(x), axis=axis, keepdims=keepdims)


def safe_norm(x, axis=-1, keepdims=False):
    """Euclidean norm that is exactly 0 (value and gradient) at a zero vector.

    ``tf.sqrt`` has an infinite derivative at 0, which turns into NaN
    (0 * inf) in back-propagation.  The double ``tf.where`` keeps the sqrt's
    argument away from 0 in both branches, so no epsilon is added anywhere:
    for every non-zero vector the result is the exact float32 norm.
    """
    sq = squared_norm(x, axis=axis, keepdims=keepdims)
    nonzero = sq > 0.0
    safe_sq = tf.where(nonzero, sq, tf.ones_like(sq))
    return tf.where(nonzero, tf.sqrt(safe_sq), tf.zeros_like(sq))


def squash(s, axis=-1):
    """squash(s) = |s|^2 / (1 + |s|^2) * s / |s|, computed as s*|s|/(1+|s|^2).

    The rewritten form never divides by |s|, so a zero vector maps to an
    exact zero vector with a zero gradient (the true derivative at 0).
    """
    s = tf.convert_to_tensor(s)
    sq = squared_norm(s, axis=axis, keepdims=True)
    norm = safe_norm(s, axis=axis, keepdims=True)
    return s * (norm / (1.0 + sq))


def length(v, axis=-1):
    """Capsule lengths |v| along ``axis`` (exactly 0 for a zero capsule)."""
    return safe_norm(tf.convert_to_tensor(v), axis=axis, keepdims=False)


def predictions(u, W):
    """Prediction vectors u_hat[b, i, j, :] = W[i, j] @ u[b, i].

    u: ``[B, N_in, D_in]``; W: ``[N_in, N_out, D_out, D_in]``;
    returns ``[B, N_in, N_out, D_out]``.
    """
    return tf.einsum("ijdk,bik->bijd", W, u)


def dynamic_routing(u_hat, routings=3, return_intermediates=False, stop_gradient=False):
    """Routing-by-agreement (Sabour et al. 2017) on prediction vectors.

    u_hat: ``[B, N_in, N_out, D_out]``.  Logits b start at 0; each iteration
    computes c = softmax_j(b), s_j = sum_i c_ij u_hat_ij, v_j = squash(s_j)
    and, except after the last iteration, b_ij += u_hat_ij . v_j.

    stop_gradient: when True, the coupling coefficients are computed from
    ``stop_gradient(u_hat)`` so gradients reach W only through the final
    weighted sum (the couplings act as constants in back-propagation).
    Forward values are identical either way.

    Returns v ``[B, N_out, D_out]``; with ``return_intermediates`` also a
    dict of per-iteration lists ``b`` (logits used by the iteration,
    ``[B, N_in, N_out]``), ``c`` (couplings), ``s`` and ``v``
    (``[B, N_out, D_out]``).
    """
    routings = int(routings)
    if routings < 1:
        raise ValueError(f"dynamic_routing: routings must be >= 1, got {routings}")
    u_hat = tf.convert_to_tensor(u_hat)
    u_route = tf.stop_gradient(u_hat) if stop_gradient else u_hat
    b = tf.zeros_like(u_hat[..., 0])  # [B, N_in, N_out], works for unknown batch
    trace = {"b": [], "c": [], "s": [], "v": []}
    v = None
    for r in range(routings):
        c = tf.nn.softmax(b, axis=-1)
        last = r == routings - 1
        # Only the last iteration's output carries gradient to u_hat when
        # stop_gradient is set; earlier ones just shape the couplings.
        src = u_hat if last else u_route
        s = tf.einsum("bij,bijd->bjd", c, src)
        v = squash(s)
        if return_intermediates:
            trace["b"].append(b)
            trace["c"].append(c)
            trace["s"].append(s)
            trace["v"].append(v)
        if not last:
            b = b + tf.einsum("bijd,bjd->bij", u_route, v)
    if return_intermediates:
        return v, trace
    return v


def one_hot_mask(capsules, labels=None):
    """Mask ``[B, N, D]`` capsules down to one per sample, flattened to ``[B, N*D]``.

    labels: one-hot ``[B, N]`` or integer class ids ``[B]`` / ``[B, 1]``;
    None selects the longest capsule.
    """
    capsules = tf.convert_to_tensor(capsules)
    num = capsules.shape[-2]
    if labels is None:
        index = tf.argmax(length(capsules), axis=-1)
        mask = tf.one_hot(index, depth=num, dtype=capsules.dtype)
    else:
        labels = tf.convert_to_tensor(labels)
        if is_integer_labels(labels, num):
            index = tf.cast(tf.reshape(labels, [-1]), tf.int32)
            mask = tf.one_hot(index, depth=num, dtype=capsules.dtype)
        else:
            mask = tf.cast(labels, capsules.dtype)
    masked = capsules * mask[..., None]
    dim = capsules.shape[-1]
    if num is None or dim is None:
        raise ValueError("Mask: capsule count and dimension must be known, "
                         f"got capsules of shape {capsules.shape}")
    return tf.reshape(masked, [-1, num * dim])


def is_integer_labels(labels, num_classes):
    """True when ``labels`` holds class ids rather than one-hot rows.

    Decided from the static shape: rank 1, or a last axis of size 1 while
    there is more than one class; an integer dtype is always class ids.
    """
    if labels.dtype.is_integer:
        return True
    rank = labels.shape.rank
    if rank == 1:
        return True
    last = labels.shape[-1] if rank else None
    return bool(rank == 2 and last == 1 and num_classes not in (None, 1))


# ---------------------------------------------------------------------------
# Efficient-CapsNet (Mazzia et al. 2021): exponential squash, self-attention
# routing
# ---------------------------------------------------------------------------

def efficient_squash(s, axis=-1):
    """Efficient-CapsNet squash: (1 - exp(-|s|)) * s / |s| (0 for a zero vector).

    Computed as ``s * g(|s|)`` with ``g(n) = -expm1(-n) / n`` (g(0) = 1): it
    never divides by a zero norm, so a zero vector maps to an exact zero
    with the true derivative (the identity) at 0, never NaN, and no epsilon
    is added anywhere.
    """
    s = tf.convert_to_tensor(s)
    sq = squared_norm(s, axis=axis, keepdims=True)
    nonzero = sq > 0.0
    norm = tf.sqrt(tf.where(nonzero, sq, tf.ones_like(sq)))
    gain = tf.where(nonzero, -tf.math.expm1(-norm) / norm, tf.ones_like(sq))
    return s * gain


def self_attention_routing(u_hat, bias, return_intermediates=False):
    """Self-attention routing (Efficient-CapsNet) of predictions u_hat.

    u_hat: ``[B, N_in, N_out, D_out]`` (the votes ``W[i, j] @ u_i``); bias:
    ``[N_in, N_out]``.  One pass, no iteration:

    - agreement ``A[b, i, j] = u_hat[b, i, j] . sum_k u_hat[b, k, j] / sqrt(D_out)``
      (every vote against the sum of the votes for the same output capsule);
    - couplings ``c = softmax_j(A)`` (over the output capsules) ``+ bias``;
    - ``s_j = sum_i c_ij u_hat_ij``, ``v_j = efficient_squash(s_j)``.

    Returns v ``[B, N_out, D_out]``; with ``return_intermediates`` also a
    dict with ``A``, ``c`` (after the bias) and ``s``.
    """
    u_hat = tf.convert_to_tensor(u_hat)
    dim = u_hat.shape[-1]
    if dim is None:
        raise ValueError(f"self_attention_routing: the capsule dimension must be known, "
                         f"got u_hat of shape {u_hat.shape}")
    total = tf.reduce_sum(u_hat, axis=1, keepdims=True)
    agreement = tf.reduce_sum(u_hat * total, axis=-1) / tf.sqrt(tf.cast(dim, u_hat.dtype))
    c = tf.nn.softmax(agreement, axis=-1) + tf.cast(bias, u_hat.dtype)
    s = tf.einsum("bij,bijd->bjd", c, u_hat)
    v = efficient_squash(s)
    if return_intermediates:
        return v, {"A": agreement, "c": c, "s": s}
    return v
