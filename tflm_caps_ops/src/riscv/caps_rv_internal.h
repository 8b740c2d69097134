/*
 * Internals shared by the RISC-V backend's source files (not installed).
 */
#ifndef TFLM_CAPS_RV_INTERNAL_H
#define TFLM_CAPS_RV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../common/caps_nn_backend_math.h"
#include "../common/caps_nn_scratch.h"
#include "tflm_caps/caps_nn_backend_riscv.h"
#include "tflm_caps/caps_nn_functions.h"

#define CAPS_RV_INLINE CAPS_NN_INLINE

/* Four int8 from any address. */
CAPS_RV_INLINE uint32_t caps_rv_read_s8x4(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#if defined(CAPS_NN_PULP_SDOTP)
/* Xpulp: acc + a0 b0 + a1 b1 + a2 b2 + a3 b3 in one instruction. */
typedef signed char caps_rv_v4s __attribute__((vector_size(4)));

CAPS_RV_INLINE int32_t caps_rv_sdot4(uint32_t a, uint32_t b, int32_t acc)
{
    caps_rv_v4s va, vb;
    memcpy(&va, &a, 4);
    memcpy(&vb, &b, 4);
    return __builtin_pulp_sdotsp4(va, vb, acc);
}
#else
CAPS_RV_INLINE int32_t caps_rv_sdot4(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + (int32_t)(int8_t)a * (int8_t)b +
           (int32_t)(int8_t)(a >> 8) * (int8_t)(b >> 8) +
           (int32_t)(int8_t)(a >> 16) * (int8_t)(b >> 16) +
           (int32_t)(int8_t)(a >> 24) * (int8_t)(b >> 24);
}
#endif

/* Dot product of two int8 vectors. */
CAPS_RV_INLINE int32_t caps_rv_dot_s8(const int8_t *a, const int8_t *b, int32_t n)
{
    int32_t acc = 0;
    int32_t k = 0;
#if defined(CAPS_NN_PULP_SDOTP)
    for (; k + 4 <= n; k += 4) {
        acc = caps_rv_sdot4(caps_rv_read_s8x4(a + k), caps_rv_read_s8x4(b + k), acc);
    }
#endif
    for (; k < n; ++k) {
        acc += (int32_t)a[k] * b[k];
    }
    return acc;
}

/* Saturate to int8. */
CAPS_RV_INLINE int32_t caps_rv_sat8(int32_t x) { return x > 127 ? 127 : (x < -128 ? -128 : x); }

/* Requantization: the exact split of caps_bm_requant when it applies. */
CAPS_RV_INLINE int32_t caps_rv_requant(int32_t x, const caps_bm_requant *q, int32_t multiplier,
                                       int32_t shift)
{
    return q->fast ? caps_bm_requantize(x, q) : caps_nn_requantize(x, multiplier, shift);
}

/* max(0, bit length(sq) - 8): the right shift of sq in its squash table
 * index (both squash variants). */
CAPS_RV_INLINE uint32_t caps_rv_squash_index_shift(uint32_t sq)
{
#if defined(__riscv_zbb)
    return sq < 256u ? 0u : 24u - (uint32_t)__builtin_clz(sq);
#else
    uint32_t t = sq >> (CAPS_NN_SQUASH_LUT_BITS + 1), s = 0;
    if (t >= 1u << 16) { s += 16; t >>= 16; }
    if (t >= 1u << 8) { s += 8; t >>= 8; }
    if (t >= 1u << 4) { s += 4; t >>= 4; }
    if (t >= 1u << 2) { s += 2; t >>= 2; }
    if (t >= 1u << 1) { s += 1; t >>= 1; }
    return s + t;
#endif
}

/* Squash table index of the capsule x[0..dim) (both squash variants). */
CAPS_RV_INLINE uint32_t caps_rv_squash_table_index(const int8_t *x, int32_t dim, int32_t zp)
{
    uint32_t sq = 0;
    for (int32_t k = 0; k < dim; ++k) {
        const int32_t y = x[k] - zp;
        sq += (uint32_t)(y * y);
    }
    const uint32_t shift = caps_rv_squash_index_shift(sq);
    return (sq >> shift) + (shift << CAPS_NN_SQUASH_LUT_BITS);
}

/* v = x scaled by the capsule's gain g, each element as
 * ((y G) >> 16 + 128) >> 8 with the 32x32 high multiply (both squash
 * variants); in place is safe: element k is read before it is written. */
CAPS_RV_INLINE void caps_rv_squash_apply(const int8_t *x, int8_t *v, int32_t dim, int32_t zp,
                                         int32_t g)
{
    for (int32_t k = 0; k < dim; ++k) {
        const int32_t y = x[k] - zp;
        const int32_t hi = (int32_t)(((int64_t)g * (y * 65536)) >> 32); /* mulh */
        v[k] = (int8_t)caps_rv_sat8((hi + 128) >> 8);
    }
}

/* Prepared predictions (per output capsule requantization). */
typedef struct {
    int32_t n_in;
    int32_t n_out;
    int32_t dim_out;
    int32_t dim_in;
    int32_t zp;
    int32_t num_scales;
    const int32_t *multipliers;
    const int32_t *shifts;
    int32_t weight_bits; /* 8, or 4: packed weights (caps_predictions_s4.c) */
} caps_rv_pred;

void caps_rv_pred_init(caps_rv_pred *pc, const caps_class_caps_dims *dims,
                       const caps_predictions_params *params);

/* u_hat(.|i) [n_out*dim_out] of one input capsule (one core's work) from
 * its block W[i] (int8, or packed 4-bit when pc->weight_bits is 4). */
void caps_rv_predict_capsule(const caps_rv_pred *pc, const int8_t *u_i, const int8_t *w_i,
                             int8_t *out);

/* The same from a packed 4-bit block (caps_rv_predict_capsule forwards there). */
void caps_rv_predict_capsule_s4(const caps_rv_pred *pc, const int8_t *u_i, const int8_t *w_i,
                                int8_t *out);

/* Where W[i] starts: int8 or packed 4-bit weights. */
CAPS_RV_INLINE const int8_t *caps_rv_weights_of(const caps_rv_pred *pc, const int8_t *weights,
                                                size_t i)
{
    const size_t block = (size_t)pc->n_out * (size_t)pc->dim_out * (size_t)pc->dim_in;
    return weights + i * (pc->weight_bits == 4 ? block / 2u : block);
}

/* All predictions [n_in, n_out*dim_out], input capsules split over the cores. */
void caps_rv_predict_all(const caps_rv_pred *pc, const int8_t *input, const int8_t *weights,
                         int8_t *u_hat);

#endif /* TFLM_CAPS_RV_INTERNAL_H */
