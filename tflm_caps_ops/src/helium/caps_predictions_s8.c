/*
 * Helium predictions u_hat(j|i) = W_ij (u_i - zp), bit-exact with
 * src/portable/caps_predictions_s8.c.
 *
 * Per input capsule, four output rows at a time: each row's dot product is
 * one VMLADAV of a weight vector holding several rows against a pattern
 * with u_i - zp in that row's lanes and zeros elsewhere (built once per
 * capsule: a predicated load and whole-vector shifts, VSHLC), so no row
 * needs a scalar tail; the four sums go into the lanes of one vector (two
 * dual-lane VMOVs), are requantized in lanes (VQRDMULH, VRSHL, the
 * ties-away correction) and stored through a byte scatter with the
 * output's row stride: the natural layout [i][j][d], or the transposed one
 * [j][d][i] the class-capsule layer routes from.  Rows that do not fill
 * four lanes are done once, with a predicated store (VCTP).
 *
 * Row kinds: dim_in 4 (four rows per int8 vector when zp = 0, so u fits
 * int8; else two per int16 vector), dim_in 8 (two per int8 vector when
 * zp = 0, else one per int16 vector), other dim_in (a predicated loop over
 * the row).  Requantization params: one scale, or one per output capsule
 * with dim_out a multiple of 4 (scalar params per run of rows); per-capsule
 * scales with other dim_out read a per-row table (up to
 * CAPS_HL_PRED_TABLE_ROWS rows per input capsule) or go in runs of dim_out
 * rows.  Any shift >= 0 takes the full requantization.
 *
 * Packed 4-bit weights (caps_predictions_s4.c) with zp 0 and dim_in 4 or 8
 * take the same loops: 8 weight bytes become one int8 vector of 16 w in
 * natural order (caps_hl_s4_x16), dotted with the same patterns, and the
 * four sums are shifted back by 4 before the requantization.
 */
#include "caps_hl_internal.h"

/* u_i - zp in the lanes of each row slot of a weight vector. */
typedef struct {
    int16x8_t p16[2];
    int8x16_t p8[4];
} upat;

CAPS_HL_INLINE void make_patterns(const caps_hl_pred_core *pc, const int8_t *u, upat *up,
                                  const int kind)
{
    const int16_t zp = (int16_t)pc->zp;
    uint32_t carry = 0;
    if (kind == CAPS_HL_PRED_D4) {
        const mve_pred16_t p = vctp16q(4);
        const int16x8_t y = vsubq_m_n_s16(vdupq_n_s16(0), vldrbq_z_s16(u, p), zp, p);
        up->p16[0] = y;
        up->p16[1] = vshlcq_s16(vshlcq_s16(y, &carry, 32), &carry, 32);
    } else if (kind == CAPS_HL_PRED_D4_S8 || kind == CAPS_HL_PRED_D4_S4) {
        const int8x16_t y = vldrbq_z_s8(u, vctp8q(4));
        up->p8[0] = y;
        up->p8[1] = vshlcq_s8(y, &carry, 32);
        up->p8[2] = vshlcq_s8(up->p8[1], &carry, 32);
        up->p8[3] = vshlcq_s8(up->p8[2], &carry, 32);
    } else if (kind == CAPS_HL_PRED_D8) {
        up->p16[0] = vsubq_n_s16(vldrbq_s16(u), zp);
    } else if (kind == CAPS_HL_PRED_D8_S8 || kind == CAPS_HL_PRED_D8_S4) {
        const int8x16_t y = vldrbq_z_s8(u, vctp8q(8));
        up->p8[0] = y;
        up->p8[1] = vshlcq_s8(vshlcq_s8(y, &carry, 32), &carry, 32);
    } else {
        for (int32_t k = 0; k < pc->dim_in; k += 8) {
            const mve_pred16_t p = vctp16q((uint32_t)(pc->dim_in - k));
            vstrhq_p_s16(pc->u_off + k, vsubq_n_s16(vldrbq_z_s16(u + k, p), zp), p);
        }
    }
}

/* The dot product of the whole row at w (any dim_in). */
CAPS_HL_INLINE int32_t dot_any(const caps_hl_pred_core *pc, const int8_t *w)
{
    int32_t acc = 0;
    for (int32_t k = 0; k < pc->dim_in; k += 8) {
        const mve_pred16_t p = vctp16q((uint32_t)(pc->dim_in - k));
        acc = vmladavaq_s16(acc, vldrbq_z_s16(w + k, p), vldrhq_z_s16(pc->u_off + k, p));
    }
    return acc;
}

/* The dot products of the next four rows at *wp, *wp advanced. */
CAPS_HL_INLINE int32x4_t rows4(const caps_hl_pred_core *pc, const upat *up, const int8_t **wp,
                               const int kind)
{
    const int8_t *w = *wp;
    int32_t a0, a1, a2, a3;
    if (kind == CAPS_HL_PRED_D4) {
        const int16x8_t w01 = vldrbq_s16(w);
        const int16x8_t w23 = vldrbq_s16(w + 8);
        a0 = vmladavq_s16(w01, up->p16[0]);
        a1 = vmladavq_s16(w01, up->p16[1]);
        a2 = vmladavq_s16(w23, up->p16[0]);
        a3 = vmladavq_s16(w23, up->p16[1]);
    } else if (kind == CAPS_HL_PRED_D4_S8) {
        const int8x16_t w4 = caps_hl_load16(&w);
        a0 = vmladavq_s8(w4, up->p8[0]);
        a2 = vmladavq_s8(w4, up->p8[2]);
        a1 = vmladavq_s8(w4, up->p8[1]);
        a3 = vmladavq_s8(w4, up->p8[3]);
    } else if (kind == CAPS_HL_PRED_D8) {
        a0 = vmladavq_s16(vldrbq_s16(w), up->p16[0]);
        a1 = vmladavq_s16(vldrbq_s16(w + 8), up->p16[0]);
        a2 = vmladavq_s16(vldrbq_s16(w + 16), up->p16[0]);
        a3 = vmladavq_s16(vldrbq_s16(w + 24), up->p16[0]);
    } else if (kind == CAPS_HL_PRED_D8_S8) {
        const int8x16_t w01 = caps_hl_load16(&w);
        const int8x16_t w23 = caps_hl_load16(&w);
        a0 = vmladavq_s8(w01, up->p8[0]);
        a1 = vmladavq_s8(w01, up->p8[1]);
        a2 = vmladavq_s8(w23, up->p8[0]);
        a3 = vmladavq_s8(w23, up->p8[1]);
    } else if (kind == CAPS_HL_PRED_D4_S4) {
        const int8x16_t w4 = caps_hl_s4_load16(w);
        a0 = vmladavq_s8(w4, up->p8[0]);
        a2 = vmladavq_s8(w4, up->p8[2]);
        a1 = vmladavq_s8(w4, up->p8[1]);
        a3 = vmladavq_s8(w4, up->p8[3]);
    } else if (kind == CAPS_HL_PRED_D8_S4) {
        const int8x16_t w01 = caps_hl_s4_load16(w);
        const int8x16_t w23 = caps_hl_s4_load16(w + 8);
        a0 = vmladavq_s8(w01, up->p8[0]);
        a1 = vmladavq_s8(w01, up->p8[1]);
        a2 = vmladavq_s8(w23, up->p8[0]);
        a3 = vmladavq_s8(w23, up->p8[1]);
    } else {
        const size_t k = (size_t)pc->dim_in;
        a0 = dot_any(pc, w);
        a1 = dot_any(pc, w + k);
        a2 = dot_any(pc, w + 2 * k);
        a3 = dot_any(pc, w + 3 * k);
    }
    /* a constant step for the fixed kinds (the int8 ones advanced w) */
    if (kind == CAPS_HL_PRED_D4_S8 || kind == CAPS_HL_PRED_D8_S8) {
        *wp = w;
    } else if (kind == CAPS_HL_PRED_D4) {
        *wp = w + 16;
    } else if (kind == CAPS_HL_PRED_D8) {
        *wp = w + 32;
    } else if (kind == CAPS_HL_PRED_D4_S4) {
        *wp = w + 8;
    } else if (kind == CAPS_HL_PRED_D8_S4) {
        *wp = w + 16;
    } else {
        *wp = w + 4 * (size_t)pc->dim_in;
    }
    if (kind == CAPS_HL_PRED_D4_S4 || kind == CAPS_HL_PRED_D8_S4) {
        return vshrq_n_s32(caps_hl_vec4(a0, a1, a2, a3), 4); /* the sums of 16 w */
    }
    return caps_hl_vec4(a0, a1, a2, a3);
}

/* Weight bytes of one row. */
CAPS_HL_INLINE size_t row_bytes(const caps_hl_pred_core *pc, const int kind)
{
    return kind == CAPS_HL_PRED_D4_S4 ? 2u
           : kind == CAPS_HL_PRED_D8_S4 ? 4u
                                        : (size_t)pc->dim_in;
}

/* The dot products of the n < 4 rows at w (nothing beyond them is read);
 * the other lanes 0. */
CAPS_HL_INLINE int32x4_t rows_tail(const caps_hl_pred_core *pc, const upat *up, const int8_t *w,
                                   int32_t n, const int kind)
{
    int32_t a[4] = {0, 0, 0, 0};
    for (int32_t t = 0; t < n; ++t) {
        const int8_t *wr = w + (size_t)t * row_bytes(pc, kind);
        if (kind == CAPS_HL_PRED_D4) {
            a[t] = vmladavq_s16(vldrbq_z_s16(wr, vctp16q(4)), up->p16[0]);
        } else if (kind == CAPS_HL_PRED_D4_S8) {
            a[t] = vmladavq_s8(vldrbq_z_s8(wr, vctp8q(4)), up->p8[0]);
        } else if (kind == CAPS_HL_PRED_D8) {
            a[t] = vmladavq_s16(vldrbq_s16(wr), up->p16[0]);
        } else if (kind == CAPS_HL_PRED_D8_S8) {
            a[t] = vmladavq_s8(vldrbq_z_s8(wr, vctp8q(8)), up->p8[0]);
        } else if (kind == CAPS_HL_PRED_D4_S4) {
            a[t] = vmladavq_s8(caps_hl_s4_load16_z(wr, vctp16q(2)), up->p8[0]) >> 4;
        } else if (kind == CAPS_HL_PRED_D8_S4) {
            a[t] = vmladavq_s8(caps_hl_s4_load16_z(wr, vctp16q(4)), up->p8[0]) >> 4;
        } else {
            a[t] = dot_any(pc, wr);
        }
    }
    return vld1q_s32(a);
}

/* Stores four (store_tail: the first n) requantized rows through the
 * scatter offsets. */
CAPS_HL_INLINE void store4(int8_t *out, uint32x4_t offs, int32x4_t r)
{
    vstrbq_scatter_offset_s32(out, offs, caps_hl_sat8_lanes(r));
}

CAPS_HL_INLINE void store_tail(int8_t *out, uint32x4_t offs, int32x4_t r, int32_t n)
{
    vstrbq_scatter_offset_p_s32(out, offs, caps_hl_sat8_lanes(r), vctp32q((uint32_t)n));
}

/* A run of `rows` rows with one requantization (scalar params). */
CAPS_HL_INLINE void run_scalar(const caps_hl_pred_core *pc, const upat *up, const int8_t **wp,
                               int8_t **op, int32_t rstride, uint32x4_t offs, int32_t rows,
                               int32_t mult, int32_t shift, const int kind, const int general)
{
    const caps_hl_rq q = caps_hl_rq_init(mult, shift);
    const int8_t *w = *wp;
    int8_t *o = *op;
    const size_t ostep = 4 * (size_t)rstride;
    for (int32_t g = rows >> 2; g > 0; --g) {
        const int32x4_t acc = rows4(pc, up, &w, kind);
        store4(o, offs, general ? caps_hl_requant(acc, &q) : caps_hl_requant_rs(acc, mult, shift));
        o += ostep;
    }
    const int32_t n = rows & 3;
    if (n > 0) {
        const int32x4_t acc = rows_tail(pc, up, w, n, kind);
        store_tail(o, offs,
                   general ? caps_hl_requant(acc, &q) : caps_hl_requant_rs(acc, mult, shift), n);
        w += (size_t)n * row_bytes(pc, kind);
        o += (size_t)n * (size_t)rstride;
    }
    *wp = w;
    *op = o;
}

/* All rows of one input capsule with the per-row table (shifts < 0). */
CAPS_HL_INLINE void rows_table(const caps_hl_pred_core *pc, const upat *up, const int8_t **wp,
                               int8_t *o, int32_t rstride, uint32x4_t offs, const int kind)
{
    const int8_t *w = *wp;
    const int32_t *tm = pc->rq_mult;
    const int32_t *ts = pc->rq_shift;
    const size_t ostep = 4 * (size_t)rstride;
    for (int32_t g = pc->md >> 2; g > 0; --g) {
        const int32x4_t acc = rows4(pc, up, &w, kind);
        const int32x4_t m = vld1q_s32(tm);
        const int32x4_t sh = vld1q_s32(ts);
        tm += 4;
        ts += 4;
        store4(o, offs, caps_hl_requant_rs_v(acc, m, sh));
        o += ostep;
    }
    const int32_t n = pc->md & 3;
    if (n > 0) {
        const int32x4_t acc = rows_tail(pc, up, w, n, kind);
        store_tail(o, offs, caps_hl_requant_rs_v(acc, vld1q_s32(tm), vld1q_s32(ts)), n);
        w += (size_t)n * row_bytes(pc, kind);
    }
    *wp = w;
}

/* All rows of one input capsule with one scalar params pair per group of
 * 4 rows (shifts < 0, md a multiple of 4). */
CAPS_HL_INLINE void rows_groups(const caps_hl_pred_core *pc, const upat *up, const int8_t **wp,
                                int8_t *o, int32_t rstride, uint32x4_t offs, const int kind)
{
    const int8_t *w = *wp;
    const int32_t *tm = pc->rq_mult;
    const int32_t *ts = pc->rq_shift;
    const int32_t *const end = tm + (pc->md >> 2);
    const size_t ostep = 4 * (size_t)rstride;
    do {
        const int32x4_t acc = rows4(pc, up, &w, kind);
        store4(o, offs, caps_hl_requant_rs(acc, *tm++, *ts++));
        o += ostep;
    } while (tm != end);
    *wp = w;
}

/* All rows of one input capsule (kind a constant); *wp advanced past its
 * weights. */
CAPS_HL_INLINE void capsule_kind(const caps_hl_pred_core *pc, const int8_t *u, const int8_t **wp,
                                 int8_t *o, int32_t rstride, uint32x4_t offs, const int kind)
{
    upat up;
    make_patterns(pc, u, &up, kind);
    const int32_t mode = pc->mode;
    if (mode == CAPS_HL_RQ_TABLE) {
        rows_table(pc, &up, wp, o, rstride, offs, kind);
        return;
    }
    if (mode == CAPS_HL_RQ_GROUPS) {
        rows_groups(pc, &up, wp, o, rstride, offs, kind);
        return;
    }
    const int32_t *mult = pc->multipliers;
    const int32_t *shift = pc->shifts;
    if (pc->num_scales == 1) {
        run_scalar(pc, &up, wp, &o, rstride, offs, pc->md, mult[0], shift[0], kind,
                   mode == CAPS_HL_RQ_GENERAL);
        return;
    }
    const int32_t *const mult_end = mult + pc->n_out;
    const int32_t dim_out = pc->dim_out;
    if (mode == CAPS_HL_RQ_FAST && dim_out == 16) {
        /* runs of a constant 16 rows (the published 16-D class capsules) */
        for (; mult != mult_end; ++mult, ++shift) {
            run_scalar(pc, &up, wp, &o, rstride, offs, 16, *mult, *shift, kind, 0);
        }
    } else if (mode == CAPS_HL_RQ_FAST && dim_out == 8) {
        for (; mult != mult_end; ++mult, ++shift) {
            run_scalar(pc, &up, wp, &o, rstride, offs, 8, *mult, *shift, kind, 0);
        }
    } else if (mode == CAPS_HL_RQ_FAST) {
        for (; mult != mult_end; ++mult, ++shift) {
            run_scalar(pc, &up, wp, &o, rstride, offs, dim_out, *mult, *shift, kind, 0);
        }
    } else {
        for (; mult != mult_end; ++mult, ++shift) {
            run_scalar(pc, &up, wp, &o, rstride, offs, dim_out, *mult, *shift, kind, 1);
        }
    }
}

void caps_hl_pred_init(caps_hl_pred *pred, const caps_class_caps_dims *dims,
                       const caps_predictions_params *params, void *scratch, int32_t s4)
{
    caps_hl_pred_core *pc = &pred->core;
    pc->rq_mult = pred->rq_mult;
    pc->rq_shift = pred->rq_shift;
    pc->n_out = dims->n_out;
    pc->dim_out = dims->dim_out;
    pc->dim_in = dims->dim_in;
    pc->md = dims->n_out * dims->dim_out;
    pc->zp = params->input_zp;
    pc->num_scales = params->num_scales;
    pc->multipliers = params->multipliers;
    pc->shifts = params->shifts;
    /* the scratch (2 dim_in bytes + 8 of slack) holds u - zp for any dim_in */
    pc->u_off = (int16_t *)(void *)(((uintptr_t)scratch + 7u) & ~(uintptr_t)7u);
    int32_t fast = 1;
    for (int32_t j = 0; j < params->num_scales; ++j) {
        if (params->shifts[j] >= 0) {
            fast = 0;
        }
    }
    pc->mode = fast ? CAPS_HL_RQ_FAST : CAPS_HL_RQ_GENERAL;
    if (fast && dims->dim_out == 6 && dims->dim_in == 4 && pc->zp == 0 && pc->md % 12 == 0 &&
        pc->md <= CAPS_HL_PRED_TABLE_ROWS) {
        /* the published 6-D class capsules: of each three groups of 4 rows,
         * the first and third lie in one output capsule (scalar params, the
         * VQRDMLAH requantization), the second in two.  One scale per
         * tensor (the converter's default) takes this loop too: its
         * registers allocate better than the one-scale loop's (measured:
         * 16 fewer instructions per input capsule on the M55) */
        pc->mode = CAPS_HL_RQ_PERIOD6;
        const int32_t per_capsule = params->num_scales != 1;
        for (int32_t g = 0; g < pc->md / 12; ++g) {
            int32_t *t = pred->rq_mult + 12 * g;
            const int32_t j = 2 * g * per_capsule; /* capsule of the group's row 0 */
            t[0] = params->multipliers[j];
            t[1] = params->shifts[j];
            t[2] = params->multipliers[j + per_capsule];
            t[3] = params->shifts[j + per_capsule];
            for (int32_t l = 0; l < 4; ++l) {
                t[4 + l] = params->multipliers[j + (l / 2) * per_capsule];
                t[8 + l] = params->shifts[j + (l / 2) * per_capsule];
            }
        }
    } else if (fast && (params->num_scales == 1 ? pc->md % 4 == 0 : dims->dim_out % 4 == 0) &&
        pc->md / 4 <= CAPS_HL_PRED_TABLE_ROWS) {
        /* every group of 4 rows within one output capsule (or one scale) */
        pc->mode = CAPS_HL_RQ_GROUPS;
        for (int32_t g = 0; g < pc->md / 4; ++g) {
            const int32_t j = params->num_scales == 1 ? 0 : 4 * g / dims->dim_out;
            pred->rq_mult[g] = params->multipliers[j];
            pred->rq_shift[g] = params->shifts[j];
        }
    } else if (fast && params->num_scales != 1 && dims->dim_out % 4 != 0 &&
               pc->md <= CAPS_HL_PRED_TABLE_ROWS) {
        pc->mode = CAPS_HL_RQ_TABLE;
        for (int32_t r = 0; r < ((pc->md + 3) & ~3); ++r) {
            /* a last partial group gets (ignored) params of row 0 */
            const int32_t j = r < pc->md ? r / dims->dim_out : 0;
            pred->rq_mult[r] = params->multipliers[j];
            pred->rq_shift[r] = params->shifts[j];
        }
    }
    pc->s4 = s4;
    if (s4) {
        /* the int16 pairs of CAPS_HL_PRED_ANY_S4 need 2-byte alignment only
         * (their 2 dim_in + 4 bytes fit the scratch then) */
        pc->u_off = (int16_t *)(void *)(((uintptr_t)scratch + 1u) & ~(uintptr_t)1u);
        pc->kind = pc->zp != 0 ? CAPS_HL_PRED_ANY_S4
                   : dims->dim_in == 4 ? CAPS_HL_PRED_D4_S4
                   : dims->dim_in == 8 ? CAPS_HL_PRED_D8_S4
                                       : CAPS_HL_PRED_ANY_S4;
    } else if (dims->dim_in == 4) {
        pc->kind = pc->zp == 0 ? CAPS_HL_PRED_D4_S8 : CAPS_HL_PRED_D4;
    } else if (dims->dim_in == 8) {
        pc->kind = pc->zp == 0 ? CAPS_HL_PRED_D8_S8 : CAPS_HL_PRED_D8;
    } else {
        pc->kind = CAPS_HL_PRED_ANY;
    }
}

/* The dot products of the next four rows (16 weights at *w) of a
 * capsule with dim_in 4 and zp 0 (patterns p0..p3, see make_patterns). */
CAPS_HL_INLINE int32x4_t d4s8_rows4(const int8_t **w, int8x16_t p0, int8x16_t p1, int8x16_t p2,
                                    int8x16_t p3, const int s4)
{
    int8x16_t w4;
    if (s4) { /* 8 bytes of packed weights: 16 w, the sums shifted back */
        w4 = caps_hl_s4_load16(*w);
        *w += 8;
    } else {
        w4 = caps_hl_load16(w);
    }
    const int32_t a0 = vmladavq_s8(w4, p0);
    const int32_t a2 = vmladavq_s8(w4, p2);
    const int32_t a1 = vmladavq_s8(w4, p1);
    const int32_t a3 = vmladavq_s8(w4, p3);
    const int32x4_t acc = caps_hl_vec4(a0, a1, a2, a3);
    return s4 ? vshrq_n_s32(acc, 4) : acc;
}

/* dim_in 4, zp 0, params per group of 4 rows (rows 0: per group scalars,
 * 1: per-row vectors, 2: CAPS_HL_RQ_PERIOD6, 3: one scale): the
 * published 4-D primary capsules, in a loop that keeps only what it needs
 * live (a separate function, so the general paths' state does not crowd
 * its registers). */
CAPS_HL_INLINE void d4s8_capsules(const caps_hl_pred_core *pc, const int8_t *input,
                                  const int8_t *weights, int8_t *out, int32_t n_in,
                                  int32_t rstride, int32_t istride, const int rows, const int s4)
{
    const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)rstride);
    const size_t ostep = 4 * (size_t)rstride;
    const int32_t *const tm0 = pc->rq_mult;
    const int32_t *const ts0 = pc->rq_shift;
    const int32_t *const tm_end = tm0 + (rows ? pc->md : pc->md >> 2);
    const int8_t *w = weights;
    const mve_pred16_t p4 = vctp8q(4);
    for (int32_t i = n_in; i > 0; --i) {
        uint32_t carry = 0;
        const int8x16_t p0 = vldrbq_z_s8(input, p4);
        const int8x16_t p1 = vshlcq_s8(p0, &carry, 32);
        const int8x16_t p2 = vshlcq_s8(p1, &carry, 32);
        const int8x16_t p3 = vshlcq_s8(p2, &carry, 32);
        input += 4;
        const int32_t *tm = tm0;
        const int32_t *ts = ts0;
        int8_t *o = out;
        out += istride;
        if (rows == 2) {
            do {
                int32_t m, sh;
                int32x4_t mv, sv;
                CAPS_HL_LDRD_POST(m, sh, tm);
                int32x4_t r = caps_hl_requant_rs(d4s8_rows4(&w, p0, p1, p2, p3, s4), m, sh);
                vstrbq_scatter_offset_s32(o, offs, caps_hl_sat8_lanes(r));
                o += ostep;
                CAPS_HL_LDRD_POST(m, sh, tm);
                const int32x4_t acc = d4s8_rows4(&w, p0, p1, p2, p3, s4);
                CAPS_HL_LDRW_POST(mv, tm, 16);
                CAPS_HL_LDRW_POST(sv, tm, 16);
                r = caps_hl_requant_rs_v(acc, mv, sv);
                vstrbq_scatter_offset_s32(o, offs, caps_hl_sat8_lanes(r));
                o += ostep;
                r = caps_hl_requant_rs(d4s8_rows4(&w, p0, p1, p2, p3, s4), m, sh);
                vstrbq_scatter_offset_s32(o, offs, caps_hl_sat8_lanes(r));
                o += ostep;
            } while (tm != tm_end);
            continue;
        }
        if (rows == 3) {
            const int32_t m = pc->multipliers[0], sh = pc->shifts[0];
            for (int32_t g = pc->md >> 2; g > 0; --g) {
                const int32x4_t r = caps_hl_requant_rs(d4s8_rows4(&w, p0, p1, p2, p3, s4), m, sh);
                vstrbq_scatter_offset_s32(o, offs, caps_hl_sat8_lanes(r));
                o += ostep;
            }
            continue;
        }
        do {
            const int32x4_t acc = d4s8_rows4(&w, p0, p1, p2, p3, s4);
            int32x4_t r;
            if (rows) {
                r = caps_hl_requant_rs_v(acc, vld1q_s32(tm), vld1q_s32(ts));
                tm += 4;
                ts += 4;
            } else {
                r = caps_hl_requant_rs(acc, *tm++, *ts++);
            }
            vstrbq_scatter_offset_s32(o, offs, caps_hl_sat8_lanes(r));
            o += ostep;
        } while (tm != tm_end);
    }
}

CAPS_HL_INLINE void predict_kind(const caps_hl_pred_core *pc, const int8_t *input,
                                 const int8_t *weights, int8_t *out, int32_t n_in,
                                 int32_t rstride, int32_t istride, const int kind)
{
    /* a local copy: the byte stores below could alias *pc */
    const caps_hl_pred_core p = *pc;
    const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)rstride);
    const int8_t *const input_end = input + (size_t)n_in * (size_t)p.dim_in;
    const int8_t *w = weights;
    while (input != input_end) {
        capsule_kind(&p, input, &w, out, rstride, offs, kind);
        input += p.dim_in;
        out += istride;
    }
}

void caps_hl_predict(const caps_hl_pred *pred, const int8_t *input, const int8_t *weights,
                     int8_t *out, int32_t n_in, int32_t rstride, int32_t istride)
{
    const caps_hl_pred_core *pc = &pred->core;
    if (pc->mode == CAPS_HL_RQ_PERIOD6) { /* implies CAPS_HL_PRED_D4_S8 */
        d4s8_capsules(pc, input, weights, out, n_in, rstride, istride, 2, 0);
        return;
    }
    if (pc->kind == CAPS_HL_PRED_D4_S8 && pc->md % 4 == 0 &&
        (pc->mode == CAPS_HL_RQ_TABLE || pc->mode == CAPS_HL_RQ_GROUPS)) {
        if (pc->num_scales == 1) {
            d4s8_capsules(pc, input, weights, out, n_in, rstride, istride, 3, 0);
        } else if (pc->mode == CAPS_HL_RQ_TABLE) {
            d4s8_capsules(pc, input, weights, out, n_in, rstride, istride, 1, 0);
        } else {
            d4s8_capsules(pc, input, weights, out, n_in, rstride, istride, 0, 0);
        }
        return;
    }
    switch (pc->kind) {
    case CAPS_HL_PRED_D4:
        predict_kind(pc, input, weights, out, n_in, rstride, istride, CAPS_HL_PRED_D4);
        break;
    case CAPS_HL_PRED_D4_S8:
        predict_kind(pc, input, weights, out, n_in, rstride, istride, CAPS_HL_PRED_D4_S8);
        break;
    case CAPS_HL_PRED_D8:
        predict_kind(pc, input, weights, out, n_in, rstride, istride, CAPS_HL_PRED_D8);
        break;
    case CAPS_HL_PRED_D8_S8:
        predict_kind(pc, input, weights, out, n_in, rstride, istride, CAPS_HL_PRED_D8_S8);
        break;
    default:
        predict_kind(pc, input, weights, out, n_in, rstride, istride, CAPS_HL_PRED_ANY);
        break;
    }
}

/* caps_hl_predict with packed 4-bit weights (its own dispatch, so the int8
 * one compiles as before). */
void caps_hl_predict_s4(const caps_hl_pred *pred, const int8_t *input, const int8_t *weights,
                        int8_t *out, int32_t n_in, int32_t rstride, int32_t istride)
{
    const caps_hl_pred_core *pc = &pred->core;
    if (pc->kind == CAPS_HL_PRED_ANY_S4) {
        caps_hl_predict_any_s4(pred, input, weights, out, n_in, rstride, istride);
    } else if (pc->mode == CAPS_HL_RQ_PERIOD6) { /* implies dim_in 4, zp 0 */
        d4s8_capsules(pc, input, weights, out, n_in, rstride, istride, 2, 1);
    } else if (pc->kind == CAPS_HL_PRED_D4_S4 && pc->md % 4 == 0 &&
               (pc->mode == CAPS_HL_RQ_TABLE || pc->mode == CAPS_HL_RQ_GROUPS)) {
        if (pc->num_scales == 1) {
            d4s8_capsules(pc, input, weights, out, n_in, rstride, istride, 3, 1);
        } else if (pc->mode == CAPS_HL_RQ_TABLE) {
            d4s8_capsules(pc, input, weights, out, n_in, rstride, istride, 1, 1);
        } else {
            d4s8_capsules(pc, input, weights, out, n_in, rstride, istride, 0, 1);
        }
    } else if (pc->kind == CAPS_HL_PRED_D4_S4) {
        predict_kind(pc, input, weights, out, n_in, rstride, istride, CAPS_HL_PRED_D4_S4);
    } else {
        predict_kind(pc, input, weights, out, n_in, rstride, istride, CAPS_HL_PRED_D8_S4);
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
    caps_hl_pred pc;
    caps_hl_pred_init(&pc, dims, params, ctx->buf, 0);
    caps_hl_predict(&pc, input, weights, u_hat, dims->n_in, 1, pc.core.md);
    return CAPS_NN_SUCCESS;
}
