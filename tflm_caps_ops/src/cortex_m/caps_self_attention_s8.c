/*
 * Cortex-M self-attention capsule layer (Efficient-CapsNet), bit-exact
 * with src/portable/caps_self_attention_s8.c:
 *  - votes by this backend's caps_predictions_s8;
 *  - vote sums four columns at a time in the halfword lanes of SXTAB16
 *    (a block of 255 votes cannot overflow int16), widened to int32 per
 *    block; stored >> p as int16 in SXTB16 lane order (d0 d2 d1 d3 per
 *    group of four) so that the agreement is two SMLAD per four votes;
 *  - per input capsule the softmax couplings by the shared fast primitives
 *    (caps_bm_attention_couplings: no 64-bit division);
 *  - weighted sums column-wise with four int32 accumulators in registers
 *    (SXTB16 + SMLABB/SMLABT per four votes, exact per block of 255 input
 *    capsules, int64 across blocks), requantized to int16 s;
 *  - the squash of s: squared norm by SMLALD, the gain by the shared
 *    primitive, each element by SMLAWB and SSAT.
 */
#include "caps_cm_internal.h"

#define BLOCK CAPS_NN_ROUTING_MAX_BLOCK

/* (x + 2^(p-1)) >> p for p > 0, x for p = 0 (caps_nn_round_shift_s64 of an int32). */
CAPS_CM_INLINE int32_t round_shift(int32_t x, int32_t p)
{
    return p > 0 ? (int32_t)(((int64_t)x + ((int64_t)1 << (p - 1))) >> p) : x;
}

/* Vote sums T [md] (int16, >> p) in SXTB16 lane order per group of four. */
static void vote_sums(const int8_t *uhat, int32_t n_in, int32_t n_out, int32_t dim, int32_t p,
                      int32_t *tot, int16_t *sum)
{
    const int32_t md = n_out * dim;
    for (int32_t e = 0; e < md; ++e) {
        tot[e] = 0;
    }
    for (int32_t i0 = 0; i0 < n_in; i0 += BLOCK) {
        const int32_t i1 = n_in - i0 < BLOCK ? n_in : i0 + BLOCK;
        int32_t e = 0;
        for (; e + 4 <= md; e += 4) {
            uint32_t a = 0, b = 0; /* lanes (e0, e2), (e1, e3) */
            const int8_t *row = uhat + (size_t)i0 * (size_t)md + e;
            for (int32_t i = i0; i < i1; ++i, row += md) {
                const uint32_t w = caps_cm_read_s8x4(row);
                a = caps_cm_sxtab16(a, w);
                b = caps_cm_sxtab16_ror8(b, w);
            }
            tot[e] += (int16_t)(a & 0xFFFFu);
            tot[e + 1] += (int16_t)(b & 0xFFFFu);
            tot[e + 2] += (int16_t)(a >> 16);
            tot[e + 3] += (int16_t)(b >> 16);
        }
        for (; e < md; ++e) {
            int32_t t = 0;
            for (int32_t i = i0; i < i1; ++i) {
                t += uhat[(size_t)i * (size_t)md + (size_t)e];
            }
            tot[e] += t;
        }
    }
    for (int32_t j = 0; j < n_out; ++j) {
        const int32_t *t = tot + j * dim;
        int16_t *o = sum + j * dim;
        int32_t d = 0;
        for (; d + 4 <= dim; d += 4) {
            o[d] = (int16_t)round_shift(t[d], p); /* |.| <= 2^15 */
            o[d + 1] = (int16_t)round_shift(t[d + 2], p);
            o[d + 2] = (int16_t)round_shift(t[d + 1], p);
            o[d + 3] = (int16_t)round_shift(t[d + 3], p);
        }
        for (; d < dim; ++d) {
            o[d] = (int16_t)round_shift(t[d], p);
        }
    }
}

CAPS_CM_INLINE uint32_t read_s16x2(const int16_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* a_ij = u_hat_ij . T_j for one input capsule; returns max, min in *mx, *mn. */
static void agreements(const int8_t *row, const int16_t *sum, int32_t n_out, int32_t dim,
                       int32_t *a, int32_t *mx, int32_t *mn)
{
    int32_t hi = INT32_MIN, lo = INT32_MAX;
    for (int32_t j = 0; j < n_out; ++j, row += dim, sum += dim) {
        int32_t acc = 0;
        int32_t d = 0;
        for (; d + 4 <= dim; d += 4) {
            const uint32_t w = caps_cm_read_s8x4(row + d);
            acc = caps_cm_smlad(caps_cm_sxtb16(w), read_s16x2(sum + d), acc);
            acc = caps_cm_smlad(caps_cm_sxtb16_ror8(w), read_s16x2(sum + d + 2), acc);
        }
        for (; d < dim; ++d) {
            acc += (int32_t)row[d] * sum[d];
        }
        a[j] = acc;
        hi = acc > hi ? acc : hi;
        lo = acc < lo ? acc : lo;
    }
    *mx = hi;
    *mn = lo;
}

/* s_jd for every element: sum_i c'_ij u_hat_ijd, four columns at a time. */
static void weighted_sums(const int8_t *uhat, const int16_t *coupling, int32_t n_in,
                          int32_t n_out, int32_t dim, const caps_self_attention_params *params,
                          int16_t *s)
{
    const size_t md = (size_t)n_out * (size_t)dim;
    const int32_t p = params->acc_shift;
    for (int32_t j = 0; j < n_out; ++j) {
        int32_t d = 0;
        for (; d + 4 <= dim; d += 4) {
            int64_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;
            for (int32_t i0 = 0; i0 < n_in; i0 += BLOCK) {
                const int32_t i1 = n_in - i0 < BLOCK ? n_in : i0 + BLOCK;
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                const int8_t *row = uhat + (size_t)i0 * md + (size_t)j * (size_t)dim + d;
                const int16_t *c = coupling + (size_t)i0 * (size_t)n_out + j;
                for (int32_t i = i0; i < i1; ++i, row += md, c += n_out) {
                    const uint32_t w = caps_cm_read_s8x4(row);
                    const uint32_t x = caps_cm_sxtb16(w);      /* d0, d2 */
                    const uint32_t y = caps_cm_sxtb16_ror8(w); /* d1, d3 */
                    const uint32_t ci = (uint32_t)(uint16_t)*c;
                    a0 = caps_cm_smlabb(ci, x, a0);
                    a2 = caps_cm_smlabt(ci, x, a2);
                    a1 = caps_cm_smlabb(ci, y, a1);
                    a3 = caps_cm_smlabt(ci, y, a3);
                }
                t0 += a0;
                t1 += a1;
                t2 += a2;
                t3 += a3;
            }
            int16_t *o = s + (size_t)j * (size_t)dim + d;
            o[0] = caps_bm_attention_s(t0, p, &params->s);
            o[1] = caps_bm_attention_s(t1, p, &params->s);
            o[2] = caps_bm_attention_s(t2, p, &params->s);
            o[3] = caps_bm_attention_s(t3, p, &params->s);
        }
        for (; d < dim; ++d) {
            int64_t t = 0;
            for (int32_t i0 = 0; i0 < n_in; i0 += BLOCK) {
                const int32_t i1 = n_in - i0 < BLOCK ? n_in : i0 + BLOCK;
                int32_t acc = 0;
                for (int32_t i = i0; i < i1; ++i) {
                    acc += (int32_t)coupling[(size_t)i * (size_t)n_out + (size_t)j] *
                           uhat[(size_t)i * md + (size_t)j * (size_t)dim + (size_t)d];
                }
                t += acc;
            }
            s[(size_t)j * (size_t)dim + (size_t)d] = caps_bm_attention_s(t, p, &params->s);
        }
    }
}

/* v = Efficient-CapsNet squash of the int16 capsules s [n_out, dim]. */
static void squash_wide(const int16_t *s, int32_t n_out, int32_t dim,
                        const caps_nn_requant *exp, int8_t *v)
{
    for (int32_t j = 0; j < n_out; ++j, s += dim, v += dim) {
        int64_t sq = 0;
        int32_t d = 0;
        for (; d + 2 <= dim; d += 2) {
            const uint32_t y = read_s16x2(s + d);
            sq = caps_cm_smlald(y, y, sq);
        }
        for (; d < dim; ++d) {
            sq += (int32_t)s[d] * s[d];
        }
        const int32_t g = caps_bm_efficient_squash_wide_gain((uint64_t)sq, exp->multiplier,
                                                             exp->shift);
        for (d = 0; d < dim; ++d) {
            /* floor(y G / 2^16) fits int32 (|y G| < 2^46) */
            v[d] = (int8_t)caps_cm_ssat8(caps_cm_smlawb(g, (uint32_t)(uint16_t)s[d], 128) >> 8);
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
    vote_sums(sc.uhat, n_in, n_out, dim, params->acc_shift, (int32_t *)(void *)sc.acc, sc.sum);
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
