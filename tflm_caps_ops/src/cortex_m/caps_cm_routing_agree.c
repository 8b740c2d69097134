/*
 * Cortex-M routing, phase A (per output capsule j, over the capsules i of
 * a block): the agreement u_hat(j|i) . v_j with SXTB16/SMLAD against v_j
 * unpacked once per iteration and held in registers, and the logit update
 * (carry share from a 256-entry table, agreement requantization, QADD).
 * Each block then goes through phase B (caps_cm_routing_softmax.c).
 * (N_out, D_out) = (10, 6) and (10, 16), the published CapsNets, get loops
 * with constant trip counts.
 */
#include "caps_cm_routing.h"

/* v of the previous iteration, unpacked once per iteration so that each
 * agreement costs one load and two SXTB16 per 4 dims of u_hat only: per
 * output capsule, per 4 dims the halfword pairs (v0, v2) and (v1, v3),
 * then (v4, v5)-style pairs for the tail and a last single value. */
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
            *out++ = ((uint32_t)(uint16_t)(int16_t)x[d]) |
                     ((uint32_t)(uint16_t)(int16_t)x[d + 1] << 16);
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

/* The constants of logit update u and the fastest kind that is exact. */
static caps_cm_update update_init(const caps_routing_params *params, int32_t u, int32_t dim)
{
    caps_cm_update up;
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
        up.kind = CAPS_CM_UPDATE_FIRST;
    } else if (agree_ok && carry_ok) {
        up.kind = CAPS_CM_UPDATE_CARRY;
    } else {
        up.kind = CAPS_CM_UPDATE_SLOW;
    }
    return up;
}

/* New logit of one (i, j) from its agreement (kind is a constant at each
 * call site). */
CAPS_CM_INLINE int32_t update_logit(const caps_cm_update *up, const int32_t kind, int32_t a,
                                    int32_t b_old)
{
    if (kind == CAPS_CM_UPDATE_CARRY) {
        a = caps_cm_qadd(a, up->carry_tab[b_old]);
    }
    if (kind != CAPS_CM_UPDATE_SLOW) {
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
CAPS_CM_INLINE void phase_a_dim(const caps_cm_update *up, const int32_t kind, const int8_t *row,
                                size_t md, const uint32_t *vpj, const int8_t *vj, int8_t *b,
                                int32_t n_out, int32_t n, const int32_t dim)
{
    if (kind == CAPS_CM_UPDATE_SLOW) {
        for (int32_t k = 0; k < n; ++k) {
            *b = (int8_t)update_logit(up, kind, agree_dot_plain(row, vj, dim), *b);
            row += md;
            b += n_out;
        }
        return;
    }
    uint32_t vloc[CAPS_CM_VPREP_WORDS / 8];
    const int32_t vw = vprep_words(dim);
    const uint32_t *vv = vpj;
    if (vw <= CAPS_CM_VPREP_WORDS / 8) {
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

/* One block of phases A and B, dispatched on constant dims and update kind. */
CAPS_CM_INLINE void phase_ab_block_dim(const caps_cm_update *up, const int32_t kind,
                                       const caps_nn_routing_buffers *sc, const int8_t *rows,
                                       size_t md, const uint32_t *vp, const int8_t *v, int32_t i0,
                                       int32_t n, int32_t n_out, const int32_t dim)
{
    int8_t *b = sc->logits + (size_t)i0 * n_out;
    const int32_t vw = vprep_words(dim);
    for (int32_t j = 0; j < n_out; ++j) {
        phase_a_dim(up, kind, rows + (size_t)j * dim, md, vp != NULL ? vp + (size_t)j * vw : NULL,
                    v + (size_t)j * dim, b + j, n_out, n, dim);
    }
    caps_cm_routing_softmax_block(sc, rows, md, b, n, n_out, dim);
}

CAPS_CM_INLINE void phase_ab_block_kind(const caps_cm_update *up, const int32_t kind,
                                        const caps_nn_routing_buffers *sc, const int8_t *rows,
                                        size_t md, const uint32_t *vp, const int8_t *v, int32_t i0,
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

void caps_cm_agreement_init(caps_cm_agreement *ag, const caps_routing_params *params, int32_t u,
                            const int8_t *v, int32_t n_out, int32_t dim)
{
    ag->up = update_init(params, u, dim);
    if (ag->up.kind == CAPS_CM_UPDATE_CARRY) {
        /* the old logit's share of the update, one per int8 value
         * (carry: rshift 0, no rounding terms) */
        for (int32_t q = -128; q < 128; ++q) {
            ag->carry_tab[q + 128] = caps_cm_smmlar((int32_t)((uint32_t)q << ag->up.carry.lshift),
                                                    ag->up.carry.multiplier, 0);
        }
        ag->up.carry_tab = ag->carry_tab + 128;
    }
    ag->vp = NULL;
    if ((int64_t)n_out * vprep_words(dim) <= CAPS_CM_VPREP_WORDS) {
        prepare_v(v, n_out, dim, ag->vprep);
        ag->vp = ag->vprep;
    } else {
        ag->up.kind = CAPS_CM_UPDATE_SLOW; /* v too big to unpack on the stack */
    }
}

void caps_cm_routing_agree_block(const caps_cm_agreement *ag, const caps_nn_routing_buffers *sc,
                                 const int8_t *rows, size_t md, const int8_t *v, int32_t i0,
                                 int32_t n, int32_t n_out, int32_t dim)
{
    /* a local copy: its fields stay in registers across the logit stores */
    const caps_cm_update up = ag->up;
    const uint32_t *vp = ag->vp;
    if (up.kind == CAPS_CM_UPDATE_FIRST) {
        phase_ab_block_kind(&up, CAPS_CM_UPDATE_FIRST, sc, rows, md, vp, v, i0, n, n_out, dim);
    } else if (up.kind == CAPS_CM_UPDATE_CARRY) {
        phase_ab_block_kind(&up, CAPS_CM_UPDATE_CARRY, sc, rows, md, vp, v, i0, n, n_out, dim);
    } else {
        phase_ab_block_dim(&up, CAPS_CM_UPDATE_SLOW, sc, rows, md, vp, v, i0, n, n_out, dim);
    }
}
