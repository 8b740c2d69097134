/*
 * Cortex-M dynamic routing and class-capsule layer (CMSIS-NN style),
 * bit-exact with src/portable/caps_routing_s8.c.
 *
 * Iteration 0 sums the predictions over input capsules with SXTAB16
 * (two 16-bit lanes per register, flushed before they can overflow).
 * Iterations r >= 1 go over blocks of input capsules in two phases:
 *  AB (per input capsule i): agreement u_hat(j|i) . v_j with SXTB16/SMLAD,
 *     the logit update, the integer softmax (shared exp table, one exact
 *     64/32 reciprocal per capsule) and the Q15 couplings of the block;
 *  C  (per output capsule j, per group of dimensions): s_j += c_ij u_hat(j|i)
 *     over the block with SMLABB/SMLATB into int32 registers, then added
 *     to the int64 accumulators once per block.
 * A coupling of exactly 2^15 does not fit SMLAxB's signed halfword: it is
 * stored as 2^15 - 1 and the missing 1 * u_hat is added to the int64
 * accumulator right away.  Blocks hold at most 255 input capsules, so the
 * int32 partial sums cannot overflow (|c u| < 2^22).  The block buffer is
 * the part of the routing scratch that is free between iterations, or any
 * bytes the caller gives beyond caps_*_get_buffer_size (bigger blocks,
 * fewer int64 updates).
 */
#include "caps_cm_internal.h"

#define A8(x) (((size_t)(x) + 7u) & ~(size_t)7u)
#define CM_MAX_BLOCK 255
#define CM_EBUF 32 /* couplings of up to this many output capsules kept on the stack */

typedef struct {
    int64_t *acc;     /* [md] */
    uint32_t *table;  /* [256] exp(-k S_b) in Q30 */
    int8_t *logits;   /* [n_in * n_out] */
    int8_t *s;        /* [md], written at the end of each iteration */
    int16_t *cbuf;    /* [n_out][block] couplings of the current block */
    int32_t block;
} cm_scratch;

/* Where the predictions of input capsule i come from. */
typedef struct {
    const int8_t *stored; /* [n_in, md] or NULL: recompute into row */
    const caps_cm_pred *pc;
    const int8_t *input;
    const int8_t *weights;
    int8_t *row;
} cm_source;

/* Carves the routing scratch (caps_dynamic_routing_s8_get_buffer_size
 * bytes at buf) and picks the block buffer: the free tail of the routing
 * scratch, or `extra` if the caller gave more bytes than that. */
static void carve(void *buf, const caps_class_caps_dims *dims, void *extra, size_t extra_bytes,
                  int32_t recompute, cm_scratch *sc)
{
    const size_t md = (size_t)dims->n_out * (size_t)dims->dim_out;
    uint8_t *p = (uint8_t *)caps_cm_align(buf, 8);
    sc->acc = (int64_t *)(void *)p;
    p += 8 * md;
    sc->table = (uint32_t *)(void *)p;
    p += 1024;
    sc->logits = (int8_t *)p;
    p += A8((size_t)dims->n_in * (size_t)dims->n_out);
    sc->s = (int8_t *)p;
    size_t cap = A8(md) + A8(4 * (size_t)dims->n_out);
    sc->cbuf = (int16_t *)(void *)p;
    if (extra != NULL) {
        uint8_t *e = (uint8_t *)caps_cm_align(extra, 4);
        const size_t lost = (size_t)(e - (uint8_t *)extra);
        if (extra_bytes > lost && extra_bytes - lost > cap) {
            sc->cbuf = (int16_t *)(void *)e;
            cap = extra_bytes - lost;
        }
    }
    size_t block = cap / (2u * (size_t)dims->n_out);
    if (block > CM_MAX_BLOCK) {
        block = CM_MAX_BLOCK;
    }
    if (block > (size_t)dims->n_in) {
        block = (size_t)dims->n_in;
    }
    sc->block = recompute ? 1 : (int32_t)block;
}

static const int8_t *source_row(const cm_source *src, size_t md, int32_t i)
{
    if (src->stored != NULL) {
        return src->stored + (size_t)i * md;
    }
    caps_cm_predict_capsule(src->pc, src->input + (size_t)i * (size_t)src->pc->dim_in,
                            src->weights + (size_t)i * md * (size_t)src->pc->dim_in, src->row);
    return src->row;
}

/* ---------------------------------------------------------------------
 * Iteration 0: acc = sum_i u_hat(.|i) (int32 is enough: |acc| <= 128 n_in).
 * ------------------------------------------------------------------- */
static void sum_stored(const int8_t *uhat, int32_t n_in, size_t md, int64_t *acc)
{
    const size_t words = md / 4;
    for (size_t e = 0; e < md; ++e) {
        acc[e] = 0;
    }
    for (int32_t i0 = 0; i0 < n_in; i0 += CM_MAX_BLOCK) {
        const int32_t n = n_in - i0 < CM_MAX_BLOCK ? n_in - i0 : CM_MAX_BLOCK;
        size_t wdx = 0;
        for (; wdx + 2 <= words; wdx += 2) {
            const int8_t *p = uhat + (size_t)i0 * md + 4 * wdx;
            uint32_t a0 = 0, b0 = 0, a1 = 0, b1 = 0;
            for (int32_t i = 0; i < n; ++i) {
                const uint32_t x0 = caps_cm_read_s8x4(p);
                const uint32_t x1 = caps_cm_read_s8x4(p + 4);
                a0 = caps_cm_sxtab16(a0, x0);
                b0 = caps_cm_sxtab16_ror8(b0, x0);
                a1 = caps_cm_sxtab16(a1, x1);
                b1 = caps_cm_sxtab16_ror8(b1, x1);
                p += md;
            }
            int64_t *q = acc + 4 * wdx;
            q[0] += (int16_t)(a0 & 0xFFFFu);
            q[1] += (int16_t)(b0 & 0xFFFFu);
            q[2] += (int16_t)(a0 >> 16);
            q[3] += (int16_t)(b0 >> 16);
            q[4] += (int16_t)(a1 & 0xFFFFu);
            q[5] += (int16_t)(b1 & 0xFFFFu);
            q[6] += (int16_t)(a1 >> 16);
            q[7] += (int16_t)(b1 >> 16);
        }
        for (; wdx < words; ++wdx) {
            const int8_t *p = uhat + (size_t)i0 * md + 4 * wdx;
            uint32_t a0 = 0, b0 = 0;
            for (int32_t i = 0; i < n; ++i) {
                const uint32_t x0 = caps_cm_read_s8x4(p);
                a0 = caps_cm_sxtab16(a0, x0);
                b0 = caps_cm_sxtab16_ror8(b0, x0);
                p += md;
            }
            int64_t *q = acc + 4 * wdx;
            q[0] += (int16_t)(a0 & 0xFFFFu);
            q[1] += (int16_t)(b0 & 0xFFFFu);
            q[2] += (int16_t)(a0 >> 16);
            q[3] += (int16_t)(b0 >> 16);
        }
        for (size_t e = 4 * words; e < md; ++e) {
            const int8_t *p = uhat + (size_t)i0 * md + e;
            int32_t t = 0;
            for (int32_t i = 0; i < n; ++i) {
                t += *p;
                p += md;
            }
            acc[e] += t;
        }
    }
}

/* ---------------------------------------------------------------------
 * Agreement of one (i, j): sum_d u_hat(j|i)_d v_jd, exact int32.
 * ------------------------------------------------------------------- */
CAPS_CM_INLINE int32_t agree_dot(const int8_t *u, const int8_t *v, int32_t dim)
{
    int32_t acc = 0;
    int32_t d = 0;
    for (; d + 4 <= dim; d += 4) {
        const uint32_t x = caps_cm_read_s8x4(u + d);
        const uint32_t y = caps_cm_read_s8x4(v + d);
        acc = caps_cm_smlad(caps_cm_sxtb16(x), caps_cm_sxtb16(y), acc);
        acc = caps_cm_smlad(caps_cm_sxtb16_ror8(x), caps_cm_sxtb16_ror8(y), acc);
    }
    for (; d < dim; ++d) {
        acc += (int32_t)u[d] * v[d];
    }
    return acc;
}

/* Per-iteration constants of the logit update. */
typedef struct {
    caps_bm_requant agree;
    caps_bm_requant carry;
    caps_nn_requant agree_raw;
    caps_nn_requant carry_raw;
    int32_t has_carry;
    int32_t fast;
} cm_update;

static cm_update update_init(const caps_routing_params *params, int32_t u, int32_t dim)
{
    cm_update up;
    up.agree_raw = params->agree[u];
    up.carry_raw = params->carry[u];
    up.has_carry = u > 0;
    up.carry = caps_bm_requant_init(up.carry_raw.multiplier, up.carry_raw.shift, 128);
    int64_t max_abs = (int64_t)dim * 128 * 128;
    if (up.has_carry) {
        /* |requantize(b, carry)| <= 128 * real + 1 <= 2^(shift+1) * 128 + 1 */
        const int32_t sh = up.carry_raw.shift;
        max_abs += sh >= 0 ? ((int64_t)128 << (sh + 1)) + 1 : 129;
    }
    up.agree = caps_bm_requant_init(up.agree_raw.multiplier, up.agree_raw.shift, max_abs);
    up.fast = up.agree.fast && (!up.has_carry || up.carry.fast);
    return up;
}

/* New logit of one (i, j) from its agreement. */
CAPS_CM_INLINE int32_t update_logit(const cm_update *up, int32_t a, int32_t b_old)
{
    if (up->fast) {
        if (up->has_carry) {
            a = caps_cm_qadd(a, caps_cm_requant(b_old, &up->carry));
        }
        return caps_cm_ssat8(caps_cm_requant(a, &up->agree));
    }
    if (up->has_carry) {
        const int32_t old = caps_nn_requantize(b_old, up->carry_raw.multiplier,
                                               up->carry_raw.shift);
        a = caps_nn_sat_s32((int64_t)a + old);
    }
    return caps_nn_sat_s8(caps_nn_requantize(a, up->agree_raw.multiplier, up->agree_raw.shift));
}

/* Phase AB for one input capsule: logits b[i, :] and couplings into the
 * block buffer column `col`. */
CAPS_CM_INLINE void phase_ab_capsule(const cm_update *up, const cm_scratch *sc, const int8_t *row,
                                     const int8_t *v, int8_t *b, int32_t n_out, int32_t dim,
                                     int32_t col, int32_t block)
{
    int32_t mx = -128;
    for (int32_t j = 0; j < n_out; ++j) {
        const int32_t a = agree_dot(row + (size_t)j * dim, v + (size_t)j * dim, dim);
        const int32_t bj = update_logit(up, a, b[j]);
        b[j] = (int8_t)bj;
        mx = bj > mx ? bj : mx;
    }
    uint32_t ebuf[CM_EBUF];
    const uint32_t *table = sc->table;
    uint64_t sum = 0;
    if (n_out <= CM_EBUF) {
        for (int32_t j = 0; j < n_out; ++j) {
            const uint32_t e = table[mx - b[j]];
            ebuf[j] = e;
            sum += e;
        }
    } else {
        for (int32_t j = 0; j < n_out; ++j) {
            sum += table[mx - b[j]];
        }
    }
    const uint32_t recip = caps_bm_softmax_recip(sum);
    int16_t *c = sc->cbuf + col;
    for (int32_t j = 0; j < n_out; ++j) {
        const uint32_t e = n_out <= CM_EBUF ? ebuf[j] : table[mx - b[j]];
        int32_t cj = caps_bm_softmax_q15(e, recip);
        if (cj > 32767) {
            /* c = 2^15: store 2^15 - 1, add the remaining 1 * u_hat now */
            cj = 32767;
            int64_t *acc = sc->acc + (size_t)j * dim;
            const int8_t *u = row + (size_t)j * dim;
            for (int32_t d = 0; d < dim; ++d) {
                acc[d] += u[d];
            }
        }
        c[(size_t)j * block] = (int16_t)cj;
    }
}

/* ---------------------------------------------------------------------
 * Phase C: s_j += sum_i c_ij u_hat(j|i) over one block.
 * ------------------------------------------------------------------- */

/* Four dimensions d0..d0+3 of output capsule j. */
CAPS_CM_INLINE void phase_c_group4(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                   int64_t *acc)
{
    int32_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    for (int32_t i = 0; i < n; ++i) {
        const uint32_t cc = (uint32_t)(uint16_t)c[i];
        const uint32_t x = caps_cm_read_s8x4(rows);
        const uint32_t lo = caps_cm_sxtb16(x);
        const uint32_t hi = caps_cm_sxtb16_ror8(x);
#if CAPS_CM_DSP
        p0 = __smlabb(lo, cc, p0);
        p2 = __smlatb(lo, cc, p2);
        p1 = __smlabb(hi, cc, p1);
        p3 = __smlatb(hi, cc, p3);
#else
        p0 += caps_cm_lo16(lo) * c[i];
        p2 += caps_cm_hi16(lo) * c[i];
        p1 += caps_cm_lo16(hi) * c[i];
        p3 += caps_cm_hi16(hi) * c[i];
#endif
        rows += md;
    }
    acc[0] += p0;
    acc[1] += p1;
    acc[2] += p2;
    acc[3] += p3;
}

/* Two dimensions (the tail of dim % 4 >= 2). */
CAPS_CM_INLINE void phase_c_group2(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                   int64_t *acc)
{
    int32_t p0 = 0, p1 = 0;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t cc = c[i];
        p0 += rows[0] * cc;
        p1 += rows[1] * cc;
        rows += md;
    }
    acc[0] += p0;
    acc[1] += p1;
}

CAPS_CM_INLINE void phase_c_group1(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                   int64_t *acc)
{
    int32_t p0 = 0;
    for (int32_t i = 0; i < n; ++i) {
        p0 += rows[0] * c[i];
        rows += md;
    }
    acc[0] += p0;
}

/* Six dimensions in one pass (dim_out 6, the costa2022 shapes). */
CAPS_CM_INLINE void phase_c_group6(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                   int64_t *acc)
{
    int32_t p0 = 0, p1 = 0, p2 = 0, p3 = 0, p4 = 0, p5 = 0;
    for (int32_t i = 0; i < n; ++i) {
        const uint32_t cc = (uint32_t)(uint16_t)c[i];
        const uint32_t x = caps_cm_read_s8x4(rows);
        const uint32_t y = caps_cm_read_s8x2(rows + 4);
        const uint32_t lo = caps_cm_sxtb16(x);
        const uint32_t hi = caps_cm_sxtb16_ror8(x);
        const uint32_t t = caps_cm_sxtb16(y);
        const uint32_t t1 = caps_cm_sxtb16_ror8(y);
#if CAPS_CM_DSP
        p0 = __smlabb(lo, cc, p0);
        p2 = __smlatb(lo, cc, p2);
        p1 = __smlabb(hi, cc, p1);
        p3 = __smlatb(hi, cc, p3);
        p4 = __smlabb(t, cc, p4);
        p5 = __smlabb(t1, cc, p5);
#else
        p0 += caps_cm_lo16(lo) * c[i];
        p2 += caps_cm_hi16(lo) * c[i];
        p1 += caps_cm_lo16(hi) * c[i];
        p3 += caps_cm_hi16(hi) * c[i];
        p4 += caps_cm_lo16(t) * c[i];
        p5 += caps_cm_lo16(t1) * c[i];
#endif
        rows += md;
    }
    acc[0] += p0;
    acc[1] += p1;
    acc[2] += p2;
    acc[3] += p3;
    acc[4] += p4;
    acc[5] += p5;
}

static void phase_c(const cm_scratch *sc, const int8_t *rows, size_t md, int32_t n, int32_t n_out,
                    int32_t dim)
{
    for (int32_t j = 0; j < n_out; ++j) {
        const int16_t *c = sc->cbuf + (size_t)j * sc->block;
        const int8_t *r = rows + (size_t)j * dim;
        int64_t *acc = sc->acc + (size_t)j * dim;
        int32_t d = 0;
        if (dim == 6) {
            phase_c_group6(r, md, c, n, acc);
            continue;
        }
        for (; d + 4 <= dim; d += 4) {
            phase_c_group4(r + d, md, c, n, acc + d);
        }
        if (d + 2 <= dim) {
            phase_c_group2(r + d, md, c, n, acc + d);
            d += 2;
        }
        if (d < dim) {
            phase_c_group1(r + d, md, c, n, acc + d);
        }
    }
}

/* ---------------------------------------------------------------------
 * The routing loop.
 * ------------------------------------------------------------------- */
static caps_nn_status routing_core(const caps_class_caps_dims *dims,
                                   const caps_routing_params *params, const cm_source *src,
                                   const cm_scratch *sc, int8_t *output)
{
    const int32_t n_in = dims->n_in;
    const int32_t n_out = dims->n_out;
    const int32_t dim = dims->dim_out;
    const size_t md = (size_t)n_out * (size_t)dim;
    const int32_t p = caps_nn_routing_acc_shift(n_in);
    const caps_caps_dims sdims = {n_out, dim};

    for (int32_t r = 0; r < params->routings; ++r) {
        if (r == 0) {
            if (src->stored != NULL) {
                sum_stored(src->stored, n_in, md, sc->acc);
            } else {
                for (size_t e = 0; e < md; ++e) {
                    sc->acc[e] = 0;
                }
                for (int32_t i = 0; i < n_in; ++i) {
                    const int8_t *row = source_row(src, md, i);
                    for (size_t e = 0; e < md; ++e) {
                        sc->acc[e] += row[e];
                    }
                }
            }
        } else {
            const caps_nn_requant beta = params->exp_beta[r - 1];
            for (int32_t k = 0; k < 256; ++k) {
                sc->table[k] = caps_nn_exp2_neg_q30(
                    caps_nn_requantize(k, beta.multiplier, beta.shift));
            }
            for (size_t e = 0; e < md; ++e) {
                sc->acc[e] = 0;
            }
            const cm_update up = update_init(params, r - 1, dim);
            for (int32_t i0 = 0; i0 < n_in; i0 += sc->block) {
                const int32_t n = n_in - i0 < sc->block ? n_in - i0 : sc->block;
                const int8_t *rows = NULL;
                for (int32_t k = 0; k < n; ++k) {
                    const int8_t *row = source_row(src, md, i0 + k);
                    if (k == 0) {
                        rows = row;
                    }
                    phase_ab_capsule(&up, sc, row, output, sc->logits + (size_t)(i0 + k) * n_out,
                                     n_out, dim, k, sc->block);
                }
                phase_c(sc, rows, md, n, n_out, dim);
            }
        }
        const caps_nn_requant sq = params->s[r];
        for (size_t e = 0; e < md; ++e) {
            const int64_t a = r == 0 ? sc->acc[e] : caps_nn_round_shift_s64(sc->acc[e], p);
            sc->s[e] = caps_nn_sat_s8(
                caps_nn_requantize(caps_nn_sat_s32(a), sq.multiplier, sq.shift));
        }
        const caps_nn_status st = caps_squash_s8(&sdims, &params->squash[r], sc->s, output);
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
    if (caps_routing_params_check(dims, params) != CAPS_NN_SUCCESS || u_hat == NULL ||
        output == NULL || ctx == NULL || ctx->buf == NULL ||
        ctx->size < caps_dynamic_routing_s8_get_buffer_size(dims)) {
        return CAPS_NN_ARG_ERROR;
    }
    const int32_t need = caps_dynamic_routing_s8_get_buffer_size(dims);
    cm_scratch sc;
    carve(ctx->buf, dims, (uint8_t *)ctx->buf + need, (size_t)(ctx->size - need), 0, &sc);
    const cm_source src = {u_hat, NULL, NULL, NULL, NULL};
    return routing_core(dims, params, &src, &sc, output);
}

caps_nn_status caps_class_caps_s8(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                  const caps_class_caps_params *params,
                                  int32_t store_predictions, const int8_t *input,
                                  const int8_t *weights, int8_t *output)
{
    if (params == NULL || caps_predictions_params_check(dims, &params->pred) != CAPS_NN_SUCCESS ||
        caps_routing_params_check(dims, &params->routing) != CAPS_NN_SUCCESS || input == NULL ||
        weights == NULL || output == NULL || ctx == NULL || ctx->buf == NULL ||
        ctx->size < caps_class_caps_s8_get_buffer_size(dims, store_predictions)) {
        return CAPS_NN_ARG_ERROR;
    }
    const size_t md = (size_t)dims->n_out * (size_t)dims->dim_out;
    const int32_t need = caps_class_caps_s8_get_buffer_size(dims, store_predictions);
    const int32_t routing_bytes = caps_dynamic_routing_s8_get_buffer_size(dims);
    uint8_t *base = (uint8_t *)ctx->buf;
    /* [routing][u_hat or one row][predictions][caller's extra bytes] */
    int8_t *uhat = (int8_t *)base + routing_bytes;
    const size_t uhat_bytes = store_predictions ? A8((size_t)dims->n_in * md) : A8(md);
    void *pred_buf = base + routing_bytes + uhat_bytes;

    cm_scratch sc;
    carve(base, dims, base + need, (size_t)(ctx->size - need), !store_predictions, &sc);
    caps_cm_pred pc;
    caps_cm_pred_init(&pc, dims, &params->pred, pred_buf);
    cm_source src = {NULL, &pc, input, weights, uhat};
    if (store_predictions) {
        for (int32_t i = 0; i < dims->n_in; ++i) {
            caps_cm_predict_capsule(&pc, input + (size_t)i * (size_t)dims->dim_in,
                                    weights + (size_t)i * md * (size_t)dims->dim_in,
                                    uhat + (size_t)i * md);
        }
        src.stored = uhat;
    }
    return routing_core(dims, &params->routing, &src, &sc, output);
}
