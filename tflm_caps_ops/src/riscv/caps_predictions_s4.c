/*
 * RISC-V predictions from packed 4-bit weights, bit-exact with
 * src/portable/caps_predictions_s4.c; input capsules split over the cores
 * as for int8 (caps_rv_predict_all), weights read from the model as they
 * are (nothing unpacked into RAM).
 *
 * Nibbles are read biased by 8 (w + 8 = nibble ^ 8, no sign extension;
 * caps_nn_int4.h).  dim_in 4 with even dim_out: one 32-bit word is rows d
 * and d + 1 of one output capsule, and (t >> 4k) & 0x000F000F holds both
 * rows' input k in its halfwords, so four MULs by (u_k - zp) accumulate
 * the two rows at once (the low halfword is row d's sum exactly, |sum| <
 * 2^15; the rest is row d + 1's): about 2.6 instructions per weight, the
 * int8 kernel about 5.  dim_in 8: a word is one row, the inputs in
 * registers, about 4 per weight.  Other shapes: one nibble at a time, the
 * zero point folded as for int8 (W.u - zp sum W).
 */
#include "../common/caps_nn_int4.h"
#include "caps_rv_internal.h"

#define S4_LANES 0x000F000Fu

/* dim_in 4, rows = dim_out even. */
CAPS_RV_INLINE void pairs4(const caps_rv_pred *pc, const int8_t *u, const int8_t *w, int8_t *out,
                           const int32_t rows)
{
    const int32_t zp = pc->zp;
    const int32_t x0 = u[0] - zp, x1 = u[1] - zp, x2 = u[2] - zp, x3 = u[3] - zp;
    /* -8 sum x in both halfwords (mod 2^32: the lanes are recovered exactly) */
    const uint32_t bias = (uint32_t)(-8 * (x0 + x1 + x2 + x3)) * 0x00010001u;
    const uint32_t m = S4_LANES;
    const int64_t max_abs = 4 * 255 * 8;
    for (int32_t j = 0; j < pc->n_out; ++j) {
        const int32_t q = pc->num_scales == 1 ? 0 : j;
        const int32_t mult = pc->multipliers[q], shift = pc->shifts[q];
        const caps_bm_requant rq = caps_bm_requant_init(mult, shift, max_abs);
        for (int32_t d = 0; d < rows; d += 2) {
            const uint32_t t = caps_rv_read_s8x4(w) ^ CAPS_NN_S4_BIAS_FLIP;
            w += 4;
            uint32_t acc = bias + (t & m) * (uint32_t)x0;
            acc += ((t >> 4) & m) * (uint32_t)x1;
            acc += ((t >> 8) & m) * (uint32_t)x2;
            acc += ((t >> 12) & m) * (uint32_t)x3;
            const int32_t lo = (int32_t)(int16_t)(acc & 0xFFFFu);
            const int32_t hi = (int32_t)(acc - (uint32_t)lo) >> 16;
            out[d] = (int8_t)caps_rv_sat8(caps_rv_requant(lo, &rq, mult, shift));
            out[d + 1] = (int8_t)caps_rv_sat8(caps_rv_requant(hi, &rq, mult, shift));
        }
        out += rows;
    }
}

/* dim_in 8: a weight word is one row; the offset inputs stay in registers
 * (RV32 has enough), each biased nibble one shift, AND, MUL, ADD. */
static void rows8(const caps_rv_pred *pc, const int8_t *u, const int8_t *w, int8_t *out)
{
    const int32_t zp = pc->zp;
    int32_t x[8], usum = 0;
    for (int32_t k = 0; k < 8; ++k) {
        x[k] = u[k] - zp;
        usum += x[k];
    }
    const int32_t bias = -8 * usum;
    const int64_t max_abs = 8 * 255 * 8;
    for (int32_t j = 0; j < pc->n_out; ++j) {
        const int32_t q = pc->num_scales == 1 ? 0 : j;
        const int32_t mult = pc->multipliers[q], shift = pc->shifts[q];
        const caps_bm_requant rq = caps_bm_requant_init(mult, shift, max_abs);
        for (int32_t d = 0; d < pc->dim_out; ++d) {
            const uint32_t t = caps_rv_read_s8x4(w) ^ CAPS_NN_S4_BIAS_FLIP;
            w += 4;
            int32_t acc = bias;
            for (int32_t k = 0; k < 8; ++k) {
                acc += (int32_t)((t >> (4 * k)) & 0xFu) * x[k];
            }
            *out++ = (int8_t)caps_rv_sat8(caps_rv_requant(acc, &rq, mult, shift));
        }
    }
}

/* Any shape: sum_k (w_k + 8) u_k and sum_k (w_k + 8) per row, then
 * W.(u - zp) = that - zp sum (w + 8) - 8 sum_k (u_k - zp). */
static void plain(const caps_rv_pred *pc, const int8_t *u, const int8_t *w, int8_t *out)
{
    const int32_t k_in = pc->dim_in;
    int32_t usum = 0;
    for (int32_t k = 0; k < k_in; ++k) {
        usum += u[k] - pc->zp;
    }
    const int32_t bias = -8 * usum;
    const int64_t max_abs = (int64_t)k_in * 255 * 8;
    size_t e = 0;
    for (int32_t j = 0; j < pc->n_out; ++j) {
        const int32_t q = pc->num_scales == 1 ? 0 : j;
        const int32_t mult = pc->multipliers[q], shift = pc->shifts[q];
        const caps_bm_requant rq = caps_bm_requant_init(mult, shift, max_abs);
        for (int32_t d = 0; d < pc->dim_out; ++d) {
            int32_t acc = 0, wsum = 0;
            for (int32_t k = 0; k < k_in; ++k, ++e) {
                const int32_t b = (int32_t)((((uint32_t)(uint8_t)w[e >> 1] >> ((e & 1u) * 4u)) &
                                             0xFu) ^ 8u);
                acc += b * u[k];
                wsum += b;
            }
            acc = acc - pc->zp * wsum + bias;
            *out++ = (int8_t)caps_rv_sat8(caps_rv_requant(acc, &rq, mult, shift));
        }
    }
}

void caps_rv_predict_capsule_s4(const caps_rv_pred *pc, const int8_t *u_i, const int8_t *w_i,
                                int8_t *out)
{
    if (pc->dim_in == 4 && pc->dim_out == 6) {
        pairs4(pc, u_i, w_i, out, 6);
    } else if (pc->dim_in == 4 && (pc->dim_out & 1) == 0) {
        pairs4(pc, u_i, w_i, out, pc->dim_out);
    } else if (pc->dim_in == 8) {
        rows8(pc, u_i, w_i, out);
    } else {
        plain(pc, u_i, w_i, out);
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
    caps_rv_pred pc;
    caps_rv_pred_init(&pc, dims, params);
    pc.weight_bits = 4;
    caps_rv_predict_all(&pc, input, weights, u_hat);
    return CAPS_NN_SUCCESS;
}
