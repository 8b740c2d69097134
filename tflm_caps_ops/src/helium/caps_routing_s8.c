/*
 * Helium dynamic routing and class-capsule layer, bit-exact with
 * src/portable/caps_routing_s8.c.
 *
 * The routing reads the predictions transposed in tiles of 16 input
 * capsules: tile rows [md][width] (caps_hl_internal.h), so that every
 * phase runs along input capsules in vector lanes.  The class-capsule
 * layer stores its predictions that way (caps_hl_predict with the tile
 * width as row stride); caps_dynamic_routing_s8 transposes its [i][j][d]
 * input block by block (byte scatters), and the recomputing mode predicts
 * each block into tiles of the block buffer.  caps_class_caps_s4 is the
 * same layer with packed 4-bit weights: only its predictions differ
 * (caps_hl_predict reads the packed blocks, caps_predictions_s4.c).
 *
 * Iteration 0: s_jd = sum_i u_hat, one VADDVA per tile row.
 * Iterations r >= 1, per block of up to 256 input capsules:
 *  A  agreements a_ij = u_hat(j|i) . v_j: one byte gather (8-bit offsets
 *     within the tile) fetches the dim_out values of one capsule (two
 *     capsules when dim_out <= 8) and one VMLADAV per capsule against v_j
 *     (zero-padded; output capsule outer, so v_j stays in registers); four
 *     agreements go into lanes for the logit update: the old logit's share
 *     from a 256-entry table (a gather indexed by the logit byte), VQADD,
 *     the agreement requantization (VQRDMULH, VRSHL), saturation;
 *  B  per input capsule, output capsules in lanes: max (VMAXV), the
 *     exponentials (one gather from the exp table per 4 logits), their
 *     64-bit sum (VADDLVA), one exact reciprocal (scalar, shared backend
 *     math), the Q15 couplings (VMULH, rounding shift, saturation to
 *     2^15 - 1) scattered into the block's coupling rows;
 *  C  s_jd += sum_i c_ij u_hat(j|i): one VMLADAV (int16 x int16) per 8
 *     capsules, 32-bit sums per block (|sum| < 2^30), the couplings loaded
 *     once for four dims.
 * A coupling of exactly 2^15 (one logit dominating) does not fit int16: it
 * is stored as 2^15 - 1 and the missing 1 * u_hat is added right away.
 * The exp table is built in vectors (the Horner steps of
 * caps_bm_exp2_neg_q30 are VQRDMULHs of the doubled fraction).  Partial
 * tiles and blocks take predicated steps (VCTP).
 */
#include <string.h>

#include "caps_hl_internal.h"

#define MIN32(a, b) ((a) < (b) ? (a) : (b))

/* Full unrolling of loops with constant trip counts (the published shapes). */
#if defined(__GNUC__) && !defined(__clang__)
#define HL_UNROLL _Pragma("GCC unroll 16")
#else
#define HL_UNROLL
#endif

/* The prediction tiles of one block: the tile of block capsules
 * [k0, k0 + w) starts at base + k0 md (k0 a multiple of tw), row r at
 * + r w, capsule k0 + c at + c. */
typedef struct {
    const int8_t *base;
    int32_t tw; /* width of a full tile (16, or the block when smaller) */
    int32_t n;  /* capsules in the block */
    int32_t md;
} hl_block;

CAPS_HL_INLINE const int8_t *tile_at(const hl_block *bk, int32_t k0)
{
    return bk->base + (size_t)k0 * (size_t)bk->md;
}

/* Where the prediction rows come from. */
typedef struct {
    const int8_t *stored;   /* class caps, stored: tiles of all n_in capsules */
    const int8_t *natural;  /* routing API: u_hat [n_in][md] */
    const caps_hl_pred *pc; /* recompute: predictions of each block */
    const int8_t *input;
    const int8_t *weights;
} hl_source;

/* Predictions of the w capsules of one tile, int8 or packed weights (out
 * of line: the routing's loops stay as they are for int8). */
static CAPS_HL_NOINLINE void predict_tile(const caps_hl_pred *pc, const int8_t *input,
                                          const int8_t *weights, int8_t *tile, int32_t w)
{
    if (pc->core.s4) {
        caps_hl_predict_s4(pc, input, weights, tile, w, w, 1);
    } else {
        caps_hl_predict(pc, input, weights, tile, w, w, 1);
    }
}

/* The tiles of input capsules [i0, i0 + n) (i0 a multiple of the tile
 * width): stored, or written into the block buffer. */
static hl_block block_tiles(const hl_source *src, const caps_nn_routing_buffers *sc,
                            const caps_class_caps_dims *dims, int32_t i0, int32_t n)
{
    const int32_t md = dims->n_out * dims->dim_out;
    hl_block bk;
    bk.n = n;
    bk.md = md;
    if (src->stored != NULL) {
        bk.base = src->stored + (size_t)i0 * (size_t)md;
        bk.tw = (int32_t)CAPS_HL_TILE;
        return bk;
    }
    bk.base = sc->rowbuf;
    bk.tw = MIN32((int32_t)CAPS_HL_TILE, sc->block);
    for (int32_t k0 = 0; k0 < n; k0 += bk.tw) {
        const int32_t w = MIN32(bk.tw, n - k0);
        int8_t *tile = sc->rowbuf + (size_t)k0 * (size_t)md;
        if (src->natural != NULL && 7 * md > 65535) {
            /* transpose, large rows: four elements of a capsule per step into
             * four tile rows (a byte scatter) */
            const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)w);
            for (int32_t c = 0; c < w; ++c) {
                const int8_t *x = src->natural + (size_t)(i0 + k0 + c) * (size_t)md;
                int8_t *t = tile + c;
                for (int32_t r = 0; r < md; r += 4) {
                    const mve_pred16_t p = vctp32q((uint32_t)(md - r));
                    vstrbq_scatter_offset_p_s32(t, offs, vldrbq_z_s32(x + r, p), p);
                    t += 4 * (size_t)w;
                }
            }
        } else if (src->natural != NULL) {
            /* transpose: tile row r = element r of 8 capsules per step (a
             * halfword-lane byte gather md apart), stored as 8 bytes */
            const uint16x8_t offs = vmulq_n_u16(vidupq_n_u16(0, 1), (uint16_t)md);
            const int8_t *x = src->natural + (size_t)(i0 + k0) * (size_t)md;
            int8_t *t = tile;
            if (w == (int32_t)CAPS_HL_TILE) {
                const int8_t *x8 = x + 8 * (size_t)md;
                for (int32_t r = 0; r < md; ++r) {
                    vstrbq_s16(t, vldrbq_gather_offset_s16(x + r, offs));
                    vstrbq_s16(t + 8, vldrbq_gather_offset_s16(x8 + r, offs));
                    t += CAPS_HL_TILE;
                }
            } else {
                for (int32_t h = 0; h < w; h += 8) {
                    const mve_pred16_t p = vctp16q((uint32_t)(w - h));
                    const int8_t *xh = x + (size_t)h * (size_t)md;
                    for (int32_t r = 0; r < md; ++r) {
                        vstrbq_p_s16(t + (size_t)r * (size_t)w + h,
                                     vldrbq_gather_offset_z_s16(xh + r, offs, p), p);
                    }
                }
            }
        } else {
            const int32_t i = i0 + k0;
            predict_tile(src->pc, src->input + (size_t)i * (size_t)dims->dim_in,
                         caps_hl_pred_weights(src->pc, src->weights, i), tile, w);
        }
    }
    return bk;
}

/* Iteration 0: acc[r] += sum over the block's capsules of row r. */
static CAPS_HL_NOINLINE void sum_rows(const hl_block *bk, int64_t *acc)
{
    const int32_t md = bk->md;
    const size_t tstep = (size_t)bk->tw * (size_t)md;
    const int32_t full = bk->n / bk->tw;
    const int32_t rest = bk->n - full * bk->tw;
    int32_t r = 0;
    if (bk->tw == (int32_t)CAPS_HL_TILE) {
        /* four rows per visit of a tile (constant offsets) */
        for (; r + 4 <= md; r += 4) {
            int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            const int8_t *t = bk->base + (size_t)r * CAPS_HL_TILE;
            for (int32_t q = 0; q < full; ++q) {
                s0 = vaddvaq_s8(s0, vldrbq_s8(t));
                s1 = vaddvaq_s8(s1, vldrbq_s8(t + 16));
                s2 = vaddvaq_s8(s2, vldrbq_s8(t + 32));
                s3 = vaddvaq_s8(s3, vldrbq_s8(t + 48));
                t += tstep;
            }
            acc[r] += s0;
            acc[r + 1] += s1;
            acc[r + 2] += s2;
            acc[r + 3] += s3;
        }
    }
    for (; r < md; ++r) {
        int32_t s = 0;
        const int8_t *t = bk->base + (size_t)r * (size_t)bk->tw;
        const mve_pred16_t p = vctp8q((uint32_t)bk->tw);
        for (int32_t q = 0; q < full; ++q) {
            s = vaddvaq_p_s8(s, vldrbq_z_s8(t, p), p);
            t += tstep;
        }
        acc[r] += s;
    }
    if (rest > 0) {
        /* the last tile is rest wide: its row r starts at r * rest */
        const mve_pred16_t p = vctp8q((uint32_t)rest);
        const int8_t *tl = bk->base + (size_t)full * tstep;
        for (r = 0; r < md; ++r) {
            acc[r] += vaddvaq_p_s8(0, vldrbq_z_s8(tl, p), p);
            tl += rest;
        }
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

/* New logits b[0..4) (tail: the lanes of p) of four capsules and one
 * output capsule (logits [j][i]) from their agreements a. */
CAPS_HL_INLINE void update4(const hl_update *up, int32x4_t a, int8_t *b, mve_pred16_t p,
                            const int tail, const int carry, const int fast)
{
    if (carry) {
        const uint32x4_t old =
            tail ? vldrbq_z_u32((const uint8_t *)b, p) : vldrbq_u32((const uint8_t *)b);
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

/* Gather offsets of a tile of width w: lane l reads dim l (l < dim, else
 * dim 0) of the first capsule; with `pair`, lanes 8-15 the same of the
 * next capsule, else they read dim 0 of the first. */
CAPS_HL_INLINE uint8x16_t tile_offsets(int32_t w, int32_t dim, const int pair)
{
    const uint8x16_t lane = vidupq_n_u8(0, 1);
    const uint8x16_t d = vandq_u8(lane, vdupq_n_u8(7));
    const uint8x16_t dv = vpselq_u8(d, vdupq_n_u8(0), vcmphiq_u8(vdupq_n_u8((uint8_t)dim), d));
    if (pair) {
        return vaddq_u8(vmulq_n_u8(dv, (uint8_t)w), vshrq_n_u8(lane, 3));
    }
    if (dim <= 8) {
        return vpselq_u8(vmulq_n_u8(dv, (uint8_t)w), vdupq_n_u8(0), vctp8q(8));
    }
    return vmulq_n_u8(vpselq_u8(lane, vdupq_n_u8(0), vctp8q((uint32_t)dim)), (uint8_t)w);
}

/* Four agreements of capsules t, t+1, t+2, t+3 (pair: two gathers, the
 * second through offsets 2 higher, off2). */
CAPS_HL_INLINE int32x4_t agree4(const int8_t *t, uint8x16_t off, uint8x16_t off2, int8x16_t va,
                                int8x16_t vb, const int pair)
{
    int32_t a0, a1, a2, a3;
    if (pair) {
        const int8x16_t g01 = vldrbq_gather_offset_s8(t, off);
        const int8x16_t g23 = vldrbq_gather_offset_s8(t, off2);
        a0 = vmladavq_s8(g01, va);
        a2 = vmladavq_s8(g23, va);
        a1 = vmladavq_s8(g01, vb);
        a3 = vmladavq_s8(g23, vb);
    } else {
        a0 = vmladavq_s8(vldrbq_gather_offset_s8(t, off), va);
        a1 = vmladavq_s8(vldrbq_gather_offset_s8(t + 1, off), va);
        a2 = vmladavq_s8(vldrbq_gather_offset_s8(t + 2, off), va);
        a3 = vmladavq_s8(vldrbq_gather_offset_s8(t + 3, off), va);
    }
    return caps_hl_vec4(a0, a1, a2, a3);
}

/* Phase A in one tile for output capsule j, dim <= 16: agreements of
 * capsules [0, w) by byte gathers and VMLADAV, logit updates in lanes.
 * `pair` (dim <= 8): one gather serves two capsules (lanes 0-7 and 8-15,
 * patterns va and vb); else one capsule per gather (pattern va). */
CAPS_HL_INLINE void agree_tile(const hl_update *up, const int8_t *t, int32_t w, int32_t dim,
                               uint8x16_t off, int8x16_t va, int8x16_t vb, int8_t *b,
                               const int pair, const int carry,
                               const int fast)
{
    const uint8x16_t off2 = vaddq_n_u8(off, 2);
    int32_t c = 0;
    for (; c + 4 <= w; c += 4) {
        update4(up, agree4(t, off, off2, va, vb, pair), b, 0, 0, carry, fast);
        t += 4;
        b += 4;
    }
    if (c < w) {
        /* one capsule per gather (no partner beyond the tile is read) */
        const uint8x16_t off1 = pair ? tile_offsets(w, dim, 0) : off;
        int32_t a[4] = {0, 0, 0, 0};
        for (int32_t l = 0; l < w - c; ++l) {
            a[l] = vmladavq_s8(vldrbq_gather_offset_s8(t + l, off1), va);
        }
        update4(up, vld1q_s32(a), b, vctp32q((uint32_t)(w - c)), 1, carry, fast);
    }
}

/* Phase A, dim <= 16, over the block (flags constant).  Logits and
 * couplings share the prediction tiles' layout: the logit of tile capsule
 * c and output capsule j at logits + k0 n_out + j w + c (logits: the
 * block's first).  Full tiles of 16 take a loop of four unrolled groups. */
CAPS_HL_INLINE void phase_a_gather(const hl_update *up, const hl_block *bk, const int8_t *v,
                                   int8_t *logits, int32_t n_out, int32_t dim, const int pair,
                                   const int carry, const int fast)
{
    const hl_update u = *up; /* a local copy: the logit stores could alias *up */
    const int32_t tw = bk->tw;
    const int32_t full = tw == (int32_t)CAPS_HL_TILE ? bk->n / tw : 0;
    const size_t tstep = (size_t)CAPS_HL_TILE * (size_t)bk->md;
    const size_t lstep = (size_t)CAPS_HL_TILE * (size_t)n_out;
    const uint8x16_t off16 = tile_offsets((int32_t)CAPS_HL_TILE, dim, pair);
    const uint8x16_t off16b = vaddq_n_u8(off16, 2);
    for (int32_t j = 0; j < n_out; ++j) {
        const int8_t *vj = v + (size_t)j * (size_t)dim;
        const int8x16_t va = vldrbq_z_s8(vj, vctp8q((uint32_t)dim));
        /* vb: v_j in lanes 8..8+dim */
        uint32_t carry_bits = 0;
        const int8x16_t vb = pair ? vshlcq_s8(vshlcq_s8(va, &carry_bits, 32), &carry_bits, 32)
                                  : va;
        const int8_t *t = bk->base + (size_t)j * (size_t)dim * CAPS_HL_TILE;
        int8_t *b = logits + (size_t)j * CAPS_HL_TILE;
        for (int32_t q = 0; q < full; ++q) {
            const int8_t *tg = t;
            int8_t *bg = b;
            HL_UNROLL
            for (int32_t g = 0; g < 4; ++g) {
                update4(&u, agree4(tg, off16, off16b, va, vb, pair), bg, 0, 0, carry, fast);
                tg += 4;
                bg += 4;
            }
            t += tstep;
            b += lstep;
        }
        for (int32_t k0 = full * tw; k0 < bk->n; k0 += tw) {
            const int32_t w = MIN32(tw, bk->n - k0);
            const uint8x16_t off = tile_offsets(w, dim, pair);
            const int8_t *tt = tile_at(bk, k0) + (size_t)j * (size_t)dim * (size_t)w;
            agree_tile(&u, tt, w, dim, off, va, vb,
                       logits + (size_t)k0 * (size_t)n_out + (size_t)j * (size_t)w, pair, carry,
                       fast);
        }
    }
}

/* Phase A, any dim: four capsules of a tile per vector, u_hat(j|i)_d
 * loaded contiguously, VMLA by the scalar v_jd. */
CAPS_HL_INLINE void phase_a_lanes(const hl_update *up, const hl_block *bk, const int8_t *v,
                                  int8_t *logits, int32_t n_out, int32_t dim, const int carry,
                                  const int fast)
{
    const hl_update u = *up;
    for (int32_t j = 0; j < n_out; ++j) {
        const int8_t *vj = v + (size_t)j * (size_t)dim;
        for (int32_t k0 = 0; k0 < bk->n; k0 += bk->tw) {
            const int32_t w = MIN32(bk->tw, bk->n - k0);
            const int8_t *t = tile_at(bk, k0) + (size_t)j * (size_t)dim * (size_t)w;
            int8_t *b = logits + (size_t)k0 * (size_t)n_out + (size_t)j * (size_t)w;
            for (int32_t c = 0; c < w; c += 4) {
                const mve_pred16_t p = vctp32q((uint32_t)(w - c));
                int32x4_t a = vdupq_n_s32(0);
                const int8_t *tt = t + c;
                for (int32_t d = 0; d < dim; ++d) {
                    a = vmlaq_n_s32(a, vldrbq_z_s32(tt, p), vj[d]);
                    tt += w;
                }
                update4(&u, a, b + c, p, 1, carry, fast);
            }
        }
    }
}

static CAPS_HL_NOINLINE void phase_a(const hl_update *up, const hl_block *bk, const int8_t *v,
                                     int8_t *logits, int32_t n_out, int32_t dim)
{
    const int carry = up->has_carry;
    const int fast = up->agree_fast;
    if (dim > 16) {
        if (carry) {
            phase_a_lanes(up, bk, v, logits, n_out, dim, 1, fast);
        } else {
            phase_a_lanes(up, bk, v, logits, n_out, dim, 0, fast);
        }
        return;
    }
    const int pair = dim <= 8;
    if (!fast) {
        if (pair) {
            phase_a_gather(up, bk, v, logits, n_out, dim, 1, carry, 0);
        } else {
            phase_a_gather(up, bk, v, logits, n_out, dim, 0, carry, 0);
        }
    } else if (pair && carry) {
        phase_a_gather(up, bk, v, logits, n_out, dim, 1, 1, 1);
    } else if (pair) {
        phase_a_gather(up, bk, v, logits, n_out, dim, 1, 0, 1);
    } else if (carry) {
        phase_a_gather(up, bk, v, logits, n_out, dim, 0, 1, 1);
    } else {
        phase_a_gather(up, bk, v, logits, n_out, dim, 0, 0, 1);
    }
}

/* Exponentials of up to this many output capsules are kept (on the stack)
 * between the sum and the couplings; beyond, they are gathered again. */
#define HL_EBUF 16

/* One exponential per lane: table[mx - b] for the logit row at *bp, *bp
 * advanced by the row stride. */
CAPS_HL_INLINE uint32x4_t exp4(const uint32_t *table, int32x4_t mx, const int8_t **bp,
                               size_t stride, mve_pred16_t p, const int tail)
{
    const int8_t *b = *bp;
    *bp = b + stride;
    const int32x4_t x = tail ? vldrbq_z_s32(b, p) : vldrbq_s32(b);
    return vldrwq_gather_shifted_offset_u32(table, vreinterpretq_u32_s32(vsubq_s32(mx, x)));
}

/* Phase B for four capsules (tail: the lanes of p) of one tile: logits at
 * b, couplings to c, both with row stride `w` (output capsule j at
 * + j w; 16 in full tiles).  Capsules in lanes: the max over j (VMAX),
 * exponentials (gathers), their exact 64-bit sums as hi 2^16 + lo (three
 * exponentials, each <= 2^30, add without overflow in 32 bits before
 * being split), one reciprocal per capsule (caps_hl_softmax_recip4), couplings
 * in lanes (VMULH by the reciprocals, rounded and saturated narrowing
 * VQRSHRNB).  Returns the lanes whose largest coupling is exactly 2^15. */
CAPS_HL_INLINE mve_pred16_t softmax4(const uint32_t *table, const int8_t *b, int16_t *c,
                                     const int32_t w, const int32_t n_out, uint32_t thr,
                                     mve_pred16_t p, const int tail)
{
    uint32x4_t ebuf[HL_EBUF];
    const int keep = n_out <= HL_EBUF;
    int32x4_t mx = vdupq_n_s32(-128);
    const int8_t *bj = b;
    for (int32_t j = n_out; j > 0; --j) {
        mx = vmaxq_s32(mx, tail ? vldrbq_z_s32(bj, p) : vldrbq_s32(bj));
        bj += w;
    }
    /* exponentials in groups of three (sum < 2^32), each group split into
     * the 64-bit sum's two parts */
    uint32x4_t hi = vdupq_n_u32(0), lo = vdupq_n_u32(0);
    uint32x4_t *eb = ebuf;
    bj = b;
    int32_t j = n_out;
    for (; j >= 3; j -= 3) {
        const uint32x4_t e0 = exp4(table, mx, &bj, (size_t)w, p, tail);
        const uint32x4_t e1 = exp4(table, mx, &bj, (size_t)w, p, tail);
        const uint32x4_t e2 = exp4(table, mx, &bj, (size_t)w, p, tail);
        if (keep) {
            eb[0] = e0;
            eb[1] = e1;
            eb[2] = e2;
            eb += 3;
        }
        const uint32x4_t g = vaddq_u32(vaddq_u32(e0, e1), e2);
        hi = vaddq_u32(hi, vshrq_n_u32(g, 16));
        lo = vaddq_u32(lo, vmovlbq_u16(vreinterpretq_u16_u32(g)));
    }
    if (j > 0) {
        uint32x4_t g = exp4(table, mx, &bj, (size_t)w, p, tail);
        if (keep) {
            *eb++ = g;
        }
        if (j > 1) {
            const uint32x4_t e1 = exp4(table, mx, &bj, (size_t)w, p, tail);
            if (keep) {
                *eb++ = e1;
            }
            g = vaddq_u32(g, e1);
        }
        hi = vaddq_u32(hi, vshrq_n_u32(g, 16));
        lo = vaddq_u32(lo, vmovlbq_u16(vreinterpretq_u16_u32(g)));
    }
    uint32_t h4[4], l4[4], r4[4];
    vst1q_u32(h4, hi);
    vst1q_u32(l4, lo);
    caps_hl_softmax_recip4(h4, l4, r4);
    const uint32x4_t r = vld1q_u32(r4);
    eb = ebuf;
    bj = b;
    for (j = n_out; j > 0; --j) {
        const uint32x4_t e = keep ? *eb++ : exp4(table, mx, &bj, (size_t)w, p, tail);
        /* (e recip) >> 32 < 2^30, rounded >> 15 and saturated to int16 (a
         * coupling of 2^15 becomes 2^15 - 1) in each lane's low half (the
         * narrowing writes into e's register, dead by then) */
        const int32x4_t h = vreinterpretq_s32_u32(vmulhq_u32(e, r));
        const int32x4_t cq =
            vreinterpretq_s32_s16(vqrshrnbq_n_s32(vreinterpretq_s16_u32(e), h, 15));
        if (tail) {
            vstrhq_p_s32(c, cq, p);
        } else {
            vstrhq_s32(c, cq);
        }
        c += w;
    }
    /* the coupling of the largest logit is 2^15 iff recip >= thr */
    return vcmpcsq_n_u32(r, thr) & (tail ? p : 0xFFFFu);
}

/* softmax4 for four capsules of a full tile (row stride 16) and a
 * constant n_out <= HL_EBUF: the same steps with post-indexed loads and
 * stores (constant steps), the maxima given (mxb: the tile's, per
 * capsule, see phase_b_n), exponentials of three rows at a time. */
CAPS_HL_INLINE mve_pred16_t softmax4_full(const uint32_t *table, const int8_t *b, int16_t *c,
                                          const int8_t *mxb, const int32_t n_out, uint32_t thr)
{
    uint32x4_t ebuf[HL_EBUF];
    const int32x4_t mx = vldrbq_s32(mxb);
    uint32x4_t hi = vdupq_n_u32(0), lo = vdupq_n_u32(0);
    uint32_t *eb = (uint32_t *)(void *)ebuf;
    const int8_t *bj = b;
    HL_UNROLL
    for (int32_t j = 0; j < n_out; j += 3) {
        uint32x4_t g;
        HL_UNROLL
        for (int32_t q = 0; q < 3; ++q) {
            if (j + q < n_out) {
                int32x4_t x;
                CAPS_HL_LDRB_S32_POST(x, bj, 16);
                const uint32x4_t e = vldrwq_gather_shifted_offset_u32(
                    table, vreinterpretq_u32_s32(vsubq_s32(mx, x)));
                CAPS_HL_STRW_POST(e, eb, 16);
                g = q == 0 ? e : vaddq_u32(g, e);
            }
        }
        hi = vaddq_u32(hi, vshrq_n_u32(g, 16));
        lo = vaddq_u32(lo, vmovlbq_u16(vreinterpretq_u16_u32(g)));
    }
    uint32_t h4[4], l4[4], r4[4];
    vst1q_u32(h4, hi);
    vst1q_u32(l4, lo);
    caps_hl_softmax_recip4(h4, l4, r4);
    const uint32x4_t r = vld1q_u32(r4);
    const uint32_t *ec = (const uint32_t *)(const void *)ebuf;
    HL_UNROLL
    for (int32_t j = 0; j < n_out; ++j) {
        uint32x4_t e;
        CAPS_HL_LDRW_POST(e, ec, 16);
        const int32x4_t h = vreinterpretq_s32_u32(vmulhq_u32(e, r));
        const int32x4_t cq =
            vreinterpretq_s32_s16(vqrshrnbq_n_s32(vreinterpretq_s16_u32(e), h, 15));
        CAPS_HL_STRH_S32_POST(cq, c, 32);
    }
    return vcmpcsq_n_u32(r, thr);
}

/* The missing 1 * u_hat of capsule c of a tile (width w) whose largest
 * coupling is 2^15: the u_hat rows of every output capsule holding the
 * largest logit. */
static void full_coupling(int64_t *acc, const int8_t *t, const int8_t *b, int32_t w,
                          int32_t n_out, int32_t dim)
{
    int32_t mx = -128;
    for (int32_t j = 0; j < n_out; ++j) {
        mx = b[(size_t)j * (size_t)w] > mx ? b[(size_t)j * (size_t)w] : mx;
    }
    for (int32_t j = 0; j < n_out; ++j) {
        if (b[(size_t)j * (size_t)w] == mx) {
            for (int32_t d = 0; d < dim; ++d) {
                acc[j * dim + d] += t[(size_t)(j * dim + d) * (size_t)w];
            }
        }
    }
}

/* Phase B over the tiles of one block (logits: the block's first). */
/* The missing shares of the lanes of `full` (capsules c.. of a tile). */
static CAPS_HL_NOINLINE void full_couplings(const caps_nn_routing_buffers *sc, const hl_block *bk,
                                            int32_t k0, int32_t c, const int8_t *lt,
                                            mve_pred16_t full, int32_t n_out, int32_t dim)
{
    const int32_t w = MIN32(bk->tw, bk->n - k0);
    for (int32_t l = 0; l < 4; ++l, full >>= 4) {
        if (full & 1u) {
            full_coupling(sc->acc, tile_at(bk, k0) + c + l, lt + c + l, w, n_out, dim);
        }
    }
}

CAPS_HL_INLINE void phase_b_n(const caps_nn_routing_buffers *sc, const hl_block *bk,
                              const int8_t *logits, const int32_t n_out, int32_t dim,
                              uint32_t thr)
{
    const uint32_t *table = sc->table;
    int32_t k0 = 0;
    if (bk->tw == (int32_t)CAPS_HL_TILE && n_out <= HL_EBUF) {
        /* whole tiles: four groups of four capsules, constant steps */
        const size_t tstep = (size_t)CAPS_HL_TILE * (size_t)n_out;
        const int8_t *lt = logits;
        int16_t *ct = sc->cbuf;
        for (; k0 + (int32_t)CAPS_HL_TILE <= bk->n; k0 += (int32_t)CAPS_HL_TILE) {
            /* the maxima of the tile's 16 capsules, one per byte lane */
            int8_t mxb[CAPS_HL_TILE];
            int8x16_t m = vldrbq_s8(lt);
            HL_UNROLL
            for (int32_t j = 1; j < n_out; ++j) {
                m = vmaxq_s8(m, vldrbq_s8(lt + 16 * j));
            }
            vstrbq_s8(mxb, m);
            for (int32_t c = 0; c < (int32_t)CAPS_HL_TILE; c += 4) {
                const mve_pred16_t full =
                    softmax4_full(table, lt + c, ct + c, mxb + c, n_out, thr);
                if (full != 0) {
                    full_couplings(sc, bk, k0, c, lt, full, n_out, dim);
                }
            }
            lt += tstep;
            ct += tstep;
        }
    }
    for (; k0 < bk->n; k0 += bk->tw) {
        const int32_t w = MIN32(bk->tw, bk->n - k0);
        const int8_t *lt = logits + (size_t)k0 * (size_t)n_out;
        int16_t *ct = sc->cbuf + (size_t)k0 * (size_t)n_out;
        for (int32_t c = 0; c < w; c += 4) {
            mve_pred16_t full;
            if (w == (int32_t)CAPS_HL_TILE) {
                full = softmax4(table, lt + c, ct + c, (int32_t)CAPS_HL_TILE, n_out, thr, 0, 0);
            } else {
                const mve_pred16_t p = vctp32q((uint32_t)(w - c));
                full = softmax4(table, lt + c, ct + c, w, n_out, thr, p, 1);
            }
            if (full != 0) {
                full_couplings(sc, bk, k0, c, lt, full, n_out, dim);
            }
        }
    }
}

static CAPS_HL_NOINLINE void phase_b(const caps_nn_routing_buffers *sc, const hl_block *bk,
                                     const int8_t *logits, int32_t n_out, int32_t dim,
                                     uint32_t thr)
{
    if (n_out == 10) {
        phase_b_n(sc, bk, logits, 10, dim, thr);
    } else {
        phase_b_n(sc, bk, logits, n_out, dim, thr);
    }
}

/* Phase C for `nd` (a constant, 1..4) consecutive dims of output capsule
 * j: 32-bit sums over the block, one VMLADAV per 8 capsules and dim, the
 * couplings loaded once for all nd dims.  row0: the first dim's row. */
CAPS_HL_INLINE void c_dims(const hl_block *bk, const int16_t *cbuf, int32_t n_out, int32_t j,
                           size_t row0, int64_t *acc, const int nd)
{
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    const int32_t tw = bk->tw;
    const int32_t full = tw == (int32_t)CAPS_HL_TILE ? bk->n / tw : 0;
    const size_t tstep = (size_t)CAPS_HL_TILE * (size_t)bk->md;
    const size_t cstep = (size_t)CAPS_HL_TILE * (size_t)n_out;
    const int8_t *t = bk->base + row0 * CAPS_HL_TILE;
    const int16_t *cc = cbuf + (size_t)j * CAPS_HL_TILE;
    for (int32_t q = 0; q < full; ++q) {
        for (int32_t h = 0; h < 16; h += 8) {
            const int16x8_t cv = vldrhq_s16(cc + h);
            s0 = vmladavaq_s16(s0, cv, vldrbq_s16(t + h));
            if (nd > 1) {
                s1 = vmladavaq_s16(s1, cv, vldrbq_s16(t + 16 + h));
            }
            if (nd > 2) {
                s2 = vmladavaq_s16(s2, cv, vldrbq_s16(t + 32 + h));
            }
            if (nd > 3) {
                s3 = vmladavaq_s16(s3, cv, vldrbq_s16(t + 48 + h));
            }
        }
        cc += cstep;
        t += tstep;
    }
    for (int32_t k0 = full * tw; k0 < bk->n; k0 += tw) {
        const int32_t w = MIN32(tw, bk->n - k0);
        const int8_t *t0 = tile_at(bk, k0) + row0 * (size_t)w;
        const int8_t *t1 = t0 + w;
        const int8_t *t2 = t1 + w;
        const int8_t *t3 = t2 + w;
        const int16_t *ck = cbuf + (size_t)k0 * (size_t)n_out + (size_t)j * (size_t)w;
        for (int32_t k = 0; k < w; k += 8) {
            const mve_pred16_t p = vctp16q((uint32_t)(w - k));
            const int16x8_t cv = vldrhq_z_s16(ck + k, p);
            s0 = vmladavaq_p_s16(s0, cv, vldrbq_z_s16(t0 + k, p), p);
            if (nd > 1) {
                s1 = vmladavaq_p_s16(s1, cv, vldrbq_z_s16(t1 + k, p), p);
            }
            if (nd > 2) {
                s2 = vmladavaq_p_s16(s2, cv, vldrbq_z_s16(t2 + k, p), p);
            }
            if (nd > 3) {
                s3 = vmladavaq_p_s16(s3, cv, vldrbq_z_s16(t3 + k, p), p);
            }
        }
    }
    acc[0] += s0;
    if (nd > 1) {
        acc[1] += s1;
    }
    if (nd > 2) {
        acc[2] += s2;
    }
    if (nd > 3) {
        acc[3] += s3;
    }
}

/* Phase C over one block: acc[j d] += sum_k c[j][k] u_hat(j|k)_d. */
static CAPS_HL_NOINLINE void phase_c(const caps_nn_routing_buffers *sc, const hl_block *bk, int32_t n_out,
                                     int32_t dim)
{
    for (int32_t j = 0; j < n_out; ++j) {
        int64_t *acc = sc->acc + (size_t)j * (size_t)dim;
        const size_t row = (size_t)j * (size_t)dim;
        int32_t d = 0;
        for (; d + 4 <= dim; d += 4) {
            c_dims(bk, sc->cbuf, n_out, j, row + (size_t)d, acc + d, 4);
        }
        if (dim - d == 3) {
            c_dims(bk, sc->cbuf, n_out, j, row + (size_t)d, acc + d, 3);
        } else if (dim - d == 2) {
            c_dims(bk, sc->cbuf, n_out, j, row + (size_t)d, acc + d, 2);
        } else if (dim - d == 1) {
            c_dims(bk, sc->cbuf, n_out, j, row + (size_t)d, acc + d, 1);
        }
    }
}

static caps_nn_status routing_core(const caps_class_caps_dims *dims,
                                   const caps_routing_params *params, const hl_source *src,
                                   const caps_nn_routing_buffers *sc, int8_t *output)
{
    const int32_t n_in = dims->n_in;
    const int32_t n_out = dims->n_out;
    const int32_t dim = dims->dim_out;
    const int32_t md = n_out * dim;
    const int32_t p = caps_nn_routing_acc_shift(n_in);
    int32_t carry_tab[256];

    for (int32_t r = 0; r < params->routings; ++r) {
        memset(sc->acc, 0, (size_t)md * sizeof(int64_t));
        if (r == 0) {
            /* stored tiles: all capsules in one pass */
            const int32_t block0 = src->stored != NULL ? n_in : sc->block;
            for (int32_t i0 = 0; i0 < n_in; i0 += block0) {
                const hl_block bk = block_tiles(src, sc, dims, i0, MIN32(block0, n_in - i0));
                sum_rows(&bk, sc->acc);
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
            /* smallest reciprocal giving the largest logit (exp table[0]) a
             * coupling of 2^15: caps_bm_softmax_q15(table[0], recip) > 32767
             * iff (table[0] recip) >> 32 >= 2^30 - 2^14 */
            const uint64_t need = (uint64_t)((1u << 30) - (1u << 14)) << 32;
            const uint64_t thr64 = (need + sc->table[0] - 1u) / sc->table[0];
            const uint32_t thr = thr64 > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)thr64;
            for (int32_t i0 = 0; i0 < n_in; i0 += sc->block) {
                const hl_block bk = block_tiles(src, sc, dims, i0, MIN32(sc->block, n_in - i0));
                int8_t *logits = sc->logits + (size_t)i0 * (size_t)n_out;
                phase_a(&up, &bk, output, logits, n_out, dim);
                phase_b(sc, &bk, logits, n_out, dim, thr);
                phase_c(sc, &bk, n_out, dim);
            }
        }
        caps_nn_routing_output(sc, params, r, p, output);
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
    caps_nn_routing_buffers sc;
    caps_hl_carve(ctx->buf, dims, 1, &sc);
    const hl_source src = {NULL, u_hat, NULL, NULL, NULL};
    return routing_core(dims, params, &src, &sc, output);
}

/* The class-capsule layer with int8 (s4 0) or packed 4-bit (s4 1) weights,
 * after the entry check of either. */
static caps_nn_status class_caps(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                 const caps_class_caps_params *params, int32_t store_predictions,
                                 const int8_t *input, const int8_t *weights, int32_t s4,
                                 int8_t *output)
{
    const size_t md = (size_t)dims->n_out * (size_t)dims->dim_out;
    /* stored predictions go to sc.uhat in tiles */
    caps_nn_routing_buffers sc;
    caps_hl_carve(ctx->buf, dims, !store_predictions, &sc);
    int8_t *uhat = sc.uhat;
    caps_hl_pred pc;
    caps_hl_pred_init(&pc, dims, &params->pred, sc.pred, s4);
    hl_source src = {NULL, NULL, &pc, input, weights};
    if (store_predictions) {
        for (int32_t i0 = 0; i0 < dims->n_in; i0 += (int32_t)CAPS_HL_TILE) {
            const int32_t w = MIN32((int32_t)CAPS_HL_TILE, dims->n_in - i0);
            predict_tile(&pc, input + (size_t)i0 * (size_t)dims->dim_in,
                         caps_hl_pred_weights(&pc, weights, i0), uhat + (size_t)i0 * md, w);
        }
        src.stored = uhat;
    }
    return routing_core(dims, &params->routing, &src, &sc, output);
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
    return class_caps(ctx, dims, params, store_predictions, input, weights, 0, output);
}

caps_nn_status caps_class_caps_s4(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                  const caps_class_caps_params *params,
                                  int32_t store_predictions, const int8_t *input,
                                  const int8_t *weights, int8_t *output)
{
    if (caps_class_caps_s4_args_check(ctx, dims, params, store_predictions, input, weights,
                                      output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    return class_caps(ctx, dims, params, store_predictions, input, weights, 1, output);
}
