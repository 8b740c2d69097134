/*
 * Helium dynamic routing and class-capsule layer, bit-exact with
 * src/portable/caps_routing_s8.c.
 *
 * The routing reads the predictions transposed, T[j d][i] (input capsules
 * contiguous), so that every phase runs along input capsules in vector
 * lanes: the class-capsule layer stores its predictions that way
 * (caps_hl_predict with a row stride of n_in); caps_dynamic_routing_s8
 * transposes its [i][j][d] input block by block (byte scatters), and the
 * recomputing mode predicts each block transposed into the block buffer.
 *
 * Iteration 0: s_jd = sum_i u_hat, one VADDVA per 16 capsules.
 * Iterations r >= 1, per block of input capsules:
 *  A  agreement a_ij = u_hat(j|i) . v_j for four capsules per vector
 *     (VMLA by the scalar v_jd, output capsule outer so v_j stays in
 *     registers) and the logit update in lanes: the old logit's share from
 *     a 256-entry table (one gather indexed by the logit byte), VQADD, the
 *     agreement requantization (VQRDMULH, VRSHL), saturation;
 *  B  per input capsule, output capsules in lanes: max (VMAXV), the
 *     exponentials (one gather from the exp table per 4 logits), their
 *     64-bit sum (VADDLVA), one exact reciprocal (scalar, shared backend
 *     math), the Q15 couplings (VMULH, rounding shift, saturation to
 *     2^15 - 1) scattered into the block's coupling rows;
 *  C  s_jd += sum_i c_ij u_hat(j|i): one VMLALDAV (int16 x int16 into
 *     64 bits) per 8 capsules.
 * A coupling of exactly 2^15 (one logit dominating) does not fit int16: it
 * is stored as 2^15 - 1 and the missing 1 * u_hat is added right away.
 * The exp table is built in vectors (the Horner steps of
 * caps_nn_exp2_neg_q30 are VQRDMULHs of the doubled fraction).  Tails of
 * every loop are predicated (VCTP).
 */
#include <string.h>

#include "caps_hl_internal.h"

/* Where the prediction rows come from. */
typedef struct {
    const int8_t *stored_t;    /* class caps, stored: T [md][n_in] */
    const int8_t *natural;     /* routing API: u_hat [n_in][md] */
    const caps_hl_pred *pc;    /* recompute: predictions of each block */
    const int8_t *input;
    const int8_t *weights;
} hl_source;

/* T rows [md][stride] of input capsules [i0, i0 + n). */
static const int8_t *block_rows(const hl_source *src, const caps_hl_scratch *sc,
                                const caps_class_caps_dims *dims, int32_t i0, int32_t n,
                                int32_t *stride)
{
    const int32_t md = dims->n_out * dims->dim_out;
    if (src->stored_t != NULL) {
        *stride = dims->n_in;
        return src->stored_t + i0;
    }
    const int32_t bs = sc->block;
    *stride = bs;
    if (src->natural != NULL) {
        /* transpose: four elements of a row per step into four T rows */
        const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)bs);
        for (int32_t k = 0; k < n; ++k) {
            const int8_t *x = src->natural + (size_t)(i0 + k) * (size_t)md;
            int8_t *t = sc->rowbuf + k;
            for (int32_t r = 0; r < md; r += 4) {
                const mve_pred16_t p = vctp32q((uint32_t)(md - r));
                vstrbq_scatter_offset_p_s32(t, offs, vldrbq_z_s32(x + r, p), p);
                t += 4 * (size_t)bs;
            }
        }
        return sc->rowbuf;
    }
    caps_hl_predict(src->pc, src->input + (size_t)i0 * (size_t)dims->dim_in,
                    src->weights + (size_t)i0 * (size_t)md * (size_t)dims->dim_in, sc->rowbuf, n,
                    bs, 1);
    return sc->rowbuf;
}

/* acc[r] += sum of the n bytes of each T row. */
static void sum_rows(const int8_t *rows, int32_t stride, int32_t n, int32_t md, int64_t *acc)
{
    for (int32_t r = 0; r < md; ++r) {
        const int8_t *t = rows + (size_t)r * (size_t)stride;
        int32_t s = 0;
        int32_t k = 0;
        for (; k + 16 <= n; k += 16) {
            s = vaddvaq_s8(s, vldrbq_s8(t + k));
        }
        if (k < n) {
            const mve_pred16_t p = vctp8q((uint32_t)(n - k));
            s = vaddvaq_p_s8(s, vldrbq_z_s8(t + k, p), p);
        }
        acc[r] += s;
    }
}

/* exp(-k S_b) in Q30 for k = 0..255 (caps_nn_exp_neg_q30), four per step:
 * w = requantize(k, beta); n = w >> 16; the Horner steps
 * C + ((p x + 2^29) >> 30) are C + VQRDMULH(p, 2 x) (|p x| < 2^61, no
 * saturation); the final (p + 2^(n-1)) >> n is a VRSHL by -n, with n > 30
 * moved to a shift of 32 or more (which gives 0, as the contract says). */
static void build_exp_table(uint32_t *table, caps_nn_requant beta)
{
    const caps_hl_rq q = caps_hl_rq_init(beta.multiplier, beta.shift);
    int32x4_t k = vreinterpretq_s32_u32(vidupq_n_u32(0, 1));
    for (int32_t e = 0; e < 256; e += 4) {
        const int32x4_t w = vmaxq_s32(caps_hl_requant(k, &q), vdupq_n_s32(0));
        int32x4_t n = vshrq_n_s32(w, 16);
        n = vminq_s32(vaddq_s32(n, vshrq_n_s32(vaddq_n_s32(n, 1), 5)), vdupq_n_s32(32));
        const int32x4_t x2 = vshlq_n_s32(vandq_s32(w, vdupq_n_s32(0xFFFF)), 15);
        int32x4_t p = vdupq_n_s32(CAPS_NN_EXP2_C5);
        p = vaddq_n_s32(vqrdmulhq_s32(p, x2), CAPS_NN_EXP2_C4);
        p = vaddq_n_s32(vqrdmulhq_s32(p, x2), CAPS_NN_EXP2_C3);
        p = vaddq_n_s32(vqrdmulhq_s32(p, x2), CAPS_NN_EXP2_C2);
        p = vaddq_n_s32(vqrdmulhq_s32(p, x2), CAPS_NN_EXP2_C1);
        p = vaddq_n_s32(vqrdmulhq_s32(p, x2), 1 << 30);
        vst1q_u32(table + e, vreinterpretq_u32_s32(vrshlq_s32(p, vnegq_s32(n))));
        k = vaddq_n_s32(k, 4);
    }
}

/* Per-update constants of the logit update (update u = r - 1). */
typedef struct {
    caps_hl_rq agree;
    int32_t agree_fast;       /* agree shift < 0 */
    int32_t has_carry;        /* u >= 1 */
    const int32_t *carry_tab; /* requantize(b, carry) at index (uint8_t)b */
} hl_update;

/* New logits b[j][i..i+3] (tail: the first n) from the agreements a. */
CAPS_HL_INLINE void update4(const hl_update *up, int32x4_t a, int8_t *b, mve_pred16_t p,
                            const int tail, const int carry, const int fast)
{
    if (carry) {
        const uint32x4_t old = tail ? vldrbq_z_u32((const uint8_t *)b, p)
                                    : vldrbq_u32((const uint8_t *)b);
        const int32x4_t share = tail ? vldrwq_gather_shifted_offset_z_s32(up->carry_tab, old, p)
                                     : vldrwq_gather_shifted_offset_s32(up->carry_tab, old);
        a = vqaddq_s32(a, share);
    }
    const int32x4_t r = fast ? caps_hl_requant_rs(a, up->agree.mult, up->agree.nshift)
                             : caps_hl_requant(a, &up->agree);
    if (tail) {
        vstrbq_p_s32(b, caps_hl_sat8_lanes(r), p);
    } else {
        vstrbq_s32(b, caps_hl_sat8_lanes(r));
    }
}

/* Agreements of four capsules (k..k+3 of the block) with v_j (vj: int32
 * or int8 values, whichever the caller holds). */
#define HL_AGREE4(VJ)                                                         \
    do {                                                                      \
        const int8_t *tt = t + k;                                             \
        for (int32_t d = 0; d < dim; ++d) {                                   \
            const int32x4_t x = tail ? vldrbq_z_s32(tt, p) : vldrbq_s32(tt); \
            a = vmlaq_n_s32(a, x, (VJ)[d]);                                   \
            tt += stride;                                                     \
        }                                                                     \
    } while (0)

/* Phase A over one block: the new logits of every output capsule j for
 * input capsules [i0, i0 + n); flags and (where it pays) dim constant at
 * the call site, so v_j sits in registers. */
CAPS_HL_INLINE void phase_a_dim(const hl_update *up, const int8_t *rows, int32_t stride,
                                const int8_t *v, int8_t *logits, int32_t n_in, int32_t i0,
                                int32_t n, int32_t n_out, const int32_t dim, const int carry,
                                const int fast, const int small)
{
    for (int32_t j = 0; j < n_out; ++j) {
        int32_t vj[16];
        if (small) {
            for (int32_t d = 0; d < dim; ++d) {
                vj[d] = v[j * dim + d];
            }
        }
        const int8_t *vj8 = v + (size_t)j * (size_t)dim;
        const int8_t *t = rows + (size_t)j * (size_t)dim * (size_t)stride;
        int8_t *b = logits + (size_t)j * (size_t)n_in + i0;
        int32_t k = 0;
        for (; k + 4 <= n; k += 4) {
            const int tail = 0;
            const mve_pred16_t p = 0;
            int32x4_t a = vdupq_n_s32(0);
            if (small) {
                HL_AGREE4(vj);
            } else {
                HL_AGREE4(vj8);
            }
            update4(up, a, b + k, p, tail, carry, fast);
        }
        if (k < n) {
            const int tail = 1;
            const mve_pred16_t p = vctp32q((uint32_t)(n - k));
            int32x4_t a = vdupq_n_s32(0);
            HL_AGREE4(vj8);
            update4(up, a, b + k, p, tail, carry, fast);
        }
    }
}

static void phase_a(const hl_update *up, const int8_t *rows, int32_t stride, const int8_t *v,
                    int8_t *logits, int32_t n_in, int32_t i0, int32_t n, int32_t n_out,
                    int32_t dim)
{
    const int carry = up->has_carry;
    const int fast = up->agree_fast;
    if (dim == 6 && carry && fast) {
        phase_a_dim(up, rows, stride, v, logits, n_in, i0, n, n_out, 6, 1, 1, 1);
    } else if (dim == 6 && !carry && fast) {
        phase_a_dim(up, rows, stride, v, logits, n_in, i0, n, n_out, 6, 0, 1, 1);
    } else if (dim == 16 && carry && fast) {
        phase_a_dim(up, rows, stride, v, logits, n_in, i0, n, n_out, 16, 1, 1, 1);
    } else if (dim == 16 && !carry && fast) {
        phase_a_dim(up, rows, stride, v, logits, n_in, i0, n, n_out, 16, 0, 1, 1);
    } else if (carry) {
        phase_a_dim(up, rows, stride, v, logits, n_in, i0, n, n_out, dim, 1, 0, 0);
    } else {
        phase_a_dim(up, rows, stride, v, logits, n_in, i0, n, n_out, dim, 0, 0, 0);
    }
}

/* Phase B for input capsule i (column k of the block): Q15 couplings into
 * cbuf[j][k]; returns the reciprocal of its exponentials' sum. */
static uint32_t phase_b_capsule(const caps_hl_scratch *sc, const int8_t *logits, int32_t n_in,
                                int32_t n_out, int32_t i, int32_t k, int32_t *mx_out)
{
    const uint32x4_t boffs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)n_in);
    const uint32x4_t coffs = vmulq_n_u32(vidupq_n_u32(0, 1), 2u * (uint32_t)sc->block);
    const int8_t *b = logits + i;
    int32_t mx = -128;
    for (int32_t j = 0; j < n_out; j += 4) {
        const mve_pred16_t p = vctp32q((uint32_t)(n_out - j));
        const int32x4_t bj = vldrbq_gather_offset_z_s32(b + (size_t)j * (size_t)n_in, boffs, p);
        mx = vmaxvq_p_s32(mx, bj, p);
    }
    uint64_t sum = 0;
    for (int32_t j = 0; j < n_out; j += 4) {
        const mve_pred16_t p = vctp32q((uint32_t)(n_out - j));
        const int32x4_t bj = vldrbq_gather_offset_z_s32(b + (size_t)j * (size_t)n_in, boffs, p);
        const uint32x4_t idx = vreinterpretq_u32_s32(vsubq_s32(vdupq_n_s32(mx), bj));
        sum = vaddlvaq_p_u32(sum, vldrwq_gather_shifted_offset_z_u32(sc->table, idx, p), p);
    }
    const uint32_t recip = caps_bm_softmax_recip(sum);
    int16_t *c = sc->cbuf + k;
    for (int32_t j = 0; j < n_out; j += 4) {
        const mve_pred16_t p = vctp32q((uint32_t)(n_out - j));
        const int32x4_t bj = vldrbq_gather_offset_z_s32(b + (size_t)j * (size_t)n_in, boffs, p);
        const uint32x4_t idx = vreinterpretq_u32_s32(vsubq_s32(vdupq_n_s32(mx), bj));
        const uint32x4_t e = vldrwq_gather_shifted_offset_z_u32(sc->table, idx, p);
        const uint32x4_t cq = vminq_u32(vrshrq_n_u32(vmulhq_u32(e, vdupq_n_u32(recip)), 15),
                                        vdupq_n_u32(32767));
        vstrhq_scatter_offset_p_u32((uint16_t *)(void *)(c + (size_t)j * (size_t)sc->block),
                                    coffs, cq, p);
    }
    *mx_out = mx;
    return recip;
}

/* Phase B over one block, with the exactly-2^15 couplings' missing share. */
static void phase_b(const caps_hl_scratch *sc, const int8_t *rows, int32_t stride,
                    const caps_class_caps_dims *dims, int32_t i0, int32_t n)
{
    const int32_t n_out = dims->n_out;
    const int32_t dim = dims->dim_out;
    for (int32_t k = 0; k < n; ++k) {
        int32_t mx;
        const uint32_t recip = phase_b_capsule(sc, sc->logits, dims->n_in, n_out, i0 + k, k, &mx);
        if (caps_bm_softmax_q15(sc->table[0], recip) > 32767) {
            for (int32_t j = 0; j < n_out; ++j) {
                if (sc->logits[(size_t)j * (size_t)dims->n_in + (size_t)(i0 + k)] == mx) {
                    for (int32_t d = 0; d < dim; ++d) {
                        sc->acc[j * dim + d] += rows[(size_t)(j * dim + d) * (size_t)stride + k];
                    }
                }
            }
        }
    }
}

/* Phase C over one block: acc[j d] += sum_k c[j][k] T[j d][k]. */
static void phase_c(const caps_hl_scratch *sc, const int8_t *rows, int32_t stride, int32_t n,
                    int32_t n_out, int32_t dim)
{
    for (int32_t j = 0; j < n_out; ++j) {
        const int16_t *c = sc->cbuf + (size_t)j * (size_t)sc->block;
        for (int32_t d = 0; d < dim; ++d) {
            const int8_t *t = rows + (size_t)(j * dim + d) * (size_t)stride;
            int64_t s = 0;
            int32_t k = 0;
            for (; k + 8 <= n; k += 8) {
                s = vmlaldavaq_s16(s, vldrhq_s16(c + k), vldrbq_s16(t + k));
            }
            if (k < n) {
                const mve_pred16_t p = vctp16q((uint32_t)(n - k));
                s = vmlaldavaq_p_s16(s, vldrhq_z_s16(c + k, p), vldrbq_z_s16(t + k, p), p);
            }
            sc->acc[j * dim + d] += s;
        }
    }
}

static caps_nn_status routing_core(const caps_class_caps_dims *dims,
                                   const caps_routing_params *params, const hl_source *src,
                                   const caps_hl_scratch *sc, int8_t *output)
{
    const int32_t n_in = dims->n_in;
    const int32_t n_out = dims->n_out;
    const int32_t dim = dims->dim_out;
    const int32_t md = n_out * dim;
    const int32_t p = caps_nn_routing_acc_shift(n_in);
    const caps_caps_dims sdims = {n_out, dim};
    int32_t carry_tab[256];

    for (int32_t r = 0; r < params->routings; ++r) {
        memset(sc->acc, 0, (size_t)md * sizeof(int64_t));
        /* stored rows: iteration 0 in one block */
        const int32_t block0 = src->stored_t != NULL ? n_in : sc->block;
        if (r == 0) {
            for (int32_t i0 = 0; i0 < n_in; i0 += block0) {
                const int32_t n = n_in - i0 < block0 ? n_in - i0 : block0;
                int32_t stride;
                const int8_t *rows = block_rows(src, sc, dims, i0, n, &stride);
                sum_rows(rows, stride, n, md, sc->acc);
            }
        } else {
            build_exp_table(sc->table, params->exp_beta[r - 1]);
            hl_update up;
            const caps_nn_requant agree = params->agree[r - 1];
            up.agree = caps_hl_rq_init(agree.multiplier, agree.shift);
            up.agree_fast = agree.shift < 0;
            up.has_carry = r - 1 > 0;
            up.carry_tab = carry_tab;
            if (up.has_carry) {
                const caps_nn_requant cr = params->carry[r - 1];
                const caps_hl_rq cq = caps_hl_rq_init(cr.multiplier, cr.shift);
                /* entry (uint8_t)b = requantize(b, carry) */
                int32x4_t b = vreinterpretq_s32_u32(vidupq_n_u32(0, 1));
                for (int32_t e = 0; e < 256; e += 4) {
                    const int32x4_t sb = vshrq_n_s32(vshlq_n_s32(b, 24), 24);
                    vst1q_s32(carry_tab + e, caps_hl_requant(sb, &cq));
                    b = vaddq_n_s32(b, 4);
                }
            }
            for (int32_t i0 = 0; i0 < n_in; i0 += sc->block) {
                const int32_t n = n_in - i0 < sc->block ? n_in - i0 : sc->block;
                int32_t stride;
                const int8_t *rows = block_rows(src, sc, dims, i0, n, &stride);
                phase_a(&up, rows, stride, output, sc->logits, n_in, i0, n, n_out, dim);
                phase_b(sc, rows, stride, dims, i0, n);
                phase_c(sc, rows, stride, n, n_out, dim);
            }
        }
        caps_nn_routing_sums_s8(sc->acc, md, r, p, params->s[r].multiplier, params->s[r].shift,
                                sc->s);
        const caps_nn_status st = caps_squash_s8(NULL, &sdims, &params->squash[r], sc->s, output);
        if (st != CAPS_NN_SUCCESS) {
            return st;
        }
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_dynamic_routing_s8(const caps_nn_context *ctx,
                                       const caps_class_caps_dims *dims,
                                       const caps_routing_params *params, const int8_t *u_hat,
                                       int8_t *output)
{
    if (caps_dynamic_routing_s8_args_check(ctx, dims, params, u_hat, output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_hl_scratch sc;
    caps_hl_carve(ctx->buf, dims, (size_t)dims->n_out * (size_t)dims->dim_out, &sc);
    const hl_source src = {NULL, u_hat, NULL, NULL, NULL};
    return routing_core(dims, params, &src, &sc, output);
}

caps_nn_status caps_class_caps_s8(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                  const caps_class_caps_params *params,
                                  int32_t store_predictions, const int8_t *input,
                                  const int8_t *weights, int8_t *output)
{
    if (caps_class_caps_s8_args_check(ctx, dims, params, store_predictions, input, weights,
                                      output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    const size_t md = (size_t)dims->n_out * (size_t)dims->dim_out;
    const int32_t routing_bytes = caps_dynamic_routing_s8_get_buffer_size(dims);
    uint8_t *base = (uint8_t *)ctx->buf;
    /* [routing][u_hat (transposed), or one row only the portable kernel uses][predictions] */
    int8_t *uhat = (int8_t *)base + routing_bytes;
    const size_t uhat_bytes = store_predictions ? A8((size_t)dims->n_in * md) : A8(md);
    void *pred_buf = base + routing_bytes + uhat_bytes;

    caps_hl_scratch sc;
    caps_hl_carve(base, dims, store_predictions ? 0u : md, &sc);
    caps_hl_pred pc;
    caps_hl_pred_init(&pc, dims, &params->pred, pred_buf);
    hl_source src = {NULL, NULL, &pc, input, weights};
    if (store_predictions) {
        caps_hl_predict(&pc, input, weights, uhat, dims->n_in, dims->n_in, 1);
        src.stored_t = uhat;
    }
    return routing_core(dims, &params->routing, &src, &sc, output);
}
