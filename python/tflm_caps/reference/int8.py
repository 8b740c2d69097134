"""Integer capsule kernels in numpy, bit-exact with the C kernels.

Each function follows docs/quantization.md step by step (vectorized over
capsules); params come from tflm_caps.reference.quant.  The ``_s4``
functions take class-capsule weights packed two per byte (TFLite INT4,
``quant.pack_int4``); their arithmetic is that of the int8 weights they
unpack to.
"""
import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps.reference import fixedpoint as fp
from tflm_caps.reference.quant import (ClassCapsDims, ClassCapsParams, EfficientSquashParams,
                                       LengthParams, PredictionsParams, RoutingParams,
                                       SelfAttentionParams, SquashParams, unpack_int4)


def as_int8(x, what):
    """x as an int8 array; ValueError for non-integer dtypes or values out of range."""
    a = np.asarray(x)
    if a.dtype == np.int8:
        return a
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must be int8, got dtype {a.dtype}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError(f"{what} has values outside int8 [-128, 127]")
    return a.astype(np.int8)


def _check(params, cls, what):
    if not isinstance(params, cls):
        raise ValueError(f"{what} must be {cls.__name__}, got {type(params).__name__}")


def squash_s8(x, params):
    """Squash int8 capsules [..., D] -> int8 [..., D] (scale 1/128, zp 0)."""
    _check(params, SquashParams, "squash params")
    x = as_int8(x, "squash input")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"squash input must be [..., D] with D >= 1, got shape {x.shape}")
    y = x.astype(np.int64) - params.input_zp
    sq = np.sum(y * y, axis=-1, keepdims=True)
    gain = fp.squash_table_gain(sq, params.sq_multiplier, params.sq_exponent)
    return fp.squash_apply(y, gain)


def squash_table(dim, params):
    """The squash gain table for capsules of ``dim`` elements, as int32 words
    (header, then one Q24 gain per index of the squared norm): the words
    caps_squash_s8_init_table writes, which the converter stores in the model."""
    _check(params, SquashParams, "squash params")
    if not 1 <= int(dim) <= C.MAX_CAPS_DIM:
        raise ValueError(f"squash capsule dim must be in [1, {C.MAX_CAPS_DIM}], got {dim}")
    entries = fp.squash_table_entries(int(dim), params.input_zp)
    rep = fp.squash_index_rep(np.arange(entries, dtype=np.int64))
    gains = np.minimum(fp.squash_gain(rep, params.sq_multiplier, params.sq_exponent),
                       fp.INT32_MAX)
    header = [C.SQUASH_TABLE_MAGIC, int(dim), params.input_zp, params.sq_multiplier,
              params.sq_exponent, entries]
    assert len(header) == C.SQUASH_TABLE_HEADER_WORDS
    return np.concatenate([np.array(header, np.int64), gains]).astype(np.int32)


def length_s8(x, params):
    """Lengths of int8 capsules [..., D] -> int8 [...] (scale 1/256, zp -128)."""
    _check(params, LengthParams, "length params")
    x = as_int8(x, "length input")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"length input must be [..., D] with D >= 1, got shape {x.shape}")
    y = x.astype(np.int64) - params.input_zp
    norm = fp.norm_q16(np.sum(y * y, axis=-1))
    return fp.sat8(fp.requantize(norm, params.multiplier, params.shift) - 128)


def predictions_s8(u, W, params):
    """u [N_in, D_in] (or [B, N_in, D_in]) x W [N_in, N_out, D_out, D_in] -> int8 u_hat."""
    _check(params, PredictionsParams, "predictions params")
    u = as_int8(u, "predictions input u")
    W = as_int8(W, "predictions weights W")
    ClassCapsDims.from_shapes(u.shape, W.shape)
    n_out = W.shape[1]
    if len(params.multipliers) not in (1, n_out):
        raise ValueError(f"predictions params hold {len(params.multipliers)} scales for N_out={n_out}")
    acc = np.einsum("ijdk,...ik->...ijd", W.astype(np.int64),
                    u.astype(np.int64) - params.input_zp)
    mult = np.asarray(params.multipliers, dtype=np.int64).reshape(-1, 1)
    shift = np.asarray(params.shifts, dtype=np.int64).reshape(-1, 1)
    return fp.sat8(fp.requantize(acc, mult, shift))


def dynamic_routing_s8(u_hat, params, return_intermediates=False):
    """Integer routing of one sample u_hat [N_in, N_out, D_out] -> v [N_out, D_out].

    Intermediates (lists of int arrays): ``s`` and ``v`` per iteration,
    ``b`` the int8 logits after each update, ``c`` the Q15 couplings of
    iterations >= 1 (iteration 0 is exactly uniform, not materialized).
    """
    _check(params, RoutingParams, "routing params")
    u_hat = as_int8(u_hat, "routing u_hat")
    if u_hat.shape != (params.n_in, params.n_out, params.dim_out):
        raise ValueError(f"routing u_hat must be [{params.n_in}, {params.n_out}, "
                         f"{params.dim_out}] (the params' dims), got {u_hat.shape}")
    uh = u_hat.astype(np.int64)
    p = fp.routing_acc_shift(params.n_in)
    trace = {"s": [], "v": [], "b": [], "c": []}
    b = None
    v = None
    for r in range(params.routings):
        if r == 0:
            acc = uh.sum(axis=0)
            s = fp.sat8(fp.requantize(acc, *params.s[0]))
        else:
            u = r - 1
            a = np.einsum("ijd,jd->ij", uh, v.astype(np.int64))
            if u > 0:
                a = fp.sat32(a + fp.requantize(b, *params.carry[u]))
            b = fp.sat8(fp.requantize(a, *params.agree[u])).astype(np.int64)
            c = fp.softmax_q15(b, fp.exp_table(*params.exp_beta[u]))
            acc = np.einsum("ij,ijd->jd", c, uh)
            s = fp.sat8(fp.requantize(fp.sat32(fp.round_shift_s64(acc, p)), *params.s[r]))
            trace["b"].append(b.astype(np.int8))
            trace["c"].append(c)
        v = squash_s8(s, params.squash[r])
        trace["s"].append(s)
        trace["v"].append(v)
    return (v, trace) if return_intermediates else v


def class_caps_s8(u, W, params, return_intermediates=False):
    """Whole class-capsule layer for u [N_in, D_in] or a batch [B, N_in, D_in]."""
    _check(params, ClassCapsParams, "class-caps params")
    u = as_int8(u, "class-caps input u")
    if u.ndim == 3:
        outs = [class_caps_s8(x, W, params, return_intermediates) for x in u]
        if not return_intermediates:
            return np.stack(outs)
        return np.stack([o[0] for o in outs]), [o[1] for o in outs]
    u_hat = predictions_s8(u, W, params.pred)
    v, trace = dynamic_routing_s8(u_hat, params.routing, return_intermediates=True)
    if not return_intermediates:
        return v
    trace["u_hat"] = u_hat
    return v, trace


def unpack_weights_s4(W_packed, w_shape):
    """int8 W [N_in, N_out, D_out, D_in] (values in [-8, 7]) of packed int4 weights."""
    shape = tuple(int(d) for d in w_shape)
    if len(shape) != 4:
        raise ValueError(f"W must be [N_in, N_out, D_out, D_in], got shape {shape}")
    if (shape[1] * shape[2] * shape[3]) % C.INT4_W_BLOCK_MULTIPLE:
        raise ValueError(f"int4 W {shape}: N_out*D_out*D_in = {shape[1] * shape[2] * shape[3]} "
                         "is odd, so the weights of an input capsule would not start on a "
                         "byte (the kernels need it even)")
    return unpack_int4(W_packed, shape)


def predictions_s4(u, W_packed, w_shape, params):
    """predictions_s8 with W packed as int4 (shape ``w_shape``)."""
    return predictions_s8(u, unpack_weights_s4(W_packed, w_shape), params)


def class_caps_s4(u, W_packed, w_shape, params, return_intermediates=False):
    """class_caps_s8 with W packed as int4 (shape ``w_shape``)."""
    return class_caps_s8(u, unpack_weights_s4(W_packed, w_shape), params, return_intermediates)


def efficient_squash_s8(x, params):
    """Efficient-CapsNet squash of int8 capsules [..., D] -> int8 [..., D] (1/128, zp 0)."""
    _check(params, EfficientSquashParams, "efficient squash params")
    x = as_int8(x, "efficient squash input")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"efficient squash input must be [..., D] with D >= 1, got shape "
                         f"{x.shape}")
    y = x.astype(np.int64) - params.input_zp
    sq = np.sum(y * y, axis=-1, keepdims=True)
    gain = fp.efficient_squash_table_gain(sq, params.exp_multiplier, params.exp_shift)
    return fp.squash_apply(y, gain)


def self_attention_s8(u, W, bias, params, return_intermediates=False):
    """Self-attention capsule layer for u [N_in, D_in] or a batch [B, N_in, D_in].

    W int8 [N_in, N_out, D_out, D_in], bias int32 Q15 [N_in, N_out].
    Intermediates per sample: ``u_hat``, ``sum`` (int16 vote sums), ``a``
    (int32 agreements), ``c`` (Q15 softmax), ``cb`` (int16 couplings with the
    bias), ``s`` (int16 weighted sums).
    """
    _check(params, SelfAttentionParams, "self-attention params")
    u = as_int8(u, "self-attention input u")
    W = as_int8(W, "self-attention weights W")
    if u.ndim == 3:
        outs = [self_attention_s8(x, W, bias, params, return_intermediates) for x in u]
        if not return_intermediates:
            return np.stack(outs)
        return np.stack([o[0] for o in outs]), [o[1] for o in outs]
    dims = ClassCapsDims.from_shapes(u.shape, W.shape)
    if (dims.n_in, dims.n_out, dims.dim_out) != (params.n_in, params.n_out, params.dim_out):
        raise ValueError(f"self-attention params are for [{params.n_in}, {params.n_out}, "
                         f"{params.dim_out}], got u {u.shape} and W {W.shape}")
    beta = np.asarray(bias)
    if beta.shape != (dims.n_in, dims.n_out) or not np.issubdtype(beta.dtype, np.integer):
        raise ValueError(f"self-attention bias must be integer [N_in, N_out], got "
                         f"{beta.dtype} {beta.shape}")
    u_hat = predictions_s8(u, W, params.pred)
    uh = u_hat.astype(np.int64)
    p, q = params.acc_shift, params.coupling_shift
    total = fp.round_shift_s64(uh.sum(axis=0), p)                     # [N_out, D], int16
    a = np.einsum("ijd,jd->ij", uh, total)                            # [N_in, N_out], int32
    w = fp.requantize(a.max(axis=1, keepdims=True) - a, *params.exp_beta)
    c = fp.normalize_q15(fp.exp2_neg_q30(w))                          # Q15, sum_j ~ 2^15
    cb = fp.sat16(fp.round_shift_s64(c + beta.astype(np.int64), q))
    acc = np.einsum("ij,ijd->jd", cb, uh)
    s = fp.sat16(fp.requantize(fp.sat32(fp.round_shift_s64(acc, p)), *params.s))
    v = fp.efficient_squash_wide(s, *params.squash_exp)
    if not return_intermediates:
        return v
    return v, {"u_hat": u_hat, "sum": total, "a": a, "c": c, "cb": cb, "s": s}
