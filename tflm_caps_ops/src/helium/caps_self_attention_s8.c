/*
 * Helium self-attention capsule layer (Efficient-CapsNet), bit-exact with
 * src/portable/caps_self_attention_s8.c; every loop over capsule elements
 * is tail-predicated (VCTP):
 *  - votes by this backend's caps_predictions_s8;
 *  - vote sums over the input capsules: eight columns per step in int16
 *    lanes (VLDRB.S16 + VADD) when N_in <= 255 (no shift, no overflow),
 *    else four columns in int32 lanes, shifted by VRSHL and narrowed by
 *    VSTRH.32;
 *  - agreements: eight votes per VMLADAVA (int8 votes widened by the load
 *    times the int16 sums);
 *  - per input capsule the softmax couplings by the shared fast primitives
 *    (caps_bm_attention_couplings);
 *  - weighted sums column-wise, four columns per VMLA with the scalar
 *    coupling, int32 lanes exact per block of 255 input capsules; with
 *    one block the shift by p, requantization (VQRDMULH, VRSHL) and the
 *    int16 saturation run in lanes, else per element from int64;
 *  - the squash of s: squared norm by VMLALDAV, the gain by the shared
 *    primitive, y G rounded by VRMULH of y 2^8.
 */
#include "caps_hl_internal.h"

#define BLOCK CAPS_NN_ROUTING_MAX_BLOCK

static void vote_sums(const int8_t *uhat, int32_t n_in, int32_t md, int32_t p, int16_t *sum)
{
    if (n_in <= BLOCK) { /* p = 0 and |sum| <= 255 * 128 */
        for (int32_t e = 0; e < md; e += 8) {
            const mve_pred16_t pr = vctp16q((uint32_t)(md - e));
            int16x8_t acc = vdupq_n_s16(0);
            const int8_t *row = uhat + e;
            for (int32_t i = 0; i < n_in; ++i, row += md) {
                acc = vaddq_s16(acc, vldrbq_z_s16(row, pr));
            }
            vstrhq_p_s16(sum + e, acc, pr);
        }
        return;
    }
    for (int32_t e = 0; e < md; e += 4) {
        const mve_pred16_t pr = vctp32q((uint32_t)(md - e));
        int32x4_t acc = vdupq_n_s32(0); /* |sum| <= 2^20 128 */
        const int8_t *row = uhat + e;
        for (int32_t i = 0; i < n_in; ++i, row += md) {
            acc = vaddq_s32(acc, vldrbq_z_s32(row, pr));
        }
        vstrhq_p_s32(sum + e, vrshlq_n_s32(acc, -p), pr); /* (x + 2^(p-1)) >> p */
    }
}

static void agreements(const int8_t *row, const int16_t *sum, int32_t n_out, int32_t dim,
                       int32_t *a, int32_t *mx, int32_t *mn)
{
    int32_t hi = INT32_MIN, lo = INT32_MAX;
    for (int32_t j = 0; j < n_out; ++j, row += dim, sum += dim) {
        int32_t acc = 0;
        for (int32_t d = 0; d < dim; d += 8) {
            const mve_pred16_t pr = vctp16q((uint32_t)(dim - d));
            acc = vmladavaq_s16(acc, vldrbq_z_s16(row + d, pr), vldrhq_z_s16(sum + d, pr));
        }
        a[j] = acc;
        hi = acc > hi ? acc : hi;
        lo = acc < lo ? acc : lo;
    }
    *mx = hi;
    *mn = lo;
}

static void weighted_sums(const int8_t *uhat, const int16_t *coupling, int32_t n_in,
                          int32_t n_out, int32_t dim, const caps_self_attention_params *params,
                          int16_t *s)
{
    const size_t md = (size_t)n_out * (size_t)dim;
    const int32_t p = params->acc_shift;
    const caps_hl_rq rq = caps_hl_rq_init(params->s.multiplier, params->s.shift);
    for (int32_t j = 0; j < n_out; ++j) {
        for (int32_t d = 0; d < dim; d += 4) {
            const mve_pred16_t pr = vctp32q((uint32_t)(dim - d));
            const size_t col = (size_t)j * (size_t)dim + (size_t)d;
            if (n_in <= BLOCK) { /* p = 0: the int32 sums are exact */
                int32x4_t acc = vdupq_n_s32(0);
                const int8_t *row = uhat + col;
                const int16_t *c = coupling + j;
                for (int32_t i = 0; i < n_in; ++i, row += md, c += n_out) {
                    acc = vmlaq_n_s32(acc, vldrbq_z_s32(row, pr), *c);
                }
                int32x4_t r = caps_hl_requant(acc, &rq);
                r = vmaxq_s32(vminq_s32(r, vdupq_n_s32(32767)), vdupq_n_s32(-32768));
                vstrhq_p_s32(s + col, r, pr);
                continue;
            }
            int64_t t[4] = {0, 0, 0, 0};
            for (int32_t i0 = 0; i0 < n_in; i0 += BLOCK) {
                const int32_t i1 = n_in - i0 < BLOCK ? n_in : i0 + BLOCK;
                int32x4_t acc = vdupq_n_s32(0);
                const int8_t *row = uhat + (size_t)i0 * md + col;
                const int16_t *c = coupling + (size_t)i0 * (size_t)n_out + j;
                for (int32_t i = i0; i < i1; ++i, row += md, c += n_out) {
                    acc = vmlaq_n_s32(acc, vldrbq_z_s32(row, pr), *c);
                }
                int32_t part[4];
                vst1q_s32(part, acc);
                for (int32_t l = 0; l < 4; ++l) {
                    t[l] += part[l];
                }
            }
            for (int32_t l = 0; l < 4 && d + l < dim; ++l) {
                s[col + (size_t)l] = caps_bm_attention_s(t[l], p, &params->s);
            }
        }
    }
}

static void squash_wide(const int16_t *s, int32_t n_out, int32_t dim,
                        const caps_nn_requant *exp, int8_t *v)
{
    for (int32_t j = 0; j < n_out; ++j, s += dim, v += dim) {
        int64_t sq = 0;
        for (int32_t d = 0; d < dim; d += 8) {
            const mve_pred16_t pr = vctp16q((uint32_t)(dim - d));
            const int16x8_t y = vldrhq_z_s16(s + d, pr);
            sq = vmlaldavaq_s16(sq, y, y);
        }
        const int32_t g = caps_bm_efficient_squash_wide_gain((uint64_t)sq, exp->multiplier,
                                                             exp->shift);
        for (int32_t d = 0; d < dim; d += 4) {
            const mve_pred16_t pr = vctp32q((uint32_t)(dim - d));
            const int32x4_t y = vldrhq_z_s32(s + d, pr);
            const int32x4_t r = vrmulhq_s32(vshlq_n_s32(y, 8), vdupq_n_s32(g));
            vstrbq_p_s32(v + d, caps_hl_sat8_lanes(r), pr);
        }
    }
}

caps_nn_status caps_self_attention_s8(const caps_nn_context *ctx,
                                      const caps_class_caps_dims *dims,
                                      const caps_self_attention_params *params,
                                      const int8_t *input, const int8_t *weights,
                                      const int32_t *bias, int8_t *output)
{
    if (caps_self_attention_s8_args_check(ctx, dims, params, input, weights, bias, output) !=
        CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    const int32_t n_in = dims->n_in;
    const int32_t n_out = dims->n_out;
    const int32_t dim = dims->dim_out;
    const size_t md = (size_t)n_out * (size_t)dim;
    caps_nn_attention_buffers sc;
    caps_nn_attention_carve(ctx->buf, dims, &sc);
    const caps_nn_status st =
        caps_predictions_s8(&sc.pred, dims, &params->pred, input, weights, sc.uhat);
    if (st != CAPS_NN_SUCCESS) {
        return st;
    }
    vote_sums(sc.uhat, n_in, (int32_t)md, params->acc_shift, sc.sum);
    for (int32_t i = 0; i < n_in; ++i) {
        int32_t mx, mn;
        agreements(sc.uhat + (size_t)i * md, sc.sum, n_out, dim, sc.agree, &mx, &mn);
        caps_bm_attention_couplings(sc.agree, n_out, mx, mn, &params->exp_beta,
                                    params->coupling_shift, bias + (size_t)i * (size_t)n_out,
                                    sc.expv, sc.coupling + (size_t)i * (size_t)n_out);
    }
    weighted_sums(sc.uhat, sc.coupling, n_in, n_out, dim, params, sc.s);
    squash_wide(sc.s, n_out, dim, &params->squash_exp, output);
    return CAPS_NN_SUCCESS;
}
