"""Fixed-point primitives, bit for bit as ``caps_nn_fixedpoint.h``.

All functions take and return numpy int64 arrays (or scalars broadcast to
them); every intermediate fits int64 for inputs inside the documented
ranges (docs/quantization.md), so numpy's wrapping never happens.
"""
import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

# Minimax coefficients (Q30) of 2^-x on [0, 1); see caps_nn_fixedpoint.h.
EXP2_COEFFS = (-744258158, 257898529, -59395887, 9908950, -1024411)

# Mantissa bits of the squash gain table index (CAPS_NN_SQUASH_LUT_BITS).
SQUASH_LUT_BITS = 7


def _i64(x):
    return np.asarray(x, dtype=np.int64)


def sat32(x):
    """Clamp into int32 (result int64)."""
    return np.clip(_i64(x), INT32_MIN, INT32_MAX)


def sat8(x):
    """Clamp into int8 (result int8)."""
    return np.clip(_i64(x), -128, 127).astype(np.int8)


def _trunc_div_pow2(q, n):
    """q / 2^n truncated toward zero."""
    return np.where(q >= 0, q >> n, -((-q) >> n))


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul: round(a*b / 2^31), ties away from 0."""
    a, b = np.broadcast_arrays(_i64(a), _i64(b))
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    res = _trunc_div_pow2(ab + nudge, 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), res)


def rdbpot(x, exponent):
    """RoundingDivideByPOT: round(x / 2^exponent), ties away from 0, exponent 0..31."""
    x, e = np.broadcast_arrays(_i64(x), _i64(exponent))
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def requantize(x, multiplier, shift):
    """TFLite MultiplyByQuantizedMultiplier with a saturating left shift.

    x: int32 values; multiplier, shift: scalars or arrays broadcasting with x.
    """
    x, m, s = np.broadcast_arrays(_i64(x), _i64(multiplier), _i64(shift))
    left = np.maximum(s, 0)
    xs = sat32(x * (np.int64(1) << left))
    return rdbpot(srdhm(xs, m), np.maximum(-s, 0))


def round_shift_s64(x, p):
    """round(x / 2^p) with ties toward +inf (p >= 0 scalar)."""
    x = _i64(x)
    p = int(p)
    if p <= 0:
        return x
    return (x + (np.int64(1) << (p - 1))) >> p


def isqrt(n):
    """floor(sqrt(n)) for 0 <= n < 2^62, exact."""
    n = _i64(n)
    r = np.floor(np.sqrt(n.astype(np.float64))).astype(np.int64)
    for _ in range(4):  # float sqrt is within 1 of the answer; fix it up
        r = np.where(r * r > n, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


def norm_q16(sq):
    """floor(sqrt(sq) * 2^16) for 0 <= sq < 2^30."""
    return isqrt(_i64(sq) << 32)


def exp2_neg_q30(w_q16):
    """2^(-w / 2^16) in Q30 for w >= 0 (negative w counts as 0)."""
    w = np.maximum(_i64(w_q16), 0)
    n = w >> 16
    x = (w & 0xFFFF) << 14
    half = np.int64(1 << 29)
    p = np.full_like(x, EXP2_COEFFS[4])
    for c in (EXP2_COEFFS[3], EXP2_COEFFS[2], EXP2_COEFFS[1], EXP2_COEFFS[0]):
        p = c + ((p * x + half) >> 30)
    p = (1 << 30) + ((p * x + half) >> 30)
    nn = np.minimum(n, 31)
    rounding = np.where(nn > 0, np.int64(1) << np.maximum(nn - 1, 0), 0)
    out = (p + rounding) >> nn
    return np.where(n > 30, np.int64(0), out)


def exp_table(beta_multiplier, beta_shift):
    """T[k] = exp(-k * b_scale) in Q30, k = 0..255."""
    k = np.arange(256, dtype=np.int64)
    return exp2_neg_q30(requantize(k, beta_multiplier, beta_shift))


def softmax_q15(logits, table):
    """Integer softmax over the last axis of int8 logits -> unsigned Q15."""
    b = _i64(logits)
    mx = b.max(axis=-1, keepdims=True)
    e = table[mx - b]
    total = e.sum(axis=-1, keepdims=True)
    recip = ((np.int64(1) << 62) + (total >> 1)) // total
    return (e * recip + (np.int64(1) << 46)) >> 47


def routing_acc_shift(n_in):
    """Smallest p >= 0 with n_in <= 2^(8+p)."""
    p = 0
    while p < 30 and (1 << (8 + p)) < int(n_in):
        p += 1
    return p


def squash_gain(sq, sq_multiplier, sq_exponent):
    """Squash gain G (Q24) of capsules with squared offset norms sq (< 2^30)."""
    sq = _i64(sq)
    m = int(sq_multiplier)
    e = int(sq_exponent)
    if m <= 0:
        return np.zeros_like(sq)
    cap = np.int64(1 << 62)
    prod = sq * m
    left = e - 1
    if left >= 0:
        if left >= 62:
            t = np.where(prod > 0, cap, np.int64(0))
        else:
            t = np.where(prod > (cap >> left), cap, prod << left)
    elif -left >= 63:
        t = np.zeros_like(prod)
    else:
        t = (prod + (np.int64(1) << (-left - 1))) >> (-left)
    den = (np.int64(1) << 30) + t
    f = (np.int64(1) << 30) - (((np.int64(1) << 60) + (den >> 1)) // den)
    r = norm_q16(sq)
    safe_r = np.where(r > 0, r, 1)
    g = (f * (np.int64(1) << 17) + (safe_r >> 1)) // safe_r
    return np.where(sq > 0, g, np.int64(0))


def squash_index(sq):
    """Gain-table index of squared norms sq (< 2^30): sq itself below
    2^(SQUASH_LUT_BITS+1), else the top SQUASH_LUT_BITS+1 bits of sq plus
    SQUASH_LUT_BITS bits of shift (2^SQUASH_LUT_BITS entries per octave)."""
    sq = _i64(sq)
    shift = _squash_shift(sq)
    return (sq >> shift) + (shift << SQUASH_LUT_BITS)


def _squash_shift(sq):
    # floor(log2(sq)) is exact from the float64 exponent for sq < 2^53
    e = np.frexp(np.maximum(sq, 1).astype(np.float64))[1].astype(np.int64) - 1
    return np.maximum(e - SQUASH_LUT_BITS, 0)


def squash_index_rep(k):
    """Representative squared norm of table index k: the index itself in the
    exact range, else the midpoint of the index's bucket."""
    k = _i64(k)
    shift = np.maximum((k >> SQUASH_LUT_BITS) - 1, 0)
    mant = k - (shift << SQUASH_LUT_BITS)
    half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
    return (mant << shift) + half


def squash_table_gain(sq, sq_multiplier, sq_exponent):
    """Gain (Q24, <= INT32_MAX) the squash applies to capsules of squared
    norm sq: squash_gain of the representative of sq's table index."""
    rep = squash_index_rep(squash_index(sq))
    return np.minimum(squash_gain(rep, sq_multiplier, sq_exponent), INT32_MAX)


def squash_table_entries(dim, input_zp):
    """Entries of the gain table for capsules of up to `dim` elements."""
    m = max(127 - int(input_zp), 128 + int(input_zp))
    return int(squash_index(dim * m * m)) + 1


def squash_apply(y, gain_q24):
    """floor((y * G + 2^23) / 2^24) (round half up), saturated to int8."""
    return sat8((_i64(y) * _i64(gain_q24) + (np.int64(1) << 23)) >> 24)


# ---------------------------------------------------------------------------
# Efficient-CapsNet: exponential squash and self-attention routing
# ---------------------------------------------------------------------------

def efficient_squash_gain(sq, exp_multiplier, exp_shift):
    """Gain G (Q24) of the Efficient-CapsNet squash for squared offset norms sq
    (< 2^30): G = 128 (1 - exp(-S |y|)) / |y|.

    r = norm_q16(sq) (|y| in Q16); w = requantize(r, exp) = S |y| log2(e) in
    Q16; f = 2^30 - exp2_neg_q30(w) = 1 - exp(-S |y|) in Q30; G = round(f 2^17 / r).
    """
    sq = _i64(sq)
    r = norm_q16(sq)
    w = requantize(r, int(exp_multiplier), int(exp_shift))
    f = (np.int64(1) << 30) - exp2_neg_q30(w)
    safe_r = np.where(r > 0, r, 1)
    g = (f * (np.int64(1) << 17) + (safe_r >> 1)) // safe_r
    return np.where(sq > 0, g, np.int64(0))


def efficient_squash_table_gain(sq, exp_multiplier, exp_shift):
    """Gain (Q24, <= INT32_MAX) the Efficient-CapsNet squash applies at squared
    norm sq: that of the representative of sq's table index (as squash)."""
    rep = squash_index_rep(squash_index(sq))
    return np.minimum(efficient_squash_gain(rep, exp_multiplier, exp_shift), INT32_MAX)


def inv_sqrt_q30(n):
    """floor(2^30 / sqrt(n)) for an integer n >= 1, exact: isqrt(floor(2^60 / n))."""
    n = int(n)
    if n < 1:
        raise ValueError(f"inv_sqrt_q30: n must be >= 1, got {n}")
    return int(isqrt((1 << 60) // n))


def normalize_q15(e):
    """Couplings in unsigned Q15 from Q30 exponentials e [..., N] whose maximum
    per row is 2^30 (sum >= 2^30): round(e 2^15 / sum) via softmax_recip."""
    e = _i64(e)
    total = e.sum(axis=-1, keepdims=True)
    recip = ((np.int64(1) << 62) + (total >> 1)) // total
    return (e * recip + (np.int64(1) << 46)) >> 47


def sat16(x):
    """Clamp into int16 (result int64)."""
    return np.clip(_i64(x), -(1 << 15), (1 << 15) - 1)


def efficient_squash_wide(y, exp_multiplier, exp_shift):
    """Efficient-CapsNet squash of int16 capsules y [..., D] (D <= 128) to int8
    at 1/128, the last step of the self-attention layer.

    sq = sum y^2 (< 2^37); r = isqrt(sq 2^16) = floor(|y| 2^8);
    w = requantize(r, exp) (S |y| log2(e) in Q16); f = 2^30 - exp2_neg_q30(w);
    G = min(round(f 2^9 / r), 2^31 - 1) (= 128 f / |y| in Q24); v = sat8((y G + 2^23) >> 24).
    """
    y = _i64(y)
    sq = np.sum(y * y, axis=-1, keepdims=True)
    r = isqrt(sq << 16)
    w = requantize(r, int(exp_multiplier), int(exp_shift))
    f = (np.int64(1) << 30) - exp2_neg_q30(w)
    safe_r = np.where(r > 0, r, 1)
    g = np.minimum((f * (np.int64(1) << 9) + (safe_r >> 1)) // safe_r, INT32_MAX)
    g = np.where(r > 0, g, np.int64(0))
    return sat8((y * g + (np.int64(1) << 23)) >> 24)
