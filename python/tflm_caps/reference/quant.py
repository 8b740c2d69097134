"""Quantization helpers and the integer parameters of every capsule op.

This module is the single source of the kernels' integer parameters for the
converter; ``caps_*_params_init`` in ``tflm_caps_ops/src/common`` computes
the same integers (same float32 -> double conversions, same double
operations in the same order, frexp from the bit pattern).  See
docs/quantization.md.
"""
import math
import struct
from dataclasses import dataclass, field
from typing import NamedTuple, Tuple

import numpy as np

from tflm_caps.ops_contract import (ATTENTION_BIAS_SCALE, CLASS_CAPS_WEIGHT_BITS, MAX_ATTENTION_BIAS,
                                    MAX_ATTENTION_DIM_OUT, MAX_CAPS_DIM, MAX_DIM_IN, MAX_N_IN,
                                    MAX_N_OUT, MAX_ROUTINGS)
from tflm_caps.reference import fixedpoint as fp

_MAX_BUFFER = (1 << 31) - 1 - 65536
LOG2E = float.fromhex("0x1.71547652b82fep+0")


# ----------------------------------------------------------------------------
# Scalars
# ----------------------------------------------------------------------------

def as_float32_scale(value, what="scale"):
    """The float32 scale TFLite would store, as a Python float (double).

    Raises ValueError naming ``what`` for missing, non-finite, zero or
    negative scales, or ones that do not survive float32.
    """
    if value is None:
        raise ValueError(f"{what} is missing")
    try:
        as_double = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(as_double) or as_double <= 0.0:
        raise ValueError(f"{what} must be finite and > 0, got {as_double!r}")
    with np.errstate(over="ignore", under="ignore"):
        f32 = float(np.float32(as_double))
    if not math.isfinite(f32) or f32 <= 0.0:
        raise ValueError(f"{what} = {as_double!r} is not representable as a float32 scale")
    return f32


def check_zero_point(zp, what="zero point"):
    """An int8 zero point as int, or ValueError."""
    if isinstance(zp, (bool, np.bool_)) or not isinstance(zp, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {zp!r}")
    zp = int(zp)
    if not -128 <= zp <= 127:
        raise ValueError(f"{what} must be in [-128, 127], got {zp}")
    return zp


def frexp_q31(real):
    """(multiplier, exponent) with real = multiplier * 2^(exponent - 31), unclamped.

    multiplier in [2^30, 2^31) rounded half up from the 53-bit mantissa;
    0 or subnormal -> (0, 0).  ValueError for negative, inf or NaN.
    """
    bits = struct.unpack("<Q", struct.pack("<d", float(real)))[0]
    exp_field = (bits >> 52) & 0x7FF
    if exp_field == 0x7FF or ((bits >> 63) and (bits << 1) & ((1 << 64) - 1)):
        raise ValueError(f"cannot quantize multiplier {real!r}: must be finite and >= 0")
    if exp_field == 0:
        return 0, 0
    full = (bits & ((1 << 52) - 1)) | (1 << 52)
    q31 = (full + (1 << 21)) >> 22
    e = exp_field - 1022
    if q31 == 1 << 31:
        q31 >>= 1
        e += 1
    return int(q31), int(e)


def quantize_multiplier(real):
    """TFLite QuantizeMultiplier: (multiplier, shift), real = m * 2^(shift-31).

    Below 2^-32 -> (0, 0); at or above 2^30 -> (2^31 - 1, 30).
    """
    m, e = frexp_q31(real)
    if m == 0 or e < -31:
        return 0, 0
    if e > 30:
        return (1 << 31) - 1, 30
    return m, e


def quantize_multiplier_array(reals):
    """Vector of quantize_multiplier -> (int32 multipliers, int32 shifts)."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    mult = np.array([p[0] for p in pairs], dtype=np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int32)
    return mult, shift


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """Vectorized TFLite MultiplyByQuantizedMultiplier (int64 result)."""
    return fp.requantize(x, multiplier, shift)


# ----------------------------------------------------------------------------
# Choosing scales
# ----------------------------------------------------------------------------

def symmetric_scale(max_abs, qmax=127):
    """Symmetric scale max_abs / qmax (float32 value), zero point 0.

    qmax: 127 for int8 (the default), 7 for int4 weights.  A zero range
    gets the scale 2^-20 / qmax (any positive scale represents an all-zero
    tensor exactly).
    """
    max_abs = float(max_abs)
    if not math.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"range must be finite and >= 0, got max_abs={max_abs!r}")
    return as_float32_scale(max(max_abs, 2.0 ** -20) / float(qmax), "symmetric scale")


def symmetric_scale16(max_abs):
    """Symmetric int16 scale max_abs / 32767 (float32 value), zero point 0 (a
    zero range gets 2^-20 / 32767)."""
    max_abs = float(max_abs)
    if not math.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"range must be finite and >= 0, got max_abs={max_abs!r}")
    return as_float32_scale(max(max_abs, 2.0 ** -20) / 32767.0, "symmetric int16 scale")


def asymmetric_params(min_value, max_value):
    """TFLite-style asymmetric int8 (scale, zero_point) covering [min, max] and 0."""
    lo = min(float(min_value), 0.0)
    hi = max(float(max_value), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"range must be finite, got [{min_value!r}, {max_value!r}]")
    if hi - lo <= 0:
        return as_float32_scale(2.0 ** -20 / 255.0), 0
    scale = as_float32_scale((hi - lo) / 255.0, "asymmetric scale")
    zp = int(round(-128 - lo / scale))
    return scale, int(min(127, max(-128, zp)))


def quantize(x, scale, zero_point=0):
    """Float -> int8: round half away from zero of x / scale, plus zp, saturated."""
    q = np.asarray(x, dtype=np.float64) / np.asarray(scale, dtype=np.float64)
    q = np.sign(q) * np.floor(np.abs(q) + 0.5)
    return np.clip(q + int(zero_point), -128, 127).astype(np.int8)


def dequantize(q, scale, zero_point=0):
    """int8 -> float64."""
    return (np.asarray(q, dtype=np.float64) - int(zero_point)) * np.asarray(scale, dtype=np.float64)


# Weight widths: symmetric weights use [-qmax, qmax] (never the most negative
# code), as TFLite does: int8 [-127, 127], int4 [-7, 7].
WEIGHT_BITS = CLASS_CAPS_WEIGHT_BITS


def weight_qmax(bits):
    """Largest weight code of a symmetric ``bits``-wide weight (127 or 7)."""
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be one of {', '.join(map(str, WEIGHT_BITS))}, "
                         f"got {bits!r}")
    return (1 << (int(bits) - 1)) - 1


def weight_scales(W, per_capsule=True, bits=8):
    """Symmetric scales of class-capsule weights W [N_in, N_out, D_out, D_in].

    per_capsule: one scale per output capsule (axis 1, TFLite
    quantized_dimension 1), else one per tensor.  bits: 8 (max|W| / 127)
    or 4 (max|W| / 7).  float32 values in a float64 array.
    """
    qmax = weight_qmax(bits)
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 4:
        raise ValueError(f"class-capsule weights must be [N_in, N_out, D_out, D_in], got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("class-capsule weights contain NaN or inf")
    if per_capsule:
        max_abs = np.abs(W).max(axis=(0, 2, 3))
    else:
        max_abs = np.array([np.abs(W).max()])
    return np.array([symmetric_scale(m, qmax) for m in max_abs], dtype=np.float64)


def quantize_weights(W, scales, bits=8):
    """Symmetric weight codes for weight_scales(...) (1 or N_out scales), as int8
    values in [-127, 127] (bits 8) or [-7, 7] (bits 4; pack them with pack_int4)."""
    qmax = weight_qmax(bits)
    W = np.asarray(W, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1)
    if scales.size not in (1, W.shape[1]):
        raise ValueError(f"weights need 1 or {W.shape[1]} scales, got {scales.size}")
    q = quantize(W, scales.reshape(1, -1, 1, 1) if scales.size > 1 else scales[0])
    return np.clip(q, -qmax, qmax).astype(np.int8)


# ----------------------------------------------------------------------------
# Packed 4-bit tensors (TFLite INT4)
# ----------------------------------------------------------------------------

def int4_packed_size(count):
    """Bytes of ``count`` packed 4-bit values: two per byte, rounded up."""
    return (int(count) + 1) // 2


def pack_int4(q):
    """Pack int4 codes ([-8, 7], any shape, row-major) as TFLite INT4 does.

    Element e goes to byte e // 2: the low nibble when e is even, the high
    nibble when e is odd (the order of TFLM's UnpackDenseInt4IntoInt8); an
    odd count leaves the last high nibble 0.  Returns uint8 bytes.
    """
    q = np.asarray(q)
    if q.size and (not np.issubdtype(q.dtype, np.integer) or q.min() < -8 or q.max() > 7):
        raise ValueError("int4 values must be integers in [-8, 7]")
    flat = q.astype(np.int64).reshape(-1) & 0xF
    if flat.size % 2:
        flat = np.append(flat, 0)
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed, shape):
    """int8 array of ``shape`` from packed TFLite INT4 bytes (see pack_int4)."""
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.frombuffer(bytes(packed), dtype=np.uint8) if isinstance(
        packed, (bytes, bytearray, memoryview)) else np.asarray(packed).astype(np.uint8)
    raw = raw.reshape(-1)
    if raw.size != int4_packed_size(count):
        raise ValueError(f"packed int4 data of shape {tuple(shape)} needs "
                         f"{int4_packed_size(count)} bytes, got {raw.size}")
    nibbles = np.empty(raw.size * 2, dtype=np.int16)
    nibbles[0::2] = raw & 0xF
    nibbles[1::2] = raw >> 4
    values = ((nibbles ^ 8) - 8)[:count]  # sign-extend the nibble
    return values.astype(np.int8).reshape(tuple(shape))


# ----------------------------------------------------------------------------
# Dims and the class-capsule quantization
# ----------------------------------------------------------------------------

class ClassCapsDims(NamedTuple):
    """One sample of a class-capsule layer: u [n_in, dim_in] -> v [n_out, dim_out]."""
    n_in: int
    dim_in: int
    n_out: int
    dim_out: int

    def check(self):
        """ValueError unless every dim is inside the kernels' limits."""
        limits = {"n_in": MAX_N_IN, "dim_in": MAX_DIM_IN, "n_out": MAX_N_OUT,
                  "dim_out": MAX_CAPS_DIM}
        for name, limit in limits.items():
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 1 <= value <= limit:
                raise ValueError(f"class-capsule {name} must be an integer in [1, {limit}], got {value!r}")
        if self.n_in * self.n_out * self.dim_out > _MAX_BUFFER // 2:
            raise ValueError(f"class-capsule predictions n_in*n_out*dim_out = "
                             f"{self.n_in * self.n_out * self.dim_out} exceed the 2^30 limit")
        weights = self.n_in * self.n_out * self.dim_out * self.dim_in
        if weights > (1 << 31) - 1:
            raise ValueError(f"class-capsule weights n_in*n_out*dim_out*dim_in = {weights} "
                             f"exceed the int32 limit")
        return self

    @classmethod
    def from_shapes(cls, u_shape, w_shape):
        """Dims from u [.., N_in, D_in] and W [N_in, N_out, D_out, D_in] shapes."""
        if len(w_shape) != 4:
            raise ValueError(f"W must be [N_in, N_out, D_out, D_in], got shape {tuple(w_shape)}")
        n_in, n_out, dim_out, dim_in = (int(v) for v in w_shape)
        if len(u_shape) < 2 or tuple(u_shape[-2:]) != (n_in, dim_in):
            raise ValueError(f"u must end with [N_in={n_in}, D_in={dim_in}] to match W "
                             f"{tuple(w_shape)}, got shape {tuple(u_shape)}")
        return cls(n_in, dim_in, n_out, dim_out).check()


def _scale_tuple(values, what, allow_empty=False):
    """Tuple of validated float32 scales from a scalar or a sequence."""
    if values is None:
        if allow_empty:
            return ()
        raise ValueError(f"{what} are missing")
    items = [values] if np.isscalar(values) else list(np.ravel(np.asarray(values, dtype=object)))
    if not items and not allow_empty:
        raise ValueError(f"{what} are missing (empty)")
    return tuple(as_float32_scale(v, f"{what}[{k}]") for k, v in enumerate(items))


@dataclass(frozen=True)
class ClassCapsQuant:
    """Quantization of a class-capsule layer (C: caps_class_caps_quant).

    input_scale / input_zero_point: u.  weight_scales: 1 (per tensor) or
    N_out (per output capsule).  uhat_scale: predictions.  s_scales: the
    weighted sum s_j of each routing iteration (R entries).  b_scales: the
    logits after each update (R - 1 entries).  All scales float32-valued,
    finite, > 0; validated on construction.
    """
    input_scale: float
    input_zero_point: int
    weight_scales: Tuple[float, ...]
    uhat_scale: float
    s_scales: Tuple[float, ...]
    b_scales: Tuple[float, ...] = field(default=())

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "input_scale", as_float32_scale(self.input_scale, "class-caps input_scale"))
        set_(self, "input_zero_point", check_zero_point(self.input_zero_point,
                                                        "class-caps input_zero_point"))
        set_(self, "weight_scales", _scale_tuple(self.weight_scales, "class-caps weight_scales"))
        set_(self, "uhat_scale", as_float32_scale(self.uhat_scale, "class-caps uhat_scale"))
        set_(self, "s_scales", _scale_tuple(self.s_scales, "class-caps s_scales"))
        set_(self, "b_scales", _scale_tuple(self.b_scales, "class-caps b_scales", allow_empty=True))
        if not self.weight_scales:
            raise ValueError("class-caps weight_scales: need 1 or N_out scales, got none")
        if not 1 <= len(self.s_scales) <= MAX_ROUTINGS:
            raise ValueError(f"class-caps s_scales: need one per routing iteration "
                             f"(1..{MAX_ROUTINGS}), got {len(self.s_scales)}")
        if len(self.b_scales) != len(self.s_scales) - 1:
            raise ValueError(f"class-caps b_scales: need routings-1 = {len(self.s_scales) - 1} "
                             f"(one per logit update), got {len(self.b_scales)}")

    @property
    def routings(self):
        return len(self.s_scales)

    def check_n_out(self, n_out):
        """ValueError unless there are 1 or n_out weight scales."""
        if len(self.weight_scales) not in (1, int(n_out)):
            raise ValueError(f"class-caps weight_scales: need 1 or N_out={n_out} scales, "
                             f"got {len(self.weight_scales)}")
        return self

    def to_dict(self):
        return {"input_scale": self.input_scale, "input_zero_point": self.input_zero_point,
                "weight_scales": list(self.weight_scales), "uhat_scale": self.uhat_scale,
                "s_scales": list(self.s_scales), "b_scales": list(self.b_scales)}

    @classmethod
    def from_dict(cls, d):
        missing = [k for k in ("input_scale", "input_zero_point", "weight_scales",
                               "uhat_scale", "s_scales") if k not in d]
        if missing:
            raise ValueError(f"class-caps quantization is missing {', '.join(missing)}")
        return cls(d["input_scale"], d["input_zero_point"], d["weight_scales"],
                   d["uhat_scale"], d["s_scales"], d.get("b_scales", ()))


# ----------------------------------------------------------------------------
# Integer parameters of each op (same fields as the C structs)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SquashParams:
    """caps_squash_params: scale^2 = sq_multiplier * 2^(sq_exponent - 31)."""
    input_zp: int
    sq_multiplier: int
    sq_exponent: int


@dataclass(frozen=True)
class LengthParams:
    """caps_length_params: Q16 norm -> output units (real input_scale / 256)."""
    input_zp: int
    multiplier: int
    shift: int


@dataclass(frozen=True)
class PredictionsParams:
    """caps_predictions_params: one (multiplier, shift) per weight scale."""
    input_zp: int
    multipliers: Tuple[int, ...]
    shifts: Tuple[int, ...]


@dataclass(frozen=True)
class RoutingParams:
    """caps_routing_params (see caps_nn_types.h for each field)."""
    n_in: int
    n_out: int
    dim_out: int
    routings: int
    s: Tuple[Tuple[int, int], ...]
    squash: Tuple[SquashParams, ...]
    agree: Tuple[Tuple[int, int], ...]
    carry: Tuple[Tuple[int, int], ...]
    exp_beta: Tuple[Tuple[int, int], ...]


@dataclass(frozen=True)
class ClassCapsParams:
    pred: PredictionsParams
    routing: RoutingParams


def squash_params(input_scale, input_zp=0):
    """Params of squash for an int8 input (scale, zero point)."""
    s = as_float32_scale(input_scale, "squash input scale")
    zp = check_zero_point(input_zp, "squash input zero point")
    m, e = frexp_q31(s * s)
    return SquashParams(zp, m, e)


def length_params(input_scale, input_zp=0):
    """Params of length for an int8 input (scale, zero point)."""
    s = as_float32_scale(input_scale, "length input scale")
    zp = check_zero_point(input_zp, "length input zero point")
    m, sh = quantize_multiplier(s * 2.0 ** -8)
    return LengthParams(zp, m, sh)


def predictions_params(input_scale, input_zp, w_scales, uhat_scale, n_out):
    """Params of predictions: real[j] = input_scale * weight_scale[j] / uhat_scale."""
    ins = as_float32_scale(input_scale, "predictions input scale")
    zp = check_zero_point(input_zp, "predictions input zero point")
    ws = _scale_tuple(w_scales, "predictions weight scales")
    if len(ws) not in (1, int(n_out)):
        raise ValueError(f"predictions weight scales: need 1 or N_out={n_out}, got {len(ws)}")
    uh = as_float32_scale(uhat_scale, "predictions uhat scale")
    pairs = [quantize_multiplier((ins * w) / uh) for w in ws]
    return PredictionsParams(zp, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


def routing_params(dims, uhat_scale, s_scales, b_scales=()):
    """Params of dynamic routing (docs/quantization.md, 'Parameters')."""
    dims = ClassCapsDims(*dims).check()
    uh = as_float32_scale(uhat_scale, "routing uhat scale")
    ss = _scale_tuple(s_scales, "routing s_scales")
    bs = _scale_tuple(b_scales, "routing b_scales", allow_empty=True)
    routings = len(ss)
    if not 1 <= routings <= MAX_ROUTINGS:
        raise ValueError(f"routing s_scales: need 1..{MAX_ROUTINGS} (one per iteration), got {routings}")
    if len(bs) != routings - 1:
        raise ValueError(f"routing b_scales: need routings-1 = {routings - 1}, got {len(bs)}")
    p = fp.routing_acc_shift(dims.n_in)
    s_q, squash = [], []
    for r, s in enumerate(ss):
        real = uh / (s * float(dims.n_out)) if r == 0 else (uh * 2.0 ** (p - 15)) / s
        s_q.append(quantize_multiplier(real))
        squash.append(squash_params(s, 0))
    agree, carry, beta = [], [], []
    for u, b in enumerate(bs):
        agree.append(quantize_multiplier((uh * 2.0 ** -7) / b))
        carry.append(quantize_multiplier(bs[u - 1] / (uh * 2.0 ** -7)) if u >= 1 else (0, 0))
        beta.append(quantize_multiplier((b * LOG2E) * 65536.0))
    return RoutingParams(dims.n_in, dims.n_out, dims.dim_out, routings, tuple(s_q),
                         tuple(squash), tuple(agree), tuple(carry), tuple(beta))


def class_caps_params(dims, quant):
    """Predictions + routing params of a class-capsule layer from a ClassCapsQuant."""
    dims = ClassCapsDims(*dims).check()
    if not isinstance(quant, ClassCapsQuant):
        quant = ClassCapsQuant.from_dict(quant)
    quant.check_n_out(dims.n_out)
    pred = predictions_params(quant.input_scale, quant.input_zero_point, quant.weight_scales,
                              quant.uhat_scale, dims.n_out)
    routing = routing_params(dims, quant.uhat_scale, quant.s_scales, quant.b_scales)
    return ClassCapsParams(pred, routing)


# ----------------------------------------------------------------------------
# Calibration from float activations
# ----------------------------------------------------------------------------

def calibrate_class_caps(u, W, routings, input_scale, input_zero_point=0, w_scales=None,
                         per_capsule=True, batch_size=256, quantize_input=True, weight_bits=8):
    """ClassCapsQuant from float activations u [B, N_in, D_in] and float W.

    Runs the float reference (on u rounded to its int8 grid when
    quantize_input, and on the weights rounded to their ``weight_bits``
    grid, i.e. what the kernel sees) and sets every intermediate scale to
    max|x| / 127 over the batch.
    """
    from tflm_caps.reference import float_ref

    u = np.asarray(u, dtype=np.float64)
    if u.ndim == 2:
        u = u[None]
    dims = ClassCapsDims.from_shapes(u.shape, np.shape(W))
    if w_scales is None:
        w_scales = weight_scales(W, per_capsule, weight_bits)
    ws = np.asarray(_scale_tuple(w_scales, "weight scales"))
    Wq = quantize_weights(W, ws, weight_bits)
    Wd = Wq.astype(np.float64) * (ws.reshape(1, -1, 1, 1) if ws.size > 1 else ws[0])
    routings = int(routings)
    if not 1 <= routings <= MAX_ROUTINGS:
        raise ValueError(f"routings must be in [1, {MAX_ROUTINGS}], got {routings}")
    uh_max = 0.0
    s_max = np.zeros(routings)
    b_max = np.zeros(max(routings - 1, 0))
    for start in range(0, u.shape[0], max(1, int(batch_size))):
        chunk = u[start:start + batch_size]
        if quantize_input:
            chunk = dequantize(quantize(chunk, input_scale, input_zero_point), input_scale,
                               input_zero_point)
        _, inter = float_ref.class_caps_float(chunk, Wd, routings, return_intermediates=True)
        uh_max = max(uh_max, float(np.abs(inter["u_hat"]).max()))
        for r in range(routings):
            s_max[r] = max(s_max[r], float(np.abs(inter["s"][r]).max()))
        for k in range(routings - 1):
            b_max[k] = max(b_max[k], float(np.abs(inter["b"][k]).max()))
    return ClassCapsQuant(input_scale, input_zero_point, tuple(ws), symmetric_scale(uh_max),
                          tuple(symmetric_scale(m) for m in s_max),
                          tuple(symmetric_scale(m) for m in b_max)).check_n_out(dims.n_out)


# ----------------------------------------------------------------------------
# Efficient-CapsNet: exponential squash and self-attention capsules
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class EfficientSquashParams:
    """caps_efficient_squash_params: exp maps the Q16 norm |y| to the Q16
    base-2 exponent of exp(-S |y|) (real input_scale * log2(e))."""
    input_zp: int
    exp_multiplier: int
    exp_shift: int


def efficient_squash_params(input_scale, input_zp=0):
    """Params of the Efficient-CapsNet squash for an int8 input (scale, zero point)."""
    s = as_float32_scale(input_scale, "efficient squash input scale")
    zp = check_zero_point(input_zp, "efficient squash input zero point")
    m, e = quantize_multiplier(s * LOG2E)
    return EfficientSquashParams(zp, m, e)


def check_self_attention_dims(dims):
    """ClassCapsDims checked against the class-capsule limits and the
    self-attention one (D_out <= MAX_ATTENTION_DIM_OUT)."""
    dims = ClassCapsDims(*dims).check()
    if dims.dim_out > MAX_ATTENTION_DIM_OUT:
        raise ValueError(f"self-attention dim_out must be <= {MAX_ATTENTION_DIM_OUT} (the "
                         f"agreement sums fit int32), got {dims.dim_out}")
    return dims


@dataclass(frozen=True)
class SelfAttentionQuant:
    """Quantization of a self-attention capsule layer (C: caps_self_attention_quant).

    input_scale / input_zero_point: u.  weight_scales: 1 (per tensor) or
    N_out.  uhat_scale: the int8 votes u_hat.  s_scale: the int16 weighted
    sums s_j.  The coupling bias has the fixed scale 2^-15 (ATTENTION_BIAS_SCALE).
    """
    input_scale: float
    input_zero_point: int
    weight_scales: Tuple[float, ...]
    uhat_scale: float
    s_scale: float

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "input_scale", as_float32_scale(self.input_scale,
                                                   "self-attention input_scale"))
        set_(self, "input_zero_point", check_zero_point(self.input_zero_point,
                                                        "self-attention input_zero_point"))
        set_(self, "weight_scales", _scale_tuple(self.weight_scales,
                                                 "self-attention weight_scales"))
        set_(self, "uhat_scale", as_float32_scale(self.uhat_scale, "self-attention uhat_scale"))
        set_(self, "s_scale", as_float32_scale(self.s_scale, "self-attention s_scale"))

    def check_n_out(self, n_out):
        """ValueError unless there are 1 or n_out weight scales."""
        if len(self.weight_scales) not in (1, int(n_out)):
            raise ValueError(f"self-attention weight_scales: need 1 or N_out={n_out} scales, "
                             f"got {len(self.weight_scales)}")
        return self

    def to_dict(self):
        return {"input_scale": self.input_scale, "input_zero_point": self.input_zero_point,
                "weight_scales": list(self.weight_scales), "uhat_scale": self.uhat_scale,
                "s_scale": self.s_scale}


@dataclass(frozen=True)
class SelfAttentionParams:
    """caps_self_attention_params (see caps_nn_types.h for each field)."""
    pred: PredictionsParams
    n_in: int
    n_out: int
    dim_out: int
    acc_shift: int
    coupling_shift: int
    exp_beta: Tuple[int, int]
    s: Tuple[int, int]
    squash_exp: Tuple[int, int]


def quantize_attention_bias(bias):
    """int32 coupling bias in Q15: round half away from zero of b * 2^15.

    ValueError for non-finite values or |b| beyond MAX_ATTENTION_BIAS / 2^15.
    """
    b = np.asarray(bias, dtype=np.float64)
    if not np.all(np.isfinite(b)):
        raise ValueError("self-attention bias contains NaN or inf")
    q = b / ATTENTION_BIAS_SCALE
    q = np.sign(q) * np.floor(np.abs(q) + 0.5)
    if q.size and np.abs(q).max() > MAX_ATTENTION_BIAS:
        raise ValueError(f"self-attention bias |b| = {np.abs(b).max():g} exceeds "
                         f"{MAX_ATTENTION_BIAS * ATTENTION_BIAS_SCALE:g}")
    return q.astype(np.int32)


def coupling_shift(bias_q15):
    """Smallest q >= 0 with 2^15 + max|bias| <= 2^(15+q): couplings plus bias,
    shifted right by q, fit int16 (+2^15 itself saturates to 2^15 - 1)."""
    b = np.asarray(bias_q15, dtype=np.int64)
    top = (1 << 15) + (int(np.abs(b).max()) if b.size else 0)
    q = 0
    while (1 << (15 + q)) < top:
        q += 1
    return q


def self_attention_params(dims, quant, bias_q15):
    """Params of a self-attention capsule layer (docs/quantization.md)."""
    dims = check_self_attention_dims(dims)
    if not isinstance(quant, SelfAttentionQuant):
        raise ValueError(f"quant must be SelfAttentionQuant, got {type(quant).__name__}")
    quant.check_n_out(dims.n_out)
    bias = np.asarray(bias_q15)
    if bias.shape != (dims.n_in, dims.n_out) or not np.issubdtype(bias.dtype, np.integer):
        raise ValueError(f"self-attention bias must be integer [N_in, N_out] = "
                         f"[{dims.n_in}, {dims.n_out}], got {bias.dtype} {bias.shape}")
    if bias.size and np.abs(bias.astype(np.int64)).max() > MAX_ATTENTION_BIAS:
        raise ValueError(f"self-attention bias exceeds +-{MAX_ATTENTION_BIAS} (Q15)")
    pred = predictions_params(quant.input_scale, quant.input_zero_point, quant.weight_scales,
                              quant.uhat_scale, dims.n_out)
    uh = quant.uhat_scale
    p = fp.routing_acc_shift(dims.n_in)
    q = coupling_shift(bias)
    inv_sqrt = fp.inv_sqrt_q30(dims.dim_out) * 2.0 ** (p - 30)
    exp_beta = quantize_multiplier(((uh * uh) * inv_sqrt) * (LOG2E * 65536.0))
    s_q = quantize_multiplier((uh * 2.0 ** (q + p - 15)) / quant.s_scale)
    squash_exp = quantize_multiplier((quant.s_scale * LOG2E) * 256.0)
    return SelfAttentionParams(pred, dims.n_in, dims.n_out, dims.dim_out, p, q, exp_beta, s_q,
                               squash_exp)


def calibrate_self_attention(u, W, bias, input_scale, input_zero_point=0, w_scales=None,
                             per_capsule=True, batch_size=256, quantize_input=True):
    """SelfAttentionQuant from float activations u [B, N_in, D_in], float W and bias.

    Runs the float reference on what the kernel sees (u on its int8 grid when
    quantize_input, int8-rounded W, Q15-rounded bias) and sets the votes'
    scale to max|u_hat| / 127 (int8) and the weighted sums' to max|s| / 32767
    (int16) over the batch.
    """
    from tflm_caps.reference import float_ref

    u = np.asarray(u, dtype=np.float64)
    if u.ndim == 2:
        u = u[None]
    dims = check_self_attention_dims(ClassCapsDims.from_shapes(u.shape, np.shape(W)))
    if w_scales is None:
        w_scales = weight_scales(W, per_capsule)
    ws = np.asarray(_scale_tuple(w_scales, "weight scales"))
    Wq = quantize_weights(W, ws)
    Wd = Wq.astype(np.float64) * (ws.reshape(1, -1, 1, 1) if ws.size > 1 else ws[0])
    bd = quantize_attention_bias(bias).astype(np.float64) * ATTENTION_BIAS_SCALE
    uh_max = s_max = 0.0
    for start in range(0, u.shape[0], max(1, int(batch_size))):
        chunk = u[start:start + batch_size]
        if quantize_input:
            chunk = dequantize(quantize(chunk, input_scale, input_zero_point), input_scale,
                               input_zero_point)
        _, inter = float_ref.self_attention_float(chunk, Wd, bd, return_intermediates=True)
        uh_max = max(uh_max, float(np.abs(inter["u_hat"]).max()))
        s_max = max(s_max, float(np.abs(inter["s"]).max()))
    return SelfAttentionQuant(input_scale, input_zero_point, tuple(ws), symmetric_scale(uh_max),
                              symmetric_scale16(s_max)).check_n_out(dims.n_out)
