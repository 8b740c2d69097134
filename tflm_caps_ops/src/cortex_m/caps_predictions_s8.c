/*
 * Cortex-M predictions u_hat(j|i) = W_ij (u_i - zp), CMSIS-NN style.
 *
 * Per input capsule i the whole contiguous (n_out*dim_out) x dim_in block
 * W[i] is one matrix-vector product.  The input capsule is offset by the
 * zero point and doubled once (2 (u - zp) fits int16), stored as halfword
 * pairs in SXTB16 lane order, so each 4 weights cost one load, two SXTB16
 * and two SMLAD, and the accumulator arrives already doubled for the
 * one-SMMLAR requantization (caps_cm_requant2).  The loops are
 * specialized (fully unrolled) for the dims of the published CapsNets.
 *
 * Built with CAPS_NN_USE_CMSIS_NN (and CMSIS-NN linked, scalar/DSP build),
 * the product goes to arm_nn_vec_mat_mult_t_s8 instead, which computes the
 * same integers for shift <= 0 (CMSIS-NN's requantization rounds like
 * TFLite's; do not define CMSIS_NN_USE_SINGLE_ROUNDING).
 */
#include "caps_cm_internal.h"

#if defined(CAPS_NN_USE_CMSIS_NN)
#include "caps_cm_cmsis_nn.h"
#endif

void caps_cm_pred_init(caps_cm_pred *pc, const caps_class_caps_dims *dims,
                       const caps_predictions_params *params, void *scratch)
{
    pc->n_out = dims->n_out;
    pc->dim_out = dims->dim_out;
    pc->dim_in = dims->dim_in;
    pc->zp = params->input_zp;
    pc->num_scales = params->num_scales;
    pc->multipliers = params->multipliers;
    pc->shifts = params->shifts;
    pc->all_fast = 1;
    for (int32_t j = 0; j < params->num_scales; ++j) {
        if (params->shifts[j] > 0) {
            pc->all_fast = 0;
        }
    }
    for (int32_t j = 0; j < dims->n_out && j < CAPS_CM_PRED_CACHED; ++j) {
        const int32_t q = params->num_scales == 1 ? 0 : j;
        pc->mult[j] = params->multipliers[q];
        pc->rshift[j] = params->shifts[q] < 0 ? -params->shifts[q] : 0;
        pc->half[j] = pc->rshift[j] > 0 ? (int32_t)(1u << (pc->rshift[j] - 1)) : 0;
    }
    /* the scratch has 8 bytes of slack for this */
    pc->u2 = (uint32_t *)caps_cm_align(scratch, 4);
}

/* Doubled offset input: per 4 inputs (u0, u2) and (u1, u3), then the tail
 * as plain int16. */
static void prepare_input(const caps_cm_pred *pc, const int8_t *u)
{
    const int32_t k4 = pc->dim_in & ~3;
#if CAPS_CM_DSP
    const uint32_t nzp = (uint32_t)(uint16_t)(int16_t)(-pc->zp) * 0x00010001u;
#endif
    uint32_t *dst = pc->u2;
    int32_t k = 0;
    for (; k < k4; k += 4) {
        const uint32_t w = caps_cm_read_s8x4(u + k);
#if CAPS_CM_DSP
        const uint32_t a = __sxtab16(nzp, w);
        const uint32_t b = caps_cm_sxtab16_ror8(nzp, w);
        dst[0] = __sadd16(a, a);
        dst[1] = __sadd16(b, b);
#else
        const int32_t v0 = 2 * (u[k] - pc->zp), v1 = 2 * (u[k + 1] - pc->zp);
        const int32_t v2 = 2 * (u[k + 2] - pc->zp), v3 = 2 * (u[k + 3] - pc->zp);
        (void)w;
        dst[0] = ((uint32_t)v0 & 0xFFFFu) | ((uint32_t)v2 << 16);
        dst[1] = ((uint32_t)v1 & 0xFFFFu) | ((uint32_t)v3 << 16);
#endif
        dst += 2;
    }
    int16_t *tail = (int16_t *)dst;
    for (; k < pc->dim_in; ++k) {
        *tail++ = (int16_t)(2 * (u[k] - pc->zp));
    }
}

/* Rows of one output capsule (same requantization).  k_in and rows are
 * compile-time constants at the specialized call sites below, so the
 * compiler unrolls them completely; input pairs stay in registers. */
CAPS_CM_INLINE void capsule_rows(const uint32_t *restrict u2, const int8_t *restrict w,
                                 int8_t *restrict out, const int32_t k_in, const int32_t rows,
                                 int32_t mult, int32_t half, int32_t rshift, int32_t has_fix)
{
    const int32_t k4 = k_in & ~3;
    for (int32_t d = 0; d < rows; ++d) {
        int32_t acc = 0;
        int32_t k = 0;
        for (; k < k4; k += 4) {
            const uint32_t x = caps_cm_read_s8x4(w + k);
            acc = caps_cm_smlad(caps_cm_sxtb16(x), u2[k / 2], acc);
            acc = caps_cm_smlad(caps_cm_sxtb16_ror8(x), u2[k / 2 + 1], acc);
        }
        const int16_t *tail = (const int16_t *)(u2 + k4 / 2);
        for (; k < k_in; ++k) {
            acc += (int32_t)w[k] * tail[k - k4];
        }
        out[d] = (int8_t)caps_cm_requant2(acc, mult, half, rshift, has_fix);
        w += k_in;
    }
}

/* All output capsules of one input capsule. */
CAPS_CM_INLINE void all_capsules(const caps_cm_pred *pc, const int8_t *w, int8_t *out,
                                 const int32_t k_in, const int32_t rows)
{
    const uint32_t *u2 = pc->u2;
    const int32_t n_out = pc->n_out;
    const int32_t cached = pc->n_out <= CAPS_CM_PRED_CACHED;
    for (int32_t j = 0; j < n_out; ++j) {
        int32_t mult, rshift, half;
        if (cached) {
            mult = pc->mult[j];
            rshift = pc->rshift[j];
            half = pc->half[j];
        } else {
            const int32_t q = pc->num_scales == 1 ? 0 : j;
            mult = pc->multipliers[q];
            rshift = -pc->shifts[q];
            half = rshift > 0 ? (int32_t)(1u << (rshift - 1)) : 0;
        }
        if (rshift > 0) {
            capsule_rows(u2, w, out, k_in, rows, mult, half, rshift, 1);
        } else {
            capsule_rows(u2, w, out, k_in, rows, mult, 0, 0, 0);
        }
        w += (size_t)rows * (size_t)k_in;
        out += rows;
    }
}

void caps_cm_predict_capsule(const caps_cm_pred *pc, const int8_t *u_i, const int8_t *w_i,
                             int8_t *out)
{
    if (!pc->all_fast) {
        /* a positive shift (real multiplier >= 1): plain requantization */
        for (int32_t j = 0; j < pc->n_out; ++j) {
            const int32_t q = pc->num_scales == 1 ? 0 : j;
            for (int32_t d = 0; d < pc->dim_out; ++d) {
                int32_t acc = 0;
                for (int32_t k = 0; k < pc->dim_in; ++k) {
                    acc += (int32_t)w_i[k] * (u_i[k] - pc->zp);
                }
                w_i += pc->dim_in;
                *out++ = caps_nn_sat_s8(
                    caps_nn_requantize(acc, pc->multipliers[q], pc->shifts[q]));
            }
        }
        return;
    }
#if defined(CAPS_NN_USE_CMSIS_NN)
    {
        const int32_t per_j = pc->num_scales != 1;
        const int32_t rows = per_j ? pc->dim_out : pc->n_out * pc->dim_out;
        const int32_t blocks = per_j ? pc->n_out : 1;
        for (int32_t j = 0; j < blocks; ++j) {
            (void)arm_nn_vec_mat_mult_t_s8(u_i, w_i, NULL, NULL, out, -pc->zp, 0,
                                           pc->multipliers[j], pc->shifts[j], pc->dim_in, rows,
                                           -128, 127, 1, 0);
            w_i += (size_t)rows * (size_t)pc->dim_in;
            out += rows;
        }
        return;
    }
#endif
    prepare_input(pc, u_i);
    /* shapes of the published CapsNets get fully unrolled loops */
    const int32_t k = pc->dim_in, r = pc->dim_out;
    if (k == 4 && r == 6) {
        all_capsules(pc, w_i, out, 4, 6);
    } else if (k == 8 && r == 16) {
        all_capsules(pc, w_i, out, 8, 16);
    } else if (k == 4 && r == 5) {
        all_capsules(pc, w_i, out, 4, 5);
    } else if (k == 8 && r == 8) {
        all_capsules(pc, w_i, out, 8, 8);
    } else if (k == 4) {
        all_capsules(pc, w_i, out, 4, r);
    } else if (k == 8) {
        all_capsules(pc, w_i, out, 8, r);
    } else {
        all_capsules(pc, w_i, out, k, r);
    }
}

/* Whole layer, output capsule outer (dim_in 4 or 8): the requantization of
 * capsule j stays in registers while every input capsule's rows of W[:, j]
 * are computed; the input capsule is offset and doubled again for each
 * (i, j), which costs less than reloading per-capsule constants. */
CAPS_CM_INLINE void layer_j_outer(const caps_cm_pred *pc, const int8_t *input,
                                  const int8_t *weights, int8_t *u_hat, int32_t n_in,
                                  const int32_t k_in, const int32_t rows, int32_t mult,
                                  int32_t half, int32_t rshift, const int32_t has_fix, int32_t j)
{
    const size_t md = (size_t)pc->n_out * (size_t)rows;
    const size_t wstride = md * (size_t)k_in;
    const uint32_t nzp = (uint32_t)(uint16_t)(int16_t)(-pc->zp) * 0x00010001u;
    const int8_t *w = weights + (size_t)j * (size_t)rows * (size_t)k_in;
    int8_t *out = u_hat + (size_t)j * (size_t)rows;
    for (int32_t i = 0; i < n_in; ++i) {
        uint32_t u2[4];
        for (int32_t c = 0; c < k_in / 4; ++c) {
            const uint32_t x = caps_cm_read_s8x4(input + 4 * c);
#if CAPS_CM_DSP
            const uint32_t a = __sxtab16(nzp, x);
            const uint32_t b = caps_cm_sxtab16_ror8(nzp, x);
            u2[2 * c] = __sadd16(a, a);
            u2[2 * c + 1] = __sadd16(b, b);
#else
            const int8_t *uu = input + 4 * c;
            (void)x;
            (void)nzp;
            u2[2 * c] = ((uint32_t)(2 * (uu[0] - pc->zp)) & 0xFFFFu) |
                        ((uint32_t)(2 * (uu[2] - pc->zp)) << 16);
            u2[2 * c + 1] = ((uint32_t)(2 * (uu[1] - pc->zp)) & 0xFFFFu) |
                            ((uint32_t)(2 * (uu[3] - pc->zp)) << 16);
#endif
        }
        const int8_t *wr = w;
        int32_t d = 0;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 3
#endif
        for (; d + 2 <= rows; d += 2) {
            const uint32_t x0 = caps_cm_read_s8x4(wr);
            const uint32_t x1 = caps_cm_read_s8x4(wr + k_in);
            int32_t acc0 = caps_cm_smuad(caps_cm_sxtb16(x0), u2[0]);
            int32_t acc1 = caps_cm_smuad(caps_cm_sxtb16(x1), u2[0]);
            acc0 = caps_cm_smlad(caps_cm_sxtb16_ror8(x0), u2[1], acc0);
            acc1 = caps_cm_smlad(caps_cm_sxtb16_ror8(x1), u2[1], acc1);
            if (k_in == 8) {
                const uint32_t y0 = caps_cm_read_s8x4(wr + 4);
                const uint32_t y1 = caps_cm_read_s8x4(wr + k_in + 4);
                acc0 = caps_cm_smlad(caps_cm_sxtb16(y0), u2[2], acc0);
                acc1 = caps_cm_smlad(caps_cm_sxtb16(y1), u2[2], acc1);
                acc0 = caps_cm_smlad(caps_cm_sxtb16_ror8(y0), u2[3], acc0);
                acc1 = caps_cm_smlad(caps_cm_sxtb16_ror8(y1), u2[3], acc1);
            }
            out[d] = (int8_t)caps_cm_requant2(acc0, mult, half, rshift, has_fix);
            out[d + 1] = (int8_t)caps_cm_requant2(acc1, mult, half, rshift, has_fix);
            wr += 2 * k_in;
        }
        if (d < rows) {
            const uint32_t x0 = caps_cm_read_s8x4(wr);
            int32_t acc0 = caps_cm_smuad(caps_cm_sxtb16(x0), u2[0]);
            acc0 = caps_cm_smlad(caps_cm_sxtb16_ror8(x0), u2[1], acc0);
            if (k_in == 8) {
                const uint32_t y0 = caps_cm_read_s8x4(wr + 4);
                acc0 = caps_cm_smlad(caps_cm_sxtb16(y0), u2[2], acc0);
                acc0 = caps_cm_smlad(caps_cm_sxtb16_ror8(y0), u2[3], acc0);
            }
            out[d] = (int8_t)caps_cm_requant2(acc0, mult, half, rshift, has_fix);
        }
        input += k_in;
        w += wstride;
        out += md;
    }
}

/* All predictions of a layer; false when the shape has no whole-layer
 * kernel (then per input capsule). */
static int predict_layer(const caps_cm_pred *pc, const int8_t *input, const int8_t *weights,
                         int8_t *u_hat, int32_t n_in)
{
    const int32_t k = pc->dim_in;
    if (!pc->all_fast || (k != 4 && k != 8)) {
        return 0;
    }
#if defined(CAPS_NN_USE_CMSIS_NN)
    return 0;
#endif
    const int32_t rows = pc->dim_out;
    for (int32_t j = 0; j < pc->n_out; ++j) {
        const int32_t q = pc->num_scales == 1 ? 0 : j;
        const int32_t mult = pc->multipliers[q];
        const int32_t rshift = -pc->shifts[q];
        const int32_t half = rshift > 0 ? (int32_t)(1u << (rshift - 1)) : 0;
        const int32_t fix = rshift > 0;
        /* the published shapes get fully unrolled rows */
#define CAPS_CM_LAYER(K, R)                                                                  \
        if (fix) {                                                                           \
            layer_j_outer(pc, input, weights, u_hat, n_in, K, R, mult, half, rshift, 1, j); \
        } else {                                                                             \
            layer_j_outer(pc, input, weights, u_hat, n_in, K, R, mult, 0, 0, 0, j);         \
        }
        if (k == 4 && rows == 6) {
            CAPS_CM_LAYER(4, 6)
        } else if (k == 8 && rows == 16) {
            CAPS_CM_LAYER(8, 16)
        } else if (k == 4) {
            CAPS_CM_LAYER(4, rows)
        } else {
            CAPS_CM_LAYER(8, rows)
        }
#undef CAPS_CM_LAYER
    }
    return 1;
}

void caps_cm_predict_layer(const caps_cm_pred *pc, const int8_t *input, const int8_t *weights,
                           int8_t *u_hat, int32_t n_in)
{
    if (predict_layer(pc, input, weights, u_hat, n_in)) {
        return;
    }
    const size_t md = (size_t)pc->n_out * (size_t)pc->dim_out;
    for (int32_t i = 0; i < n_in; ++i) {
        caps_cm_predict_capsule(pc, input + (size_t)i * (size_t)pc->dim_in,
                                weights + (size_t)i * md * (size_t)pc->dim_in, u_hat + (size_t)i * md);
    }
}

caps_nn_status caps_predictions_s8(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                   const caps_predictions_params *params, const int8_t *input,
                                   const int8_t *weights, int8_t *u_hat)
{
    if (caps_predictions_s8_args_check(ctx, dims, params, input, weights, u_hat) !=
        CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_cm_pred pc;
    caps_cm_pred_init(&pc, dims, params, ctx->buf);
    caps_cm_predict_layer(&pc, input, weights, u_hat, dims->n_in);
    return CAPS_NN_SUCCESS;
}
