/*
 * Helium squash, bit-exact with src/portable/caps_squash_s8.c.
 *
 * D = 4 (the primary capsules of most CapsNets): four capsules per step,
 * one per 32-bit lane: the elements gathered (VLDRB gather), the squared
 * norms and gain-table indices (VCLZ, VSHL, VMLA) in lanes, the four gains
 * in one gather from the table, each element y G rounded by one VRMULH of
 * y 2^8 ((y G 2^8 + 2^31) >> 32 = (y G + 2^23) >> 24), and the 16 results
 * saturated and interleaved back into capsule order by four VQMOVN.  The
 * last step is predicated (VCTP) for capsule counts not a multiple of 4.
 * Other dims: per capsule, the squared norm by a predicated VMLADAV loop
 * and the elements four at a time.  Without a table (routing's N_out
 * capsules) each gain comes from the exact fast scalar primitive.
 */
#include "caps_hl_internal.h"

/* Gain of a capsule whose squared norm has table index idx, no table. */
static int32_t computed_gain(uint32_t idx, const caps_squash_params *params)
{
    return caps_nn_squash_gain_s32(caps_bm_squash_gain(caps_nn_squash_index_rep(idx),
                                                       params->sq_multiplier,
                                                       params->sq_exponent));
}

/* Four (tail: n < 4) capsules of dim 4 at x into v; gains from the table,
 * or computed when table is NULL. */
CAPS_HL_INLINE void squash4(const int32_t *table, const caps_squash_params *params, int32_t zp,
                            const int8_t *x, int8_t *v, uint32x4_t off, int32_t n,
                            const int tail)
{
    const mve_pred16_t p = tail ? vctp32q((uint32_t)n) : 0;
    const caps_hl_caps4 c = caps_hl_load_caps4(x, zp, off, p, tail);
    const uint32x4_t idx = caps_hl_squash_index(c.sq);
    int32x4_t g;
    if (table != NULL) {
        g = tail ? vldrwq_gather_shifted_offset_z_s32(table, idx, p)
                 : vldrwq_gather_shifted_offset_s32(table, idx);
    } else {
        uint32_t ix[4];
        int32_t gs[4] = {0, 0, 0, 0};
        vst1q_u32(ix, idx);
        for (int32_t l = 0; l < (tail ? n : 4); ++l) {
            gs[l] = computed_gain(ix[l], params);
        }
        g = vld1q_s32(gs);
    }
    const int32x4_t v0 = vrmulhq_s32(vshlq_n_s32(c.y0, 8), g);
    const int32x4_t v1 = vrmulhq_s32(vshlq_n_s32(c.y1, 8), g);
    const int32x4_t v2 = vrmulhq_s32(vshlq_n_s32(c.y2, 8), g);
    const int32x4_t v3 = vrmulhq_s32(vshlq_n_s32(c.y3, 8), g);
    const int8x16_t out = caps_hl_sat8_interleave4(v0, v1, v2, v3);
    if (tail) {
        vstrbq_p_s8(v, out, vctp8q((uint32_t)(4 * n)));
    } else {
        vstrbq_s8(v, out);
    }
}

/* All capsules of dim 4; `table` NULL computes the gains (a constant at
 * each call site, so the table loop has no test in it). */
CAPS_HL_INLINE void squash_d4(const int32_t *table, const caps_squash_params *params,
                              int32_t n_caps, const int8_t *x, int8_t *v)
{
    const uint32x4_t off = vidupq_n_u32(0, 4); /* 0, 4, 8, 12 */
    const int32_t zp = params->input_zp;
    for (int32_t i = n_caps >> 2; i > 0; --i) {
        squash4(table, params, zp, x, v, off, 4, 0);
        x += 16;
        v += 16;
    }
    if (n_caps & 3) {
        squash4(table, params, zp, x, v, off, n_caps & 3, 1);
    }
}

/* One capsule of any dim with gain g: four elements per step (predicated
 * tail), y 2^7 by VQRDMULH with the scalar gain = (y G 2^8 + 2^31) >> 32. */
CAPS_HL_INLINE void apply_gain(const int8_t *x, int8_t *v, int32_t dim, int32_t zp, int32_t g)
{
    /* in place is safe: each step reads its elements before writing them */
    for (int32_t k = 0; k < dim; k += 4) {
        const mve_pred16_t p = vctp32q((uint32_t)(dim - k));
        const int32x4_t y = vsubq_n_s32(vldrbq_z_s32(x + k, p), zp);
        const int32x4_t r = vqrdmulhq_n_s32(vshlq_n_s32(y, 7), g);
        vstrbq_p_s32(v + k, caps_hl_sat8_lanes(r), p);
    }
}

/* Capsules of any dim one at a time: squared norm, gain, elements. */
CAPS_HL_INLINE void squash_each(const int32_t *table, const caps_squash_params *params,
                                int32_t n_caps, const int8_t *x, int8_t *v, const int32_t dim)
{
    const int32_t zp = params->input_zp;
    for (int32_t n = n_caps; n > 0; --n) {
        const uint32_t idx = caps_nn_squash_index(caps_hl_squared_norm(x, dim, zp));
        const int32_t g = table != NULL ? table[idx] : computed_gain(idx, params);
        apply_gain(x, v, dim, zp, g);
        x += dim;
        v += dim;
    }
}

caps_nn_status caps_squash_s8(const caps_nn_context *ctx, const caps_caps_dims *dims,
                              const caps_squash_params *params, const int8_t *input,
                              int8_t *output)
{
    const int32_t *table;
    const caps_nn_status st =
        caps_squash_s8_args_check(ctx, dims, params, input, output, &table);
    if (st != CAPS_NN_SUCCESS) {
        return st;
    }
    const int32_t dim = dims->dim;
    if (dim == 4) {
        if (table != NULL) {
            squash_d4(table, params, dims->n_caps, input, output);
        } else {
            squash_d4(NULL, params, dims->n_caps, input, output);
        }
        return CAPS_NN_SUCCESS;
    }
    /* 8-D (sabour2017-mnist's primary capsules) and 16-D get their own
     * copies of the loop: with a constant dim the predicates are constants
     * and the inner loops unroll */
    if (dim == 8) {
        squash_each(table, params, dims->n_caps, input, output, 8);
    } else if (dim == 16) {
        squash_each(table, params, dims->n_caps, input, output, 16);
    } else {
        squash_each(table, params, dims->n_caps, input, output, dim);
    }
    return CAPS_NN_SUCCESS;
}
