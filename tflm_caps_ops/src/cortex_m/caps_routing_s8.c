/*
 * Cortex-M dynamic routing and class-capsule layer (CMSIS-NN style),
 * bit-exact with src/portable/caps_routing_s8.c.
 *
 * Iteration 0 sums the predictions over input capsules with SXTAB16
 * (two 16-bit lanes per register, flushed before they can overflow).
 * Iterations r >= 1 go over blocks of up to 255 input capsules in three
 * phases:
 *  A  (per output capsule j, over the block's capsules i): agreement
 *     u_hat(j|i) . v_j with SXTB16/SMLAD against v_j unpacked once per
 *     iteration and held in registers, and the logit update (carry share
 *     from a 256-entry table, agreement requantization, QADD);
 *  B  (per input capsule i): integer softmax of its logits (max four at a
 *     time with SSUB8/SEL, shared exp table, one exact 64/32 reciprocal)
 *     into Q15 couplings of the block buffer (USAT to 2^15 - 1);
 *  C  (per output capsule j, per group of dimensions): s_j += c_ij u_hat(j|i)
 *     over the block with SMLAD on coupling pairs into int32 registers,
 *     then added to the int64 accumulators once per block.
 * (N_out, D_out) = (10, 6) and (10, 16), the published CapsNets, get
 * loops with constant trip counts.  A coupling of exactly 2^15 does not fit
 * a signed halfword: it is stored as 2^15 - 1 and the missing 1 * u_hat is
 * added to the int64 accumulator right away.  At most 255 capsules per
 * block keep the int32 partial sums from overflowing (|c u| < 2^22).  The
 * block buffer is the tail of the routing scratch, free during iterations
 * >= 1.  Stack: about 2.3 KB (unpacked v, carry table, exponentials).
 */
#include "caps_cm_internal.h"

#define A8(x) (((size_t)(x) + 7u) & ~(size_t)7u)

/* Per-byte signed maximum of two words of four int8. */
CAPS_CM_INLINE uint32_t caps_cm_max_s8x4(uint32_t a, uint32_t b)
{
#if CAPS_CM_DSP
    uint32_t r;
    __asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(r) : "r"(a), "r"(b) : "cc");
    return r;
#else
    uint32_t r = 0;
    for (int32_t k = 0; k < 32; k += 8) {
        const int8_t x = (int8_t)(a >> k), y = (int8_t)(b >> k);
        r |= (uint32_t)(uint8_t)(x > y ? x : y) << k;
    }
    return r;
#endif
}

/* min(caps_bm_softmax_q15(e, recip), 2^15 - 1): the high product word
 * (< 2^30) rounded to Q15 and saturated by one USAT with a shift. */
CAPS_CM_INLINE uint32_t caps_cm_coupling_q15(uint32_t e, uint32_t recip)
{
    const uint32_t hi = (uint32_t)(((uint64_t)e * recip) >> 32) + (1u << 14);
#if CAPS_CM_DSP
    uint32_t r;
    __asm__("usat %0, #15, %1, asr #15" : "=r"(r) : "r"(hi));
    return r;
#else
    const uint32_t c = hi >> 15;
    return c > 32767u ? 32767u : c;
#endif
}
#define CM_MAX_BLOCK 255
#define CM_EBUF 32 /* couplings of up to this many output capsules kept on the stack */
#if defined(__GNUC__) && !defined(__clang__)
#define CM_UNROLL _Pragma("GCC unroll 16")
#else
#define CM_UNROLL
#endif

/* Keeps a cold helper out of routing_core, whose hot loops GCC allocates
 * registers for worse when it grows. */
#if defined(__GNUC__)
#define CM_NOINLINE __attribute__((noinline))
#else
#define CM_NOINLINE
#endif

typedef struct {
    int64_t *acc;     /* [md] */
    uint32_t *table;  /* [256] exp(-k S_b) in Q30 */
    int8_t *logits;   /* [n_in * n_out] */
    int8_t *s;        /* [md], written at the end of each iteration */
    int16_t *cbuf;    /* [n_out][block] couplings of the current block */
    int8_t *rowbuf;   /* recompute mode: the block's predictions [block][md] */
    int32_t block;
} cm_scratch;

/* Where the predictions of input capsule i come from. */
typedef struct {
    const int8_t *stored; /* [n_in, md] or NULL: recompute into sc->rowbuf */
    const caps_cm_pred *pc;
    const int8_t *input;
    const int8_t *weights;
} cm_source;

/* Carves the routing scratch (caps_dynamic_routing_s8_get_buffer_size
 * bytes at buf); the block buffer is its tail, free during iterations >= 1
 * and sized for blocks of min(N_in, 255) capsules.  When predictions are
 * recomputed it also holds the block's prediction rows (smaller blocks). */
static void carve(void *buf, const caps_class_caps_dims *dims, int32_t recompute, cm_scratch *sc)
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
    /* s, the A8(4 N_out) words and the coupling block of routing_bytes
     * (src/common/caps_nn_checks.c) are free during iterations >= 1 */
    const size_t cb = (size_t)dims->n_in < 256u ? (size_t)dims->n_in : 256u;
    const size_t cap = A8(md) + A8(4 * (size_t)dims->n_out) + A8(2 * (size_t)dims->n_out * cb);
    sc->cbuf = (int16_t *)(void *)p;
    /* >= 1: cap >= md + 2 n_out */
    size_t block = cap / (2u * (size_t)dims->n_out + (recompute ? md : 0u));
    if (block > CM_MAX_BLOCK) {
        block = CM_MAX_BLOCK;
    }
    if (block > (size_t)dims->n_in) {
        block = (size_t)dims->n_in;
    }
    sc->block = (int32_t)block;
    sc->rowbuf = recompute ? (int8_t *)p + 2u * (size_t)dims->n_out * block : NULL;
}

/* The prediction rows of input capsules [i, i + n): stored, or recomputed
 * into the block buffer. */
static const int8_t *source_rows(const cm_source *src, const cm_scratch *sc, size_t md,
                                 int32_t i, int32_t n)
{
    if (src->stored != NULL) {
        return src->stored + (size_t)i * md;
    }
    caps_cm_predict_layer(src->pc, src->input + (size_t)i * (size_t)src->pc->dim_in,
                          src->weights + (size_t)i * md * (size_t)src->pc->dim_in, sc->rowbuf,
                          n);
    return sc->rowbuf;
}

/* ---------------------------------------------------------------------
 * Iteration 0: acc += sum over n rows of u_hat (int32 lanes are flushed
 * every 255 rows).
 * ------------------------------------------------------------------- */
static CM_NOINLINE void sum_rows(const int8_t *uhat, int32_t n_in, size_t md, int64_t *acc)
{
    const size_t words = md / 4;
    for (int32_t i0 = 0; i0 < n_in; i0 += CM_MAX_BLOCK) {
        const int32_t n = n_in - i0 < CM_MAX_BLOCK ? n_in - i0 : CM_MAX_BLOCK;
        size_t wdx = 0;
        for (; wdx + 4 <= words; wdx += 4) {
            const int8_t *p = uhat + (size_t)i0 * md + 4 * wdx;
            uint32_t a0 = 0, b0 = 0, a1 = 0, b1 = 0, a2 = 0, b2 = 0, a3 = 0, b3 = 0;
            for (int32_t i = 0; i < n; ++i) {
                const uint32_t x0 = caps_cm_read_s8x4(p);
                const uint32_t x1 = caps_cm_read_s8x4(p + 4);
                const uint32_t x2 = caps_cm_read_s8x4(p + 8);
                const uint32_t x3 = caps_cm_read_s8x4(p + 12);
                a0 = caps_cm_sxtab16(a0, x0);
                b0 = caps_cm_sxtab16_ror8(b0, x0);
                a1 = caps_cm_sxtab16(a1, x1);
                b1 = caps_cm_sxtab16_ror8(b1, x1);
                a2 = caps_cm_sxtab16(a2, x2);
                b2 = caps_cm_sxtab16_ror8(b2, x2);
                a3 = caps_cm_sxtab16(a3, x3);
                b3 = caps_cm_sxtab16_ror8(b3, x3);
                p += md;
            }
            int64_t *q = acc + 4 * wdx;
            const uint32_t lanes[8] = {a0, b0, a1, b1, a2, b2, a3, b3};
            for (int32_t w = 0; w < 4; ++w) {
                q[4 * w + 0] += (int16_t)(lanes[2 * w] & 0xFFFFu);
                q[4 * w + 1] += (int16_t)(lanes[2 * w + 1] & 0xFFFFu);
                q[4 * w + 2] += (int16_t)(lanes[2 * w] >> 16);
                q[4 * w + 3] += (int16_t)(lanes[2 * w + 1] >> 16);
            }
        }
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
 * Phase AB.
 * ------------------------------------------------------------------- */

/* v of the previous iteration, unpacked once per iteration so that each
 * agreement costs one load and two SXTB16 per 4 dims of u_hat only: per
 * output capsule, per 4 dims the halfword pairs (v0, v2) and (v1, v3),
 * then (v4, v5)-style pairs for the tail and a last single value. */
#define CM_VPREP_WORDS 256

CAPS_CM_INLINE int32_t vprep_words(int32_t dim)
{
    return 2 * (dim / 4) + (dim % 4) / 2 + (dim % 2);
}

static void prepare_v(const int8_t *v, int32_t n_out, int32_t dim, uint32_t *out)
{
    for (int32_t j = 0; j < n_out; ++j) {
        const int8_t *x = v + (size_t)j * dim;
        int32_t d = 0;
        for (; d + 4 <= dim; d += 4) {
            const uint32_t w = caps_cm_read_s8x4(x + d);
            *out++ = caps_cm_sxtb16(w);
            *out++ = caps_cm_sxtb16_ror8(w);
        }
        if (dim - d >= 2) {
            *out++ = ((uint32_t)(uint16_t)(int16_t)x[d]) | ((uint32_t)(uint16_t)(int16_t)x[d + 1] << 16);
            d += 2;
        }
        if (d < dim) {
            *out++ = (uint32_t)(int32_t)x[d];
        }
    }
}

/* Agreement of one (i, j) against prepared v: sum_d u_hat(j|i)_d v_jd. */
CAPS_CM_INLINE int32_t agree_dot(const int8_t *restrict u, const uint32_t *restrict vp,
                                 const int32_t dim)
{
    int32_t acc = 0;
    int32_t d = 0;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 4
#endif
    for (; d + 4 <= dim; d += 4) {
        const uint32_t x = caps_cm_read_s8x4(u + d);
        acc = caps_cm_smlad(caps_cm_sxtb16(x), vp[0], acc);
        acc = caps_cm_smlad(caps_cm_sxtb16_ror8(x), vp[1], acc);
        vp += 2;
    }
    if (dim - d >= 2) {
        const uint32_t pair = caps_cm_pkhbt16((uint32_t)(int32_t)u[d], (uint32_t)(int32_t)u[d + 1]);
        acc = caps_cm_smlad(pair, vp[0], acc);
        vp += 1;
        d += 2;
    }
    if (d < dim) {
        acc += (int32_t)u[d] * (int32_t)vp[0];
    }
    return acc;
}

/* Agreement from plain v (when the prepared copy does not fit the stack). */
CAPS_CM_INLINE int32_t agree_dot_plain(const int8_t *u, const int8_t *v, int32_t dim)
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
    const int32_t *carry_tab; /* CM_UPDATE_CARRY: requantize(b, carry) at [b], b in [-128, 127] */
    int32_t has_carry; /* update u >= 1 */
    int32_t kind;      /* CM_UPDATE_* */
} cm_update;

enum { CM_UPDATE_FIRST = 0, CM_UPDATE_CARRY = 1, CM_UPDATE_SLOW = 2 };

static cm_update update_init(const caps_routing_params *params, int32_t u, int32_t dim)
{
    cm_update up;
    up.agree_raw = params->agree[u];
    up.carry_raw = params->carry[u];
    up.has_carry = u > 0;
    up.carry_tab = NULL;
    up.carry = caps_bm_requant_init(up.carry_raw.multiplier, up.carry_raw.shift, 128);
    int64_t max_abs = (int64_t)dim * 128 * 128;
    if (u > 0) {
        /* |requantize(b, carry)| <= 128 * real + 1 <= 2^(shift+1) * 128 + 1 */
        const int32_t sh = up.carry_raw.shift;
        max_abs += sh >= 0 ? ((int64_t)128 << (sh + 1)) + 1 : 129;
    }
    up.agree = caps_bm_requant_init(up.agree_raw.multiplier, up.agree_raw.shift, max_abs);
    /* fast kinds: agreement scaled down (shift < 0), carry scaled up
     * (shift >= 0), both exact by the split; anything else is generic */
    const int32_t agree_ok = up.agree.fast && up.agree_raw.shift < 0;
    const int32_t carry_ok = up.carry.fast && up.carry_raw.shift >= 0;
    if (agree_ok && u == 0) {
        up.kind = CM_UPDATE_FIRST;
    } else if (agree_ok && carry_ok) {
        up.kind = CM_UPDATE_CARRY;
    } else {
        up.kind = CM_UPDATE_SLOW;
    }
    return up;
}

/* New logit of one (i, j) from its agreement (kind is a constant at each
 * call site). */
CAPS_CM_INLINE int32_t update_logit(const cm_update *up, const int32_t kind, int32_t a,
                                    int32_t b_old)
{
    if (kind == CM_UPDATE_CARRY) {
        a = caps_cm_qadd(a, up->carry_tab[b_old]);
    }
    if (kind != CM_UPDATE_SLOW) {
        /* agreement: lshift 1, rshift >= 1 */
        const int32_t t = caps_cm_smmlar((int32_t)((uint32_t)a << 1), up->agree.multiplier,
                                         up->agree.half) + (a >> 31);
        return caps_cm_ssat8(t >> up->agree.rshift);
    }
    if (up->has_carry) {
        const int32_t old = caps_nn_requantize(b_old, up->carry_raw.multiplier,
                                               up->carry_raw.shift);
        a = caps_nn_sat_s32((int64_t)a + old);
    }
    return caps_nn_sat_s8(caps_nn_requantize(a, up->agree_raw.multiplier, up->agree_raw.shift));
}

/* Phase A for output capsule j over one block: the new logits b[i, j] of
 * the block's input capsules.  Output capsule outer, input capsule inner:
 * the prepared v_j stays in registers (dim and kind are constants at the
 * call sites, so the copy and the agreement loop unroll). */
CAPS_CM_INLINE void phase_a_dim(const cm_update *up, const int32_t kind, const int8_t *row,
                                size_t md, const uint32_t *vpj, const int8_t *vj, int8_t *b,
                                int32_t n_out, int32_t n, const int32_t dim)
{
    if (kind == CM_UPDATE_SLOW) {
        for (int32_t k = 0; k < n; ++k) {
            *b = (int8_t)update_logit(up, kind, agree_dot_plain(row, vj, dim), *b);
            row += md;
            b += n_out;
        }
        return;
    }
    uint32_t vloc[CM_VPREP_WORDS / 8];
    const int32_t vw = vprep_words(dim);
    const uint32_t *vv = vpj;
    if (vw <= CM_VPREP_WORDS / 8) {
        for (int32_t w = 0; w < vw; ++w) {
            vloc[w] = vpj[w];
        }
        vv = vloc;
    }
    const int8_t *const end = b + (size_t)n * (size_t)n_out;
    while (b != end) {
        *b = (int8_t)update_logit(up, kind, agree_dot(row, vv, dim), *b);
        row += md;
        b += n_out;
    }
}

/* Largest of n >= 1 logits: four at a time with SSUB8/SEL. */
CAPS_CM_INLINE int32_t max_logit(const int8_t *b, int32_t n)
{
    int32_t j = 0;
    int32_t mx = -128;
#if CAPS_CM_DSP
    if (n >= 4) {
        uint32_t m = caps_cm_read_s8x4(b);
        for (j = 4; j + 4 <= n; j += 4) {
            m = caps_cm_max_s8x4(m, caps_cm_read_s8x4(b + j));
        }
        m = caps_cm_max_s8x4(m, (m >> 16) | (m << 16));
        m = caps_cm_max_s8x4(m, (m >> 8) | (m << 24));
        mx = (int8_t)(m & 0xFFu);
    }
#endif
    for (; j < n; ++j) {
        mx = b[j] > mx ? b[j] : mx;
    }
    return mx;
}

/* Phase B for one input capsule: the Q15 couplings of its logits b[0..n_out)
 * into column `col` of the block buffer. */
CAPS_CM_INLINE void phase_b_capsule(const cm_scratch *sc, const int8_t *restrict row,
                            const int8_t *restrict b, const int32_t n_out, const int32_t dim,
                            int32_t col)
{
    uint32_t ebuf[CM_EBUF];
    const int32_t mx = max_logit(b, n_out);
    const uint32_t *restrict table = sc->table;
    uint64_t sum = 0;
    const int32_t keep = n_out <= CM_EBUF;
    int32_t j = 0;
    if (keep) {
        /* pairs of exponentials (each <= 2^30) add without carry in 32 bits */
        CM_UNROLL
        for (; j + 2 <= n_out; j += 2) {
            const uint32_t e0 = table[mx - b[j]];
            const uint32_t e1 = table[mx - b[j + 1]];
            ebuf[j] = e0;
            ebuf[j + 1] = e1;
            sum += e0 + e1;
        }
        if (j < n_out) {
            ebuf[j] = table[mx - b[j]];
            sum += ebuf[j];
        }
    } else {
        for (; j < n_out; ++j) {
            sum += table[mx - b[j]];
        }
    }
    const uint32_t recip = caps_bm_softmax_recip(sum);
    int16_t *restrict c = sc->cbuf + col;
    const int32_t block = sc->block;
    if (keep) {
        CM_UNROLL
        for (j = 0; j < n_out; ++j) {
            c[(size_t)j * block] = (int16_t)caps_cm_coupling_q15(ebuf[j], recip);
        }
    } else {
        for (j = 0; j < n_out; ++j) {
            *c = (int16_t)caps_cm_coupling_q15(table[mx - b[j]], recip);
            c += block;
        }
    }
    /* The largest coupling is the one of the largest logit (table[0]); when
     * it is exactly 2^15 it was stored as 2^15 - 1: add the missing
     * 1 * u_hat of every such output capsule now. */
    if (caps_bm_softmax_q15(table[0], recip) > 32767) {
        for (j = 0; j < n_out; ++j) {
            if (b[j] == mx) {
                int64_t *acc = sc->acc + (size_t)j * dim;
                const int8_t *u = row + (size_t)j * dim;
                for (int32_t d = 0; d < dim; ++d) {
                    acc[d] += u[d];
                }
            }
        }
    }
}

CAPS_CM_INLINE void phase_b_block_n(const cm_scratch *sc, const int8_t *rows, size_t md,
                                    const int8_t *b, int32_t n, const int32_t n_out, int32_t dim)
{
    for (int32_t k = 0; k < n; ++k) {
        phase_b_capsule(sc, rows, b, n_out, dim, k);
        rows += md;
        b += n_out;
    }
}

/* Phase B of one block; 10 output capsules (the published CapsNets) get
 * fully unrolled softmax loops. */
static void phase_b_block(const cm_scratch *sc, const int8_t *rows, size_t md, const int8_t *b,
                          int32_t n, int32_t n_out, int32_t dim)
{
    if (n_out == 10) {
        phase_b_block_n(sc, rows, md, b, n, 10, dim);
    } else {
        phase_b_block_n(sc, rows, md, b, n, n_out, dim);
    }
}

/* One block of phases A and B, dispatched on constant dims and update kind. */
CAPS_CM_INLINE void phase_ab_block_dim(const cm_update *up, const int32_t kind,
                                       const cm_scratch *sc, const int8_t *rows, size_t md,
                                       const uint32_t *vp, const int8_t *v, int32_t i0,
                                       int32_t n, int32_t n_out, const int32_t dim)
{
    int8_t *b = sc->logits + (size_t)i0 * n_out;
    const int32_t vw = vprep_words(dim);
    for (int32_t j = 0; j < n_out; ++j) {
        phase_a_dim(up, kind, rows + (size_t)j * dim, md, vp != NULL ? vp + (size_t)j * vw : NULL,
                    v + (size_t)j * dim, b + j, n_out, n, dim);
    }
    phase_b_block(sc, rows, md, b, n, n_out, dim);
}

CAPS_CM_INLINE void phase_ab_block_kind(const cm_update *up, const int32_t kind,
                                        const cm_scratch *sc, const int8_t *rows, size_t md,
                                        const uint32_t *vp, const int8_t *v, int32_t i0,
                                        int32_t n, int32_t n_out, int32_t dim)
{
    /* shapes of the published CapsNets get unrolled agreement loops with
     * constant strides (fewer registers, immediate offsets) */
    if (n_out == 10 && dim == 6) {
        phase_ab_block_dim(up, kind, sc, rows, 60, vp, v, i0, n, 10, 6);
    } else if (n_out == 10 && dim == 16) {
        phase_ab_block_dim(up, kind, sc, rows, 160, vp, v, i0, n, 10, 16);
    } else if (dim == 6) {
        phase_ab_block_dim(up, kind, sc, rows, md, vp, v, i0, n, n_out, 6);
    } else if (dim == 16) {
        phase_ab_block_dim(up, kind, sc, rows, md, vp, v, i0, n, n_out, 16);
    } else {
        phase_ab_block_dim(up, kind, sc, rows, md, vp, v, i0, n, n_out, dim);
    }
}

/* Phases A and B of one block whose predictions start at `rows` (stride md). */
static void phase_ab_block(const cm_update *up, const cm_scratch *sc, const int8_t *rows,
                           size_t md, const uint32_t *vp, const int8_t *v, int32_t i0, int32_t n,
                           int32_t n_out, int32_t dim)
{
    if (up->kind == CM_UPDATE_FIRST) {
        phase_ab_block_kind(up, CM_UPDATE_FIRST, sc, rows, md, vp, v, i0, n, n_out, dim);
    } else if (up->kind == CM_UPDATE_CARRY) {
        phase_ab_block_kind(up, CM_UPDATE_CARRY, sc, rows, md, vp, v, i0, n, n_out, dim);
    } else {
        phase_ab_block_dim(up, CM_UPDATE_SLOW, sc, rows, md, vp, v, i0, n, n_out, dim);
    }
}

/* ---------------------------------------------------------------------
 * Phase C: s_j += sum_i c_ij u_hat(j|i) over one block.
 * ------------------------------------------------------------------- */

/* Four dimensions d0..d0+3 of output capsule j.  Two input capsules per
 * step: their couplings are adjacent halfwords (one load), their
 * predictions are paired per dimension with PKHBT/PKHTB, and one SMLAD
 * adds both products. */
CAPS_CM_INLINE void phase_c_group4(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                   int64_t *acc)
{
    int32_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    int32_t i = 0;
#if CAPS_CM_DSP
    for (; i + 2 <= n; i += 2) {
        uint32_t cp;
        memcpy(&cp, c + i, 4);
        const uint32_t x0 = caps_cm_read_s8x4(rows);
        const uint32_t x1 = caps_cm_read_s8x4(rows + md);
        const uint32_t l0 = caps_cm_sxtb16(x0), l1 = caps_cm_sxtb16(x1);
        const uint32_t h0 = caps_cm_sxtb16_ror8(x0), h1 = caps_cm_sxtb16_ror8(x1);
        p0 = caps_cm_smlad(caps_cm_pkhbt16(l0, l1), cp, p0);
        p2 = caps_cm_smlad(caps_cm_pkhtb16(l0, l1), cp, p2);
        p1 = caps_cm_smlad(caps_cm_pkhbt16(h0, h1), cp, p1);
        p3 = caps_cm_smlad(caps_cm_pkhtb16(h0, h1), cp, p3);
        rows += 2 * md;
    }
#endif
    for (; i < n; ++i) {
        const int32_t cc = c[i];
        p0 += rows[0] * cc;
        p1 += rows[1] * cc;
        p2 += rows[2] * cc;
        p3 += rows[3] * cc;
        rows += md;
    }
    acc[0] += p0;
    acc[1] += p1;
    acc[2] += p2;
    acc[3] += p3;
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

/* Two dimensions d0, d0+1 (dim 6's last two, the tail of dim % 4 >= 2),
 * two input capsules per step: [u0 u1 u0' u1']
 * from two halfword loads, whose SXTB16 halves are the pairs (u0, u0')
 * and (u1, u1') against the adjacent couplings (c, c'). */
CAPS_CM_INLINE void phase_c_pair2(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                  int64_t *acc)
{
    int32_t p0 = 0, p1 = 0;
    int32_t i = 0;
#if CAPS_CM_DSP
    for (; i + 2 <= n; i += 2) {
        uint32_t cp;
        memcpy(&cp, c + i, 4);
        const uint32_t t = caps_cm_read_s8x2(rows) | (caps_cm_read_s8x2(rows + md) << 16);
        p0 = caps_cm_smlad(caps_cm_sxtb16(t), cp, p0);
        p1 = caps_cm_smlad(caps_cm_sxtb16_ror8(t), cp, p1);
        rows += 2 * md;
    }
#endif
    for (; i < n; ++i) {
        const int32_t cc = c[i];
        p0 += rows[0] * cc;
        p1 += rows[1] * cc;
        rows += md;
    }
    acc[0] += p0;
    acc[1] += p1;
}

CAPS_CM_INLINE void phase_c_dims(const cm_scratch *sc, const int8_t *rows, const size_t md,
                                 int32_t n, const int32_t n_out, const int32_t dim)
{
    for (int32_t j = 0; j < n_out; ++j) {
        const int16_t *c = sc->cbuf + (size_t)j * sc->block;
        const int8_t *r = rows + (size_t)j * dim;
        int64_t *acc = sc->acc + (size_t)j * dim;
        /* passes of at most four dims keep every partial sum in a register */
        int32_t d = 0;
        for (; d + 4 <= dim; d += 4) {
            phase_c_group4(r + d, md, c, n, acc + d);
        }
        if (d + 2 <= dim) {
            phase_c_pair2(r + d, md, c, n, acc + d);
            d += 2;
        }
        if (d < dim) {
            phase_c_group1(r + d, md, c, n, acc + d);
        }
    }
}

static void phase_c(const cm_scratch *sc, const int8_t *rows, size_t md, int32_t n, int32_t n_out,
                    int32_t dim)
{
    if (n_out == 10 && dim == 6) {
        phase_c_dims(sc, rows, 60, n, 10, 6);
    } else if (n_out == 10 && dim == 16) {
        phase_c_dims(sc, rows, 160, n, 10, 16);
    } else {
        phase_c_dims(sc, rows, md, n, n_out, dim);
    }
}

/* caps_nn_exp2_neg_q30 with 32-bit Horner terms: every partial sum of
 * the polynomial stays below 2^31 in magnitude (sum |C_k| < 1.1e9, x < 2^30)
 * and the result is at most 2^30, so each step is one 32x32->64 SMULL
 * instead of a 64x64 product, with the same integers. */
static uint32_t cm_exp2_neg_q30(int32_t w_q16)
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
            for (size_t e = 0; e < md; ++e) {
                sc->acc[e] = 0;
            }
            /* stored: all rows at once */
            const int32_t block = src->stored != NULL ? n_in : sc->block;
            for (int32_t i0 = 0; i0 < n_in; i0 += block) {
                const int32_t n = n_in - i0 < block ? n_in - i0 : block;
                sum_rows(source_rows(src, sc, md, i0, n), n, md, sc->acc);
            }
        } else {
            const caps_nn_requant beta = params->exp_beta[r - 1];
            for (int32_t k = 0; k < 256; ++k) {
                sc->table[k] = cm_exp2_neg_q30(caps_nn_requantize(k, beta.multiplier, beta.shift));
            }
            for (size_t e = 0; e < md; ++e) {
                sc->acc[e] = 0;
            }
            cm_update up = update_init(params, r - 1, dim);
            int32_t carry_tab[256];
            if (up.kind == CM_UPDATE_CARRY) {
                /* the old logit's share of the update, one per int8 value
                 * (carry: rshift 0, no rounding terms) */
                for (int32_t q = -128; q < 128; ++q) {
                    carry_tab[q + 128] = caps_cm_smmlar((int32_t)((uint32_t)q << up.carry.lshift),
                                                        up.carry.multiplier, 0);
                }
                up.carry_tab = carry_tab + 128;
            }
            uint32_t vprep[CM_VPREP_WORDS];
            const uint32_t *vp = NULL;
            if ((int64_t)n_out * vprep_words(dim) <= CM_VPREP_WORDS) {
                prepare_v(output, n_out, dim, vprep);
                vp = vprep;
            } else {
                up.kind = CM_UPDATE_SLOW; /* v too big to unpack on the stack */
            }
            for (int32_t i0 = 0; i0 < n_in; i0 += sc->block) {
                const int32_t n = n_in - i0 < sc->block ? n_in - i0 : sc->block;
                const int8_t *rows = source_rows(src, sc, md, i0, n);
                phase_ab_block(&up, sc, rows, md, vp, output, i0, n, n_out, dim);
                phase_c(sc, rows, md, n, n_out, dim);
            }
        }
        caps_nn_routing_sums_s8(sc->acc, (int32_t)md, r, p, params->s[r].multiplier,
                                params->s[r].shift, sc->s);
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
    cm_scratch sc;
    carve(ctx->buf, dims, 0, &sc);
    const cm_source src = {u_hat, NULL, NULL, NULL};
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
    /* [routing][u_hat, or one row that only the portable kernel uses][predictions] */
    int8_t *uhat = (int8_t *)base + routing_bytes;
    const size_t uhat_bytes = store_predictions ? A8((size_t)dims->n_in * md) : A8(md);
    void *pred_buf = base + routing_bytes + uhat_bytes;

    cm_scratch sc;
    carve(base, dims, !store_predictions, &sc);
    caps_cm_pred pc;
    caps_cm_pred_init(&pc, dims, &params->pred, pred_buf);
    cm_source src = {NULL, &pc, input, weights};
    if (store_predictions) {
        caps_cm_predict_layer(&pc, input, weights, uhat, dims->n_in);
        src.stored = uhat;
    }
    return routing_core(dims, &params->routing, &src, &sc, output);
}
