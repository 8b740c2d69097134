/*
 * Internals shared by the Cortex-M backend's source files (not installed).
 */
#ifndef TFLM_CAPS_CM_INTERNAL_H
#define TFLM_CAPS_CM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "caps_cm_dsp.h"
#include "../common/caps_nn_backend_math.h"
#include "../common/caps_nn_scratch.h"
#include "tflm_caps/caps_nn_functions.h"

/* Requantization of an accumulator that is already doubled (acc2 = 2 acc),
 * exact by the split of caps_bm_requant (|acc| < 2^30, shift <= 0):
 * SMMLAR gives SRDHM plus the rounding half, adding the sign bit of acc2
 * gives RDBPOT's ties-away-from-zero, then the right shift and SSAT. */
CAPS_CM_INLINE int32_t caps_cm_requant2(int32_t acc2, int32_t multiplier, int32_t half,
                                        int32_t rshift, int32_t has_fix)
{
    int32_t t = caps_cm_smmlar(acc2, multiplier, half);
    if (has_fix) {
        t += acc2 >> 31;
    }
    return caps_cm_ssat8(t >> rshift);
}

/* Requantization by the split of caps_bm_requant (q->fast checked). */
CAPS_CM_INLINE int32_t caps_cm_requant(int32_t x, const caps_bm_requant *q)
{
    const int32_t t = caps_cm_smmlar((int32_t)((uint32_t)x << q->lshift), q->multiplier, q->half);
    return (t + ((x >> 31) & q->fix)) >> q->rshift;
}

/* sum (x - zp)^2 of one capsule: SXTAB16 folds the zero point in, SMLAD
 * squares and adds two lanes. */
CAPS_CM_INLINE uint32_t caps_cm_squared_norm(const int8_t *x, int32_t dim, int32_t zp)
{
    int32_t sq = 0;
    int32_t k = 0;
#if CAPS_CM_DSP
    const uint32_t nzp = (uint32_t)(uint16_t)(int16_t)(-zp) * 0x00010001u;
    for (; k + 4 <= dim; k += 4) {
        const uint32_t w = caps_cm_read_s8x4(x + k);
        const uint32_t a = caps_cm_sxtab16(nzp, w);
        const uint32_t b = caps_cm_sxtab16_ror8(nzp, w);
        sq = caps_cm_smlad(a, a, sq);
        sq = caps_cm_smlad(b, b, sq);
    }
#endif
    for (; k < dim; ++k) {
        const int32_t y = x[k] - zp;
        sq += y * y;
    }
    return (uint32_t)sq;
}

/* Squash gain-table index of sq (caps_nn_squash_index), shared by both
 * squash variants: shift = max(0, 24 - clz(sq)) (USAT clamps the negative
 * counts of small sq, including clz(0) = 32). */
CAPS_CM_INLINE uint32_t caps_cm_squash_table_index(uint32_t sq)
{
#if CAPS_CM_DSP
    uint32_t lz;
    __asm__("clz %0, %1" : "=r"(lz) : "r"(sq)); /* 32 for 0, unlike __builtin_clz */
    const uint32_t shift = (uint32_t)__usat(24 - (int32_t)lz, 5);
#else
    const uint32_t shift = (uint32_t)caps_nn_squash_shift(sq);
#endif
    return (sq >> shift) + (shift << CAPS_NN_SQUASH_LUT_BITS);
}

/* Output capsules whose requantization is cached in caps_cm_pred. */
#define CAPS_CM_PRED_CACHED 32

/* Requantization of one output capsule of the predictions (shift <= 0);
 * the field order is that of the LDM that loads it (caps_predictions_s8.c). */
typedef struct {
    int32_t mult;
    int32_t half;   /* 2^(rshift-1), or 0 */
    int32_t rshift; /* -shift */
} caps_cm_rq;

/* Prepared predictions of one layer: per output capsule requantization and
 * the doubled, zero-point-offset input capsule in SXTB16 lane order. */
typedef struct {
    int32_t n_out;
    int32_t dim_out;
    int32_t dim_in;
    int32_t zp;
    int32_t num_scales;
    const int32_t *multipliers;
    const int32_t *shifts;
    int32_t all_fast; /* every scale has shift <= 0: the SMMLAR path is exact */
    int32_t in_regs;  /* dim_in 4 or 8, n_out cached, every rshift > 0: the
                         input capsule stays in registers (caps_predictions_s8.c) */
    uint32_t *u2;     /* scratch: dim_in int16, 4-byte aligned */
    caps_cm_rq rq[CAPS_CM_PRED_CACHED]; /* per output capsule, shift <= 0 */
    int32_t weight_bits; /* 8, or 4: packed weights (caps_predictions_s4.c) */
    int32_t rq_cached_fix; /* all_fast, n_out cached and every rshift > 0: the
                              requantization needs no branch (caps_predictions_s4.c) */
} caps_cm_pred;

/* Prepares `pc` from checked params; scratch is the predictions context
 * (caps_predictions_s8_get_buffer_size bytes). */
void caps_cm_pred_init(caps_cm_pred *pc, const caps_class_caps_dims *dims,
                       const caps_predictions_params *params, void *scratch);

/* u_hat(.|i) [n_out*dim_out] = requant(W[i] (u_i - zp)). */
void caps_cm_predict_capsule(const caps_cm_pred *pc, const int8_t *u_i, const int8_t *w_i,
                             int8_t *out);

/* All predictions [n_in, n_out*dim_out] of a layer (stored mode), or of
 * n_in consecutive input capsules; weights point at W[first]. */
void caps_cm_predict_layer(const caps_cm_pred *pc, const int8_t *input, const int8_t *weights,
                           int8_t *u_hat, int32_t n_in);

/* The same from packed 4-bit weights (pc->weight_bits 4; caps_predict_layer
 * forwards there). */
void caps_cm_predict_layer_s4(const caps_cm_pred *pc, const int8_t *input, const int8_t *weights,
                              int8_t *u_hat, int32_t n_in);

/* Where W[i] starts: int8 or packed 4-bit weights. */
CAPS_CM_INLINE const int8_t *caps_cm_weights_of(const caps_cm_pred *pc, const int8_t *weights,
                                                int32_t i)
{
    const size_t block = (size_t)pc->n_out * (size_t)pc->dim_out * (size_t)pc->dim_in;
    return weights + (size_t)i * (pc->weight_bits == 4 ? block / 2u : block);
}

#endif /* TFLM_CAPS_CM_INTERNAL_H */
