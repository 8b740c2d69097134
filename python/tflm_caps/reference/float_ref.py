"""Float (float64 numpy) reference of the capsule ops.

Same equations as tflm_caps.layers.capsule_math (Sabour et al. 2017), without
TensorFlow, with leading batch axes allowed.  class_caps_float returns the
intermediates whose quantization the integer kernels need.
"""
import numpy as np


def squared_norm(x, axis=-1, keepdims=False):
    x = np.asarray(x, dtype=np.float64)
    return np.sum(x * x, axis=axis, keepdims=keepdims)


def squash(x, axis=-1):
    """x |x| / (1 + |x|^2) (0 for a zero vector)."""
    x = np.asarray(x, dtype=np.float64)
    sq = squared_norm(x, axis=axis, keepdims=True)
    return x * (np.sqrt(sq) / (1.0 + sq))


def length(x, axis=-1):
    """Capsule lengths |x|."""
    return np.sqrt(squared_norm(x, axis=axis))


def predictions(u, W):
    """u_hat[..., i, j, d] = sum_k W[i, j, d, k] u[..., i, k]."""
    return np.einsum("ijdk,...ik->...ijd", np.asarray(W, dtype=np.float64),
                     np.asarray(u, dtype=np.float64))


def softmax(b, axis=-1):
    b = np.asarray(b, dtype=np.float64)
    e = np.exp(b - b.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def dynamic_routing(u_hat, routings, return_intermediates=False):
    """Routing-by-agreement on u_hat [..., N_in, N_out, D_out] -> v [..., N_out, D_out].

    Intermediates (lists): ``c`` (R couplings [..., N_in, N_out]), ``s`` and
    ``v`` (R tensors [..., N_out, D_out]), ``b`` (R-1 logits after each
    update [..., N_in, N_out]; b[u] is what iteration u+1 uses).
    """
    routings = int(routings)
    if routings < 1:
        raise ValueError(f"routings must be >= 1, got {routings}")
    u_hat = np.asarray(u_hat, dtype=np.float64)
    if u_hat.ndim < 3:
        raise ValueError(f"u_hat must be [..., N_in, N_out, D_out], got shape {u_hat.shape}")
    b = np.zeros(u_hat.shape[:-1])
    trace = {"c": [], "s": [], "v": [], "b": []}
    v = None
    for r in range(routings):
        c = softmax(b, axis=-1)
        s = np.einsum("...ij,...ijd->...jd", c, u_hat)
        v = squash(s)
        trace["c"].append(c)
        trace["s"].append(s)
        trace["v"].append(v)
        if r < routings - 1:
            b = b + np.einsum("...ijd,...jd->...ij", u_hat, v)
            trace["b"].append(b)
    return (v, trace) if return_intermediates else v


def class_caps_float(u, W, routings, return_intermediates=True):
    """Class-capsule layer: predictions + routing.

    u [..., N_in, D_in], W [N_in, N_out, D_out, D_in].  Returns v, and with
    return_intermediates a dict: ``u_hat`` [..., N_in, N_out, D_out] and the
    lists ``s``, ``v``, ``b``, ``c`` of dynamic_routing.
    """
    u = np.asarray(u, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 4 or u.ndim < 2 or u.shape[-2:] != (W.shape[0], W.shape[3]):
        raise ValueError(f"class_caps_float: u {u.shape} must end with [N_in, D_in] of "
                         f"W [N_in, N_out, D_out, D_in] {W.shape}")
    u_hat = predictions(u, W)
    v, trace = dynamic_routing(u_hat, routings, return_intermediates=True)
    if not return_intermediates:
        return v
    trace["u_hat"] = u_hat
    return v, trace


# ---------------------------------------------------------------------------
# Efficient-CapsNet (Mazzia et al. 2021)
# ---------------------------------------------------------------------------

def efficient_squash(x, axis=-1):
    """(1 - exp(-|x|)) x / |x| (0 for a zero vector)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.sqrt(squared_norm(x, axis=axis, keepdims=True))
    safe = np.where(n > 0, n, 1.0)
    return x * np.where(n > 0, -np.expm1(-safe) / safe, 1.0)


def self_attention(u_hat, bias, return_intermediates=False):
    """Self-attention routing of u_hat [..., N_in, N_out, D_out] -> v [..., N_out, D_out].

    ``A_ij = u_hat_ij . sum_k u_hat_kj / sqrt(D_out)``, ``c = softmax_j(A) + bias``
    (bias [N_in, N_out]), ``s_j = sum_i c_ij u_hat_ij``, ``v = efficient_squash(s)``.
    Intermediates: ``A``, ``c`` (with the bias) and ``s``.
    """
    u_hat = np.asarray(u_hat, dtype=np.float64)
    if u_hat.ndim < 3:
        raise ValueError(f"u_hat must be [..., N_in, N_out, D_out], got shape {u_hat.shape}")
    total = u_hat.sum(axis=-3, keepdims=True)
    agreement = np.sum(u_hat * total, axis=-1) / np.sqrt(u_hat.shape[-1])
    c = softmax(agreement, axis=-1) + np.asarray(bias, dtype=np.float64)
    s = np.einsum("...ij,...ijd->...jd", c, u_hat)
    v = efficient_squash(s)
    return (v, {"A": agreement, "c": c, "s": s}) if return_intermediates else v


def self_attention_float(u, W, bias, return_intermediates=True):
    """Self-attention capsule layer: predictions + self-attention routing.

    u [..., N_in, D_in], W [N_in, N_out, D_out, D_in], bias [N_in, N_out].
    With return_intermediates: ``u_hat`` plus ``A``, ``c``, ``s``.
    """
    u = np.asarray(u, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    if W.ndim != 4 or u.ndim < 2 or u.shape[-2:] != (W.shape[0], W.shape[3]):
        raise ValueError(f"self_attention_float: u {u.shape} must end with [N_in, D_in] of "
                         f"W [N_in, N_out, D_out, D_in] {W.shape}")
    if bias.shape != W.shape[:2]:
        raise ValueError(f"self_attention_float: bias must be [N_in, N_out] = "
                         f"{tuple(W.shape[:2])}, got {bias.shape}")
    u_hat = predictions(u, W)
    v, trace = self_attention(u_hat, bias, return_intermediates=True)
    if not return_intermediates:
        return v
    trace["u_hat"] = u_hat
    return v, trace
