/*
 * Cortex-M predictions from packed 4-bit weights, bit-exact with
 * src/portable/caps_predictions_s4.c.  Weights are read a word (8
 * nibbles) at a time straight from the model; nothing is unpacked into RAM.
 *
 * Each word is XORed with 0x88888888, which turns every nibble into w + 8
 * in [0, 15] (no sign extension); the bias 8 is taken back once per input
 * capsule, as -8 sum_k 2 (u_k - zp) (caps_nn_int4.h).  One AND with a
 * shifted operand then gives two nibbles in the halfwords of a register:
 * (t >> 4m) & 0x000F000F holds elements m and m + 4 of the word.
 *
 *  - dim_in 4, dim_out even: a word is rows d and d + 1 of one output
 *    capsule, so the halfwords are the two rows at the same k.  Four
 *    32-bit MLAs by 2 (u_k - zp) accumulate both rows at once (SIMD within
 *    a register): the low halfword is row d's doubled sum exactly (|sum|
 *    < 2^15), the rest row d + 1's.  Per two rows: LDR, EOR, 4 AND, 4 MLA,
 *    SXTH, SUB, ASR (no DSP extension needed).
 *  - dim_in a multiple of 8: a word is 8 inputs of one row, the halfwords
 *    inputs m and m + 4, paired by SMLAD with the input prepared as
 *    (2 (u_m - zp), 2 (u_{m+4} - zp)).  Per 8 weights: LDR, EOR, 4 AND,
 *    4 SMLAD (the int8 kernel: LDRD, 4 SXTB16, 4 SMLAD).
 *  - anything else, or a positive shift: one nibble at a time, reference
 *    requantization.
 * The doubled sums feed the one-SMMLAR requantization of the int8 kernel
 * (caps_cm_requant2).
 */
#include "../common/caps_nn_int4.h"
#include "caps_cm_internal.h"

#define S4_LANES 0x000F000Fu

/* Hides a value's origin from the compiler (keeps a constant in a register). */
#if defined(__GNUC__)
#define CAPS_CM_OPAQUE(x) __asm__("" : "+r"(x))
#else
#define CAPS_CM_OPAQUE(x) ((void)0)
#endif

/* Loops with constant trip counts, unrolled into straight code. */
#if defined(__clang__)
#define CAPS_S4_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define CAPS_S4_UNROLL _Pragma("GCC unroll 8")
#else
#define CAPS_S4_UNROLL
#endif

/* Requantization of output capsule j (cached for the first
 * CAPS_CM_PRED_CACHED; shift <= 0 when pc->all_fast). */
CAPS_CM_INLINE void rq_of(const caps_cm_pred *pc, int32_t j, int32_t *mult, int32_t *half,
                          int32_t *rshift)
{
    if (j < CAPS_CM_PRED_CACHED) {
        *mult = pc->rq[j].mult;
        *half = pc->rq[j].half;
        *rshift = pc->rq[j].rshift;
        return;
    }
    const int32_t q = pc->num_scales == 1 ? 0 : j;
    *mult = pc->multipliers[q];
    *rshift = -pc->shifts[q];
    *half = *rshift > 0 ? (int32_t)(1u << (*rshift - 1)) : 0;
}

CAPS_CM_INLINE int32_t requant2(int32_t acc2, int32_t mult, int32_t half, int32_t rshift)
{
    return rshift > 0 ? caps_cm_requant2(acc2, mult, half, rshift, 1)
                      : caps_cm_requant2(acc2, mult, 0, 0, 0);
}

/* Rows d and d + 1 of dim_in 4 from one weight word: its nibbles biased
 * by the EOR, MLAs by the doubled inputs x_k accumulate both rows in the
 * halfwords of one register (bias: -8 sum x in both halfwords).  |row
 * sums| < 2^15, so the low halfword is row d's sum exactly, and what it
 * borrowed from the high one is given back by the subtraction. */
CAPS_CM_INLINE void pair_rows(const int8_t **w, int8_t **out, int32_t x0, int32_t x1, int32_t x2,
                              int32_t x3, uint32_t bias, uint32_t m, int32_t mult, int32_t half,
                              int32_t rshift, const int32_t fix)
{
    const uint32_t t = caps_cm_read_s8x4(*w) ^ CAPS_NN_S4_BIAS_FLIP;
    *w += 4;
    uint32_t acc = bias + (t & m) * (uint32_t)x0;
    acc += ((t >> 4) & m) * (uint32_t)x1;
    acc += ((t >> 8) & m) * (uint32_t)x2;
    acc += ((t >> 12) & m) * (uint32_t)x3;
    const int32_t lo = (int32_t)(int16_t)(acc & 0xFFFFu);
    const int32_t hi = (int32_t)(acc - (uint32_t)lo) >> 16;
    if (fix) {
        (*out)[0] = (int8_t)caps_cm_requant2(lo, mult, half, rshift, 1);
        (*out)[1] = (int8_t)caps_cm_requant2(hi, mult, half, rshift, 1);
    } else {
        (*out)[0] = (int8_t)requant2(lo, mult, half, rshift);
        (*out)[1] = (int8_t)requant2(hi, mult, half, rshift);
    }
    *out += 2;
}

/* dim_in 4, rows = dim_out even (a compile-time constant where it can
 * be), n_in consecutive input capsules.  fix: every output capsule's
 * requantization cached with rshift > 0 (one pointer walks them, no
 * branch per output). */
CAPS_CM_INLINE void pairs4(const caps_cm_pred *pc, const int8_t *input, const int8_t *w,
                           int8_t *out, int32_t n_in, const int32_t rows, const int32_t fix)
{
    const int32_t zp = pc->zp;
    const int32_t n_out = pc->n_out; /* a local: the int8 stores may alias *pc */
    const size_t md = (size_t)n_out * (size_t)rows;
    const int8_t *const input_end = input + 4 * (size_t)n_in;
    /* the lane mask in a register: AND with a shifted operand is one
     * instruction (with the immediate, the compiler's choice, two) */
    uint32_t m = S4_LANES;
    CAPS_CM_OPAQUE(m);
    do {
        const int32_t x0 = 2 * (input[0] - zp), x1 = 2 * (input[1] - zp);
        const int32_t x2 = 2 * (input[2] - zp), x3 = 2 * (input[3] - zp);
        input += 4;
        /* mod 2^32: the lanes are recovered exactly */
        const uint32_t bias = (uint32_t)(-8 * (x0 + x1 + x2 + x3)) * 0x00010001u;
        int8_t *const out_end = out + md;
        if (fix) {
            const caps_cm_rq *rq = pc->rq;
            do {
                const int32_t mult = rq->mult, half = rq->half, rshift = rq->rshift;
                ++rq;
                CAPS_S4_UNROLL
                for (int32_t d = 0; d < rows; d += 2) {
                    pair_rows(&w, &out, x0, x1, x2, x3, bias, m, mult, half, rshift, 1);
                }
            } while (out != out_end);
        } else {
            for (int32_t j = 0; j < n_out; ++j) {
                int32_t mult, half, rshift;
                rq_of(pc, j, &mult, &half, &rshift);
                for (int32_t d = 0; d < rows; d += 2) {
                    pair_rows(&w, &out, x0, x1, x2, x3, bias, m, mult, half, rshift, 0);
                }
            }
        }
    } while (input != input_end);
}

/* Doubled dot product of one 8-input word t (nibbles biased) with the
 * prepared input pairs in0..in3 (m: the lane mask). */
CAPS_CM_INLINE int32_t dot8(uint32_t t, uint32_t in0, uint32_t in1, uint32_t in2, uint32_t in3,
                            uint32_t m, int32_t acc)
{
    acc = caps_cm_smlad(t & m, in0, acc);
    acc = caps_cm_smlad((t >> 4) & m, in1, acc);
    acc = caps_cm_smlad((t >> 8) & m, in2, acc);
    return caps_cm_smlad((t >> 12) & m, in3, acc);
}

/* dim_in = k_in a multiple of 8 (8 a compile-time constant), one input
 * capsule: per group of 8 inputs the pairs (x_m, x_{m+4}), m = 0..3, in
 * the scratch (for dim_in 8 in registers); fix as for pairs4. */
CAPS_CM_INLINE void rows8(const caps_cm_pred *pc, const int8_t *u, const int8_t *w, int8_t *out,
                          const int32_t k_in, const int32_t fix)
{
    const int32_t zp = pc->zp;
    uint32_t *in = pc->u2;
    int32_t sum = 0;
    for (int32_t g = 0; g < k_in; g += 8) {
        for (int32_t m = 0; m < 4; ++m) {
            const int32_t a = 2 * (u[g + m] - zp), b = 2 * (u[g + m + 4] - zp);
            in[g / 2 + m] = ((uint32_t)a & 0xFFFFu) | ((uint32_t)b << 16);
            sum += a + b;
        }
    }
    const int32_t bias = -8 * sum;
    const uint32_t in0 = in[0], in1 = in[1], in2 = in[2], in3 = in[3];
    uint32_t m = S4_LANES;
    CAPS_CM_OPAQUE(m);
    /* locals: the int8 stores may alias *pc */
    const int32_t n_out = pc->n_out, rows = pc->dim_out;
    for (int32_t j = 0; j < n_out; ++j) {
        int32_t mult, half, rshift;
        rq_of(pc, j, &mult, &half, &rshift);
        int8_t *const out_end = out + rows;
        while (out != out_end) {
            int32_t acc;
            if (k_in == 8) {
                acc = dot8(caps_cm_read_s8x4(w) ^ CAPS_NN_S4_BIAS_FLIP, in0, in1, in2, in3, m,
                           bias);
                w += 4;
            } else {
                acc = bias;
                for (int32_t g = 0; g < k_in; g += 8) {
                    const uint32_t *p = in + g / 2;
                    acc = dot8(caps_cm_read_s8x4(w) ^ CAPS_NN_S4_BIAS_FLIP, p[0], p[1], p[2],
                               p[3], m, acc);
                    w += 4;
                }
            }
            *out++ = (int8_t)(fix ? caps_cm_requant2(acc, mult, half, rshift, 1)
                                  : requant2(acc, mult, half, rshift));
        }
    }
}

/* Any shape and scale: one nibble at a time, reference requantization. */
static void plain(const caps_cm_pred *pc, const int8_t *u, const int8_t *w, int8_t *out)
{
    size_t e = 0;
    for (int32_t j = 0; j < pc->n_out; ++j) {
        const int32_t q = pc->num_scales == 1 ? 0 : j;
        for (int32_t d = 0; d < pc->dim_out; ++d) {
            int32_t acc = 0;
            for (int32_t k = 0; k < pc->dim_in; ++k) {
                acc += caps_nn_s4_at(w, e++) * (u[k] - pc->zp);
            }
            *out++ = caps_nn_sat_s8(caps_nn_requantize(acc, pc->multipliers[q], pc->shifts[q]));
        }
    }
}

/* u_hat(.|i) of input capsules [0, n_in) from their packed blocks. */
void caps_cm_predict_layer_s4(const caps_cm_pred *pc, const int8_t *input, const int8_t *weights,
                              int8_t *u_hat, int32_t n_in)
{
    const size_t md = (size_t)pc->n_out * (size_t)pc->dim_out;
    const size_t block = md * (size_t)pc->dim_in / 2u; /* bytes of W[i] */
    const int32_t k = pc->dim_in, r = pc->dim_out;
    if (n_in < 1) {
        return;
    }
    if (pc->all_fast && k == 4 && (r & 1) == 0) {
        if (pc->rq_cached_fix && r == 6) {
            pairs4(pc, input, weights, u_hat, n_in, 6, 1);
        } else if (pc->rq_cached_fix) {
            pairs4(pc, input, weights, u_hat, n_in, r, 1);
        } else {
            pairs4(pc, input, weights, u_hat, n_in, r, 0);
        }
        return;
    }
    for (int32_t i = 0; i < n_in; ++i) {
        const int8_t *u = input + (size_t)i * (size_t)k;
        const int8_t *w = weights + (size_t)i * block;
        int8_t *out = u_hat + (size_t)i * md;
        if (pc->all_fast && k == 8 && pc->rq_cached_fix) {
            rows8(pc, u, w, out, 8, 1);
        } else if (pc->all_fast && (k & 7) == 0) {
            rows8(pc, u, w, out, k, 0);
        } else {
            plain(pc, u, w, out);
        }
    }
}

caps_nn_status caps_predictions_s4(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                   const caps_predictions_params *params, const int8_t *input,
                                   const int8_t *weights, int8_t *u_hat)
{
    if (caps_predictions_s4_args_check(ctx, dims, params, input, weights, u_hat) !=
        CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_cm_pred pc;
    caps_cm_pred_init(&pc, dims, params, ctx->buf);
    pc.weight_bits = 4;
    caps_cm_predict_layer_s4(&pc, input, weights, u_hat, dims->n_in);
    return CAPS_NN_SUCCESS;
}
