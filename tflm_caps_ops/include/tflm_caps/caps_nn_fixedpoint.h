/*
 * Fixed-point primitives shared by every kernel backend (portable,
 * Cortex-M, RISC-V) so that all of them compute identical integers.
 * Mirrored bit for bit by python/tflm_caps/reference/fixedpoint.py;
 * specified in docs/quantization.md.
 *
 * Integer-only, C99, no libm.  Assumes two's complement with arithmetic
 * right shift of negative values (GCC/Clang on every supported target, as
 * TFLite and CMSIS-NN assume).  Negative values are never shifted left.
 */
#ifndef TFLM_CAPS_CAPS_NN_FIXEDPOINT_H
#define TFLM_CAPS_CAPS_NN_FIXEDPOINT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CAPS_NN_INLINE static inline __attribute__((always_inline))
#else
#define CAPS_NN_INLINE static inline
#endif

/* Minimax coefficients (Q30) of 2^-x on [0, 1): 2^30 + x*(C1 + x*(...C5)).
 * Max error 6e-8 absolute (1.3e-7 relative); P(0) == 2^30 exactly and
 * P(x) < 2^30 for x > 0. */
#define CAPS_NN_EXP2_C1 (-744258158)
#define CAPS_NN_EXP2_C2 (257898529)
#define CAPS_NN_EXP2_C3 (-59395887)
#define CAPS_NN_EXP2_C4 (9908950)
#define CAPS_NN_EXP2_C5 (-1024411)

/* Clamp an int64 into int32. */
CAPS_NN_INLINE int32_t caps_nn_sat_s32(int64_t x)
{
    if (x > INT32_MAX) {
        return INT32_MAX;
    }
    if (x < INT32_MIN) {
        return INT32_MIN;
    }
    return (int32_t)x;
}

/* Clamp into int8. */
CAPS_NN_INLINE int8_t caps_nn_sat_s8(int32_t x)
{
    return (int8_t)(x > 127 ? 127 : (x < -128 ? -128 : x));
}

/* gemmlowp SaturatingRoundingDoublingHighMul: round(a*b / 2^31); the
 * asymmetric nudge makes ties round toward +inf; the single overflow case
 * saturates. */
CAPS_NN_INLINE int32_t caps_nn_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* truncates toward 0 */
}

/* gemmlowp RoundingDivideByPOT: round(x / 2^exponent), ties away from zero;
 * exponent in [0, 31]. */
CAPS_NN_INLINE int32_t caps_nn_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift-31),
 * shift in [-31, 31].  The left shift saturates (TFLite leaves it undefined). */
CAPS_NN_INLINE int32_t caps_nn_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    int32_t xs = x;
    if (shift > 0) {
        xs = caps_nn_sat_s32((int64_t)x * ((int64_t)1 << shift));
    }
    return caps_nn_rdbpot(caps_nn_srdhm(xs, multiplier), shift > 0 ? 0 : -shift);
}

/* round(x / 2^p), ties toward +inf, p in [0, 62]. */
CAPS_NN_INLINE int64_t caps_nn_round_shift_s64(int64_t x, int32_t p)
{
    if (p <= 0) {
        return x;
    }
    return (x + ((int64_t)1 << (p - 1))) >> p;
}

/* floor(sqrt(n)), exact for every uint64 (digit-by-digit, no division). */
CAPS_NN_INLINE uint64_t caps_nn_isqrt_u64(uint64_t n)
{
    uint64_t res = 0;
    uint64_t bit = (uint64_t)1 << 62;
    while (bit > n) {
        bit >>= 2;
    }
    while (bit != 0) {
        if (n >= res + bit) {
            n -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    return res;
}

/* Capsule norm in Q16: floor(sqrt(sq) * 2^16), sq < 2^30 so < 2^31. */
CAPS_NN_INLINE uint32_t caps_nn_norm_q16(uint32_t sq)
{
    return (uint32_t)caps_nn_isqrt_u64((uint64_t)sq << 32);
}

/* 2^(-w / 2^16) in Q30 for w >= 0: integer part by a rounding right shift,
 * fraction by the Horner polynomial (each step rounds half up). */
CAPS_NN_INLINE uint32_t caps_nn_exp2_neg_q30(int32_t w_q16)
{
    if (w_q16 < 0) {
        w_q16 = 0;
    }
    const int32_t n = w_q16 >> 16;
    if (n > 30) {
        return 0;
    }
    const int64_t x = (int64_t)(w_q16 & 0xFFFF) << 14; /* Q30 fraction */
    const int64_t half = (int64_t)1 << 29;
    int64_t p = CAPS_NN_EXP2_C5;
    p = CAPS_NN_EXP2_C4 + ((p * x + half) >> 30);
    p = CAPS_NN_EXP2_C3 + ((p * x + half) >> 30);
    p = CAPS_NN_EXP2_C2 + ((p * x + half) >> 30);
    p = CAPS_NN_EXP2_C1 + ((p * x + half) >> 30);
    p = ((int64_t)1 << 30) + ((p * x + half) >> 30);
    if (n > 0) {
        p = (p + ((int64_t)1 << (n - 1))) >> n;
    }
    return (uint32_t)p;
}

/* exp(-k * b_scale) in Q30 for a logit difference k in [0, 255]: the Q16
 * base-2 exponent is requantize(k, exp_beta) (real b_scale*log2(e)*2^16). */
CAPS_NN_INLINE uint32_t caps_nn_exp_neg_q30(int32_t k, int32_t beta_multiplier,
                                            int32_t beta_shift)
{
    return caps_nn_exp2_neg_q30(caps_nn_requantize(k, beta_multiplier, beta_shift));
}

/* Round(2^62 / sum) for a softmax denominator sum >= 2^30 (Q30). */
CAPS_NN_INLINE uint64_t caps_nn_softmax_recip(uint64_t sum)
{
    return (((uint64_t)1 << 62) + (sum >> 1)) / sum;
}

/* Coupling coefficient in Q15: round(e * 2^15 / sum) via the reciprocal. */
CAPS_NN_INLINE int32_t caps_nn_softmax_q15(uint32_t e, uint64_t recip)
{
    return (int32_t)(((uint64_t)e * recip + ((uint64_t)1 << 46)) >> 47);
}

/* Right shift applied to the routing accumulator sum_i c_ij(Q15) u_hat
 * before requantization, so that it fits int32: smallest p >= 0 with
 * n_in <= 2^(8+p)  (|acc| <= n_in * 2^22). */
CAPS_NN_INLINE int32_t caps_nn_routing_acc_shift(int32_t n_in)
{
    int32_t p = 0;
    while (p < 30 && ((int64_t)1 << (8 + p)) < (int64_t)n_in) {
        ++p;
    }
    return p;
}

/* Weighted sums s of routing iteration r as int8: the int64 accumulators
 * (exact sums for r = 0, Q15-coupled sums otherwise, pre-shifted by p)
 * requantized with the iteration's multiplier. */
CAPS_NN_INLINE void caps_nn_routing_sums_s8(const int64_t *acc, int32_t n, int32_t r, int32_t p,
                                            int32_t multiplier, int32_t shift, int8_t *s)
{
    for (int32_t e = 0; e < n; ++e) {
        const int64_t a = r == 0 ? acc[e] : caps_nn_round_shift_s64(acc[e], p);
        s[e] = caps_nn_sat_s8(caps_nn_requantize(caps_nn_sat_s32(a), multiplier, shift));
    }
}

/* 2^30 + t: the denominator of the squash factor f below, with t = L^2 in
 * Q30 (sq * sq_multiplier * 2^(sq_exponent - 1) rounded half up, capped
 * at 2^62); sq_multiplier >= 0. */
CAPS_NN_INLINE uint64_t caps_nn_squash_den_q30(uint32_t sq, int32_t sq_multiplier,
                                               int32_t sq_exponent)
{
    const uint64_t cap = (uint64_t)1 << 62;
    const uint64_t prod = (uint64_t)sq * (uint64_t)(uint32_t)sq_multiplier; /* < 2^61 */
    const int32_t left = sq_exponent - 1; /* Q30: 2^(e-31) * 2^30 */
    uint64_t t;
    if (left >= 0) {
        t = (left >= 62 || prod > (cap >> left)) ? cap : (prod << left);
    } else if (-left >= 63) {
        t = 0;
    } else {
        t = (prod + ((uint64_t)1 << (-left - 1))) >> -left;
    }
    return ((uint64_t)1 << 30) + t;
}

/* Squash gain G in Q24 for a capsule with squared offset norm sq
 * (sq = sum (x - zp)^2 < 2^30):  G = 128 * f / |y|,  f = L^2 / (1 + L^2),
 * L^2 = sq * scale^2 = sq * sq_multiplier * 2^(sq_exponent - 31).
 *   t = L^2 in Q30 (rounded half up, capped at 2^62),
 *   f = 2^30 - round(2^60 / (2^30 + t))                       (Q30),
 *   r = floor(sqrt(sq) * 2^16)                                (Q16),
 *   G = round(f * 2^17 / r)                                    (Q24, <= 2^31).
 * sq == 0 gives G = 0 (a zero vector stays zero, nothing is divided). */
CAPS_NN_INLINE uint32_t caps_nn_squash_gain(uint32_t sq, int32_t sq_multiplier,
                                            int32_t sq_exponent)
{
    if (sq == 0 || sq_multiplier <= 0) {
        return 0;
    }
    const uint64_t den = caps_nn_squash_den_q30(sq, sq_multiplier, sq_exponent);
    const uint64_t f = ((uint64_t)1 << 30) - ((((uint64_t)1 << 60) + (den >> 1)) / den);
    const uint64_t r = caps_nn_norm_q16(sq);
    return (uint32_t)((f * ((uint64_t)1 << 17) + (r >> 1)) / r);
}

/* Mantissa bits of the squash gain-table index: 2^7 buckets per octave of
 * sq, so a bucket's midpoint is within 2^-8 of any sq in it. */
#define CAPS_NN_SQUASH_LUT_BITS 7

/* Right shift of sq in its table index: max(0, floor(log2 sq) - BITS). */
CAPS_NN_INLINE int32_t caps_nn_squash_shift(uint32_t sq)
{
    int32_t shift = 0;
    while ((sq >> shift) >= (2u << CAPS_NN_SQUASH_LUT_BITS)) {
        ++shift;
    }
    return shift;
}

/* Table index of sq: (sq >> shift) + (shift << BITS); sq itself for
 * sq < 2^(BITS+1), contiguous and non-decreasing in sq. */
CAPS_NN_INLINE uint32_t caps_nn_squash_index(uint32_t sq)
{
    const int32_t shift = caps_nn_squash_shift(sq);
    return (sq >> shift) + ((uint32_t)shift << CAPS_NN_SQUASH_LUT_BITS);
}

/* Representative squared norm of index k: k in the exact range, else the
 * midpoint of its bucket. */
CAPS_NN_INLINE uint32_t caps_nn_squash_index_rep(uint32_t k)
{
    const uint32_t hi = k >> CAPS_NN_SQUASH_LUT_BITS;
    if (hi < 2u) {
        return k;
    }
    const uint32_t shift = hi - 1u;
    const uint32_t mant = k - (shift << CAPS_NN_SQUASH_LUT_BITS);
    return (mant << shift) + (1u << (shift - 1u));
}

/* A squash gain as the table stores it: min(G, INT32_MAX), so it is a
 * signed 32-bit operand (SMLAWB); G = 2^31 saturates every |y| >= 1 either
 * way. */
CAPS_NN_INLINE int32_t caps_nn_squash_gain_s32(uint32_t gain_q24)
{
    return gain_q24 > (uint32_t)INT32_MAX ? INT32_MAX : (int32_t)gain_q24;
}

/* Table entry k: the clamped gain of the index's representative. */
CAPS_NN_INLINE int32_t caps_nn_squash_table_entry(uint32_t k, int32_t sq_multiplier,
                                                  int32_t sq_exponent)
{
    return caps_nn_squash_gain_s32(
        caps_nn_squash_gain(caps_nn_squash_index_rep(k), sq_multiplier, sq_exponent));
}

/* The gain the squash applies to a capsule of squared norm sq: its table
 * entry. */
CAPS_NN_INLINE int32_t caps_nn_squash_table_gain(uint32_t sq, int32_t sq_multiplier,
                                                 int32_t sq_exponent)
{
    return caps_nn_squash_table_entry(caps_nn_squash_index(sq), sq_multiplier, sq_exponent);
}

/* One squashed element: floor((y * G + 2^23) / 2^24) (round half up), to
 * int8.  Equal to ((floor(y G / 2^16) + 128) >> 8), one SMLAWB on Arm. */
CAPS_NN_INLINE int8_t caps_nn_squash_apply(int32_t y, int32_t gain_q24)
{
    /* |y G| < 2^39: the shifted value fits int32 */
    return caps_nn_sat_s8((int32_t)(((int64_t)y * gain_q24 + ((int64_t)1 << 23)) >> 24));
}

/* ---------------------------------------------------------------------
 * Efficient-CapsNet: exponential squash and self-attention routing.
 * ------------------------------------------------------------------- */

/* Clamp an int64 into int16. */
CAPS_NN_INLINE int16_t caps_nn_sat_s16(int64_t x)
{
    return (int16_t)(x > 32767 ? 32767 : (x < -32768 ? -32768 : x));
}

/* Gain G in Q24 of the Efficient-CapsNet squash for a capsule with squared
 * offset norm sq (< 2^30):  G = 128 * (1 - exp(-S |y|)) / |y|.
 *   r = floor(sqrt(sq) * 2^16)                         (|y|, Q16, < 2^31),
 *   w = requantize(r, exp)                             (S |y| log2(e), Q16),
 *   f = 2^30 - exp2_neg_q30(w)                          (1 - exp(-S|y|), Q30),
 *   G = round(f * 2^17 / r)                             (Q24, <= 2^31).
 * sq == 0 gives G = 0 (nothing is divided). */
CAPS_NN_INLINE uint32_t caps_nn_efficient_squash_gain(uint32_t sq, int32_t exp_multiplier,
                                                      int32_t exp_shift)
{
    if (sq == 0) {
        return 0;
    }
    const uint32_t r = caps_nn_norm_q16(sq);
    const int32_t w = caps_nn_requantize((int32_t)r, exp_multiplier, exp_shift);
    const uint64_t f = ((uint64_t)1 << 30) - caps_nn_exp2_neg_q30(w);
    return (uint32_t)((f * ((uint64_t)1 << 17) + (r >> 1)) / r);
}

/* Gain-table entry k of the Efficient-CapsNet squash: the clamped gain of
 * the index's representative (same index as the squash table). */
CAPS_NN_INLINE int32_t caps_nn_efficient_squash_table_entry(uint32_t k, int32_t exp_multiplier,
                                                            int32_t exp_shift)
{
    return caps_nn_squash_gain_s32(caps_nn_efficient_squash_gain(caps_nn_squash_index_rep(k),
                                                                 exp_multiplier, exp_shift));
}

/* The gain the Efficient-CapsNet squash applies at squared norm sq. */
CAPS_NN_INLINE int32_t caps_nn_efficient_squash_table_gain(uint32_t sq, int32_t exp_multiplier,
                                                           int32_t exp_shift)
{
    return caps_nn_efficient_squash_table_entry(caps_nn_squash_index(sq), exp_multiplier,
                                                exp_shift);
}

/* Efficient-CapsNet squash of one int16 capsule y [dim] (dim <= 128) to int8
 * at 1/128 (the last step of the self-attention layer):
 *   sq = sum y^2 (< 2^37),  r = isqrt(sq 2^16) = floor(|y| 2^8),
 *   w = requantize(r, exp) = S |y| log2(e) in Q16,
 *   f = 2^30 - exp2_neg_q30(w),  G = min(round(f 2^9 / r), 2^31 - 1) (Q24),
 *   v_k = sat8((y_k G + 2^23) >> 24).  A zero capsule stays zero. */
CAPS_NN_INLINE void caps_nn_efficient_squash_wide(const int16_t *y, int32_t dim,
                                                  int32_t exp_multiplier, int32_t exp_shift,
                                                  int8_t *v)
{
    uint64_t sq = 0;
    for (int32_t k = 0; k < dim; ++k) {
        sq += (uint64_t)((int32_t)y[k] * y[k]);
    }
    const uint64_t r = caps_nn_isqrt_u64(sq << 16);
    int64_t gain = 0;
    if (r > 0) {
        const int32_t w = caps_nn_requantize((int32_t)r, exp_multiplier, exp_shift);
        const uint64_t f = ((uint64_t)1 << 30) - caps_nn_exp2_neg_q30(w);
        const uint64_t g = (f * ((uint64_t)1 << 9) + (r >> 1)) / r;
        gain = g > (uint64_t)INT32_MAX ? INT32_MAX : (int64_t)g;
    }
    for (int32_t k = 0; k < dim; ++k) {
        /* |y G| < 2^46: the shifted value fits int32 */
        v[k] = caps_nn_sat_s8((int32_t)(((int64_t)y[k] * gain + ((int64_t)1 << 23)) >> 24));
    }
}

/* floor(2^30 / sqrt(n)) for n >= 1, exact: isqrt(floor(2^60 / n)). */
CAPS_NN_INLINE uint32_t caps_nn_inv_sqrt_q30(uint32_t n)
{
    return (uint32_t)caps_nn_isqrt_u64(((uint64_t)1 << 60) / n);
}

#ifdef __cplusplus
}
#endif

#endif /* TFLM_CAPS_CAPS_NN_FIXEDPOINT_H */
