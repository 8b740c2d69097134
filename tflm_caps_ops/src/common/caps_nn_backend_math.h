/*
 * Fast exact replacements for the expensive primitives of
 * caps_nn_fixedpoint.h, shared by the optimized backends (Cortex-M,
 * RISC-V); private to the kernels.
 *
 * Every function returns exactly what its counterpart in
 * caps_nn_fixedpoint.h returns (the portable kernels and the numpy
 * reference stay the arbiter); only the way it gets there differs:
 *  - 64-bit divisions use the core's 32-bit hardware divide (Knuth's
 *    algorithm D with 16-bit digits) instead of a bit-serial library loop;
 *  - the softmax reciprocal round(2^62 / sum) is a 16-bit divide seed, one
 *    third-order Newton step and an exact rounding check, inlined;
 *  - the Q16 capsule norm uses a table estimate, one 32-bit Newton step and
 *    one 64/32 Newton step with an exact final correction instead of a
 *    62-step digit-by-digit square root;
 *  - the exp2 polynomial of the routing softmax runs on 32-bit terms;
 *  - requantization of values known to be below 2^30 in magnitude uses a
 *    single rounding multiply-high (see caps_bm_requant).
 * C99, integer only, no heap.  The small helpers are static inline here;
 * the rest is in caps_nn_backend_math.c, which the build compiles only
 * together with an optimized backend.
 */
#ifndef TFLM_CAPS_CAPS_NN_BACKEND_MATH_H
#define TFLM_CAPS_CAPS_NN_BACKEND_MATH_H

#include <stdint.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_types.h"

#define CAPS_BM_INLINE CAPS_NN_INLINE

/* Leading zeros of a non-zero 32-bit value. */
CAPS_BM_INLINE int32_t caps_bm_clz32(uint32_t x)
{
#if defined(__GNUC__)
    return (int32_t)__builtin_clz(x);
#else
    int32_t n = 0;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
#endif
}

/* Exact fast primitives defined in caps_nn_backend_math.c (see there for
 * how each works). */

/* floor(sqrt(x)) for x < 2^30. */
uint32_t caps_bm_isqrt32(uint32_t x);
/* caps_nn_norm_q16. */
uint32_t caps_bm_norm_q16(uint32_t sq);
/* caps_nn_squash_gain. */
uint32_t caps_bm_squash_gain(uint32_t sq, int32_t sq_multiplier, int32_t sq_exponent);
/* caps_nn_efficient_squash_gain (Efficient-CapsNet squash, sq < 2^30). */
uint32_t caps_bm_efficient_squash_gain(uint32_t sq, int32_t exp_multiplier, int32_t exp_shift);
/* The Q24 gain of caps_nn_efficient_squash_wide for the squared norm sq
 * (< 2^38) of an int16 capsule: min(round(f 2^9 / r), 2^31 - 1), 0 for
 * sq = 0, with r = floor(sqrt(sq) 2^8). */
int32_t caps_bm_efficient_squash_wide_gain(uint64_t sq, int32_t exp_multiplier,
                                           int32_t exp_shift);
/* Entries [start, stop) of the routing softmax's exp table (0 <= start <=
 * stop <= 256): table[k] = caps_nn_exp_neg_q30(k, beta->multiplier,
 * beta->shift) for checked params. */
void caps_bm_exp_table(const caps_nn_requant *beta, int32_t start, int32_t stop,
                       uint32_t *table);

/* caps_nn_exp2_neg_q30 with 32-bit Horner terms: every partial sum of the
 * polynomial stays below 2^31 in magnitude (sum |C_k| < 1.1e9, x < 2^30)
 * and the result is at most 2^30, so each step is one 32x32->64 multiply
 * instead of a 64x64 product, with the same integers. */
CAPS_BM_INLINE uint32_t caps_bm_exp2_neg_q30(int32_t w_q16)
{
    if (w_q16 < 0) {
        w_q16 = 0;
    }
    const int32_t n = w_q16 >> 16;
    if (n > 30) {
        return 0;
    }
    const int32_t x = (w_q16 & 0xFFFF) << 14;
    const int64_t half = (int64_t)1 << 29;
    int32_t p = CAPS_NN_EXP2_C5;
    p = CAPS_NN_EXP2_C4 + (int32_t)(((int64_t)p * x + half) >> 30);
    p = CAPS_NN_EXP2_C3 + (int32_t)(((int64_t)p * x + half) >> 30);
    p = CAPS_NN_EXP2_C2 + (int32_t)(((int64_t)p * x + half) >> 30);
    p = CAPS_NN_EXP2_C1 + (int32_t)(((int64_t)p * x + half) >> 30);
    p = (1 << 30) + (int32_t)(((int64_t)p * x + half) >> 30);
    if (n > 0) {
        p = (p + (1 << (n - 1))) >> n;
    }
    return (uint32_t)p;
}

/* 2^64 / dh - 2^32 for dh in [2^31, 2^32), from below by less than 3 / dh
 * in 2^-32 units: 2^64 - 3 dh < dh (2^32 + v) <= 2^64 (checked for every
 * dh by tests/test_backend_recip.py).  The seed is one hardware divide by
 * the top 16 bits of dh rounded up (under 2^-15 below, never above);
 * with E = 2^64 - dh y0 (exact, E/2^64 < 2^-15) one Newton step of third
 * order y1 = y0 (1 + E/2^64 + (E/2^64)^2) leaves only truncation error. */
CAPS_BM_INLINE uint32_t caps_bm_recip_q32(uint32_t dh)
{
    const uint32_t v0 = (~(dh << 1) / ((dh >> 16) + 1u)) << 15;
    const uint64_t p = (uint64_t)dh * v0; /* dh y0 = p + dh 2^32 < 2^64 */
    const uint32_t el = ~(uint32_t)p;     /* E - 1: truncates toward below */
    const uint32_t eh = ~((uint32_t)(p >> 32) + dh);
    /* y0 E / 2^64 = eh + (el + v0 eh) / 2^32 + (< 1): one multiply-accumulate */
    const uint32_t w = (uint32_t)(((((uint64_t)eh << 32) | el) + (uint64_t)v0 * eh) >> 32);
    return v0 + w + (uint32_t)(((uint64_t)w * eh) >> 32);
}

/* caps_nn_softmax_recip clamped to 2^32 - 1: q = floor((2^62 + floor(sum/2))
 * / sum) = round(2^62 / sum) for sum >= 2^30.  The only sum giving 2^32 is
 * exactly 2^30 (one coupling is 1, the others 0), where 2^32 - 1 yields the
 * same Q15 couplings through caps_bm_softmax_q15.
 *
 * With sum normalized to n = sum 2^s in [2^63, 2^64), dh = n >> 32 and
 * f = 2^62 / sum, the estimate y1 / 2^(34-s) of caps_bm_recip_q32's
 * y1 = 2^32 + v lies in (F - 3/2^(34-s), F] where F = 2^(30+s) / dh:
 *  - sum in [2^32, 2^62): s <= 31 so f <= F < f + 2^(s-32) <= f + 1/2 and
 *    34 - s >= 3: the floor is q - 1 or q; one check fixes it;
 *  - sum in (2^30, 2^32): F = f (dh holds all of sum), 34 - s >= 1: the
 *    floor is q - 2 .. q; two checks.
 * q' < q  <=>  (q' + 1) sum <= 2^62 + floor(sum/2)  <=>  (2q' + 1) sum < 2^63
 * <=> q' sum + floor(sum/2) < 2^62 ((2q' + 1) sum = 2^63 needs sum = 2^63). */
CAPS_BM_INLINE uint32_t caps_bm_softmax_recip(uint64_t sum)
{
    const uint32_t hi = (uint32_t)(sum >> 32);
    const uint32_t lo = (uint32_t)sum;
    if (((hi - 1u) >> 30) == 0) { /* sum in [2^32, 2^62): the routing's usual case */
        const int32_t s = caps_bm_clz32(hi); /* 2..31 */
        const uint32_t dh = (hi << s) | (lo >> (32 - s));
        const uint32_t q = ((caps_bm_recip_q32(dh) >> 2) | (1u << 30)) >> (32 - s);
        /* q <= 2^30: 2q + 1 fits 32 bits, (2q + 1) sum <= 2^63 + 2 sum < 2^64 */
        const uint32_t q2 = 2u * q + 1u;
        const uint32_t th = (uint32_t)(((uint64_t)q2 * lo) >> 32) + q2 * hi;
        return q + 1u - (th >> 31);
    }
    if (hi == 0) {
        if (lo <= (1u << 30)) {
            return 0xFFFFFFFFu;
        }
        const int32_t s = caps_bm_clz32(lo); /* 0 or 1 (the s above minus 32) */
        const uint32_t q = ((caps_bm_recip_q32(lo << s) >> 1) | 0x80000000u) >> (1 - s);
        /* x = q sum + floor(sum/2) <= 2^62 + sum: bit 62 is the check, and
         * x + sum is the check of q + 1 */
        const uint64_t x = (uint64_t)q * lo + (lo >> 1);
        return q + 2u - (uint32_t)(x >> 62) - (uint32_t)((x + lo) >> 62);
    }
    /* sum >= 2^62: the quotient is 1 up to 2^63, 0 above */
    return sum <= ((uint64_t)1 << 63) ? 1u : 0u;
}

/* caps_nn_softmax_q15 with a 32-bit reciprocal: (e * recip + 2^46) >> 47,
 * the low word of the product cannot carry into bit 47. */
CAPS_BM_INLINE int32_t caps_bm_softmax_q15(uint32_t e, uint32_t recip)
{
    const uint32_t hi = (uint32_t)(((uint64_t)e * recip) >> 32);
    return (int32_t)((hi + (1u << 14)) >> 15);
}

/* Requantization split for inner loops: caps_nn_requantize(x, M, shift)
 * == (caps_bm_mulhi_round(x2, M) + half + (x < 0 ? fix : 0)) >> rshift
 * with x2 = x << lshift, for every |x| <= max_abs given to
 * caps_bm_requant_init when its `fast` is 1.  Proof sketch: for |x| < 2^30
 * SRDHM(x, M) = (2x M + 2^31) >> 32 (gemmlowp's nudge toward zero and the
 * truncating division cancel); RDBPOT(y, e) = (y + 2^(e-1) - [y < 0]) >> e
 * for e >= 1, and [y < 0] may be replaced by [x < 0] because x < 0 with
 * y = 0 rounds to 0 either way. */
typedef struct {
    int32_t multiplier;
    int32_t lshift; /* applied to x: 1 + max(shift, 0) (the doubling folded in) */
    int32_t half;   /* 2^(rshift-1), or 0 */
    int32_t fix;    /* -1 when rshift > 0 (subtract 1 for negative x), else 0 */
    int32_t rshift; /* max(-shift, 0) */
    int32_t fast;   /* 1: the split is exact for |x| <= max_abs */
} caps_bm_requant;

CAPS_BM_INLINE caps_bm_requant caps_bm_requant_init(int32_t multiplier, int32_t shift,
                                                    int64_t max_abs)
{
    caps_bm_requant q;
    const int32_t in_range = shift >= -31 && shift <= 30;
    const int32_t s = in_range ? shift : 0; /* fields of an out-of-range shift: unused */
    q.multiplier = multiplier;
    q.lshift = 1 + (s > 0 ? s : 0);
    q.rshift = s < 0 ? -s : 0;
    q.half = q.rshift > 0 ? (int32_t)(1u << (q.rshift - 1)) : 0;
    q.fix = q.rshift > 0 ? -1 : 0;
    /* |x << (lshift - 1)| < 2^30, multiplier >= 0, shift in range; max_abs
     * may be far above 2^33 (a carry with shift 30), so the bound is
     * shifted, not max_abs */
    q.fast = multiplier >= 0 && in_range && max_abs >= 0 &&
             max_abs < (((int64_t)1 << 30) >> (q.lshift - 1));
    return q;
}

/* (a * b + 2^31) >> 32 (signed): one SMMULR on Arm. */
CAPS_BM_INLINE int32_t caps_bm_mulhi_round(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}

/* Generic-C use of the split (the backends inline their own versions). */
CAPS_BM_INLINE int32_t caps_bm_requantize(int32_t x, const caps_bm_requant *q)
{
    const int32_t y = caps_bm_mulhi_round((int32_t)((uint32_t)x << q->lshift), q->multiplier);
    return (y + q->half + ((x >> 31) & q->fix)) >> q->rshift;
}

/* Self-attention couplings of one input capsule from its agreements a
 * [n_out] (largest mx, smallest mn): the Q16 exponents of the differences
 * to mx (the split requantization when it is exact for mx - mn), their
 * exponentials into expv, the reciprocal of their sum, Q15 couplings plus
 * the Q15 bias, shifted right by coupling_shift (rounding) and saturated
 * to int16 into out: caps_self_attention_s8's step 3 of
 * docs/quantization.md, with the fast exact primitives above. */
CAPS_BM_INLINE void caps_bm_attention_couplings(const int32_t *a, int32_t n_out, int32_t mx,
                                                int32_t mn, const caps_nn_requant *exp_beta,
                                                int32_t coupling_shift, const int32_t *bias,
                                                uint32_t *expv, int16_t *out)
{
    const caps_bm_requant q =
        caps_bm_requant_init(exp_beta->multiplier, exp_beta->shift, (int64_t)mx - mn);
    uint64_t total = 0;
    for (int32_t j = 0; j < n_out; ++j) {
        const int32_t d = mx - a[j]; /* 0 .. 2^30 */
        const int32_t w = q.fast ? caps_bm_requantize(d, &q)
                                 : caps_nn_requantize(d, exp_beta->multiplier, exp_beta->shift);
        expv[j] = caps_bm_exp2_neg_q30(w);
        total += expv[j];
    }
    const uint32_t recip = caps_bm_softmax_recip(total); /* total >= 2^30 */
    const int32_t half = coupling_shift > 0 ? 1 << (coupling_shift - 1) : 0;
    for (int32_t j = 0; j < n_out; ++j) {
        /* |c + bias| <= 2^15 + 2^24 */
        const int32_t c = caps_bm_softmax_q15(expv[j], recip) + bias[j];
        out[j] = caps_nn_sat_s16((c + half) >> coupling_shift);
    }
}

/* Step 4 of the self-attention layer for one element: the weighted sum
 * shifted right by p, requantized to int16 s. */
CAPS_BM_INLINE int16_t caps_bm_attention_s(int64_t acc, int32_t p, const caps_nn_requant *s)
{
    const int32_t a = caps_nn_sat_s32(caps_nn_round_shift_s64(acc, p));
    return caps_nn_sat_s16(caps_nn_requantize(a, s->multiplier, s->shift));
}

#endif /* TFLM_CAPS_CAPS_NN_BACKEND_MATH_H */
