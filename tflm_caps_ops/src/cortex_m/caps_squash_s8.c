/*
 * Cortex-M squash, bit-exact with src/portable/caps_squash_s8.c.
 *
 * Per capsule: the squared norm with SXTAB16 (zero-point offset folded in)
 * and SMLAD; the gain-table index with CLZ and USAT; one table load; each
 * element with SMLAWB/SMLAWT and SSAT:
 *   sat8((y G + 2^23) >> 24) == ssat8((128 + floor(y G / 2^16)) >> 8).
 * D = 4 (the primary capsules of most CapsNets) has its own loop of about
 * 25 instructions per capsule.  Without a table (routing's few capsules)
 * the gain comes from the fast exact primitives of caps_nn_backend_math.h.
 */
#include "caps_cm_internal.h"

CAPS_CM_INLINE int8_t apply(uint32_t y, int32_t g)
{
    return (int8_t)caps_cm_ssat8(caps_cm_smlawb(g, y, 128) >> 8);
}

static void squash_d4(const int32_t *table, int32_t n_caps, int32_t zp, const int8_t *x,
                      int8_t *v)
{
#if CAPS_CM_DSP
    const uint32_t nzp = (uint32_t)(uint16_t)(int16_t)(-zp) * 0x00010001u;
    for (int32_t n = 0; n < n_caps; ++n, x += 4, v += 4) {
        const uint32_t w = caps_cm_read_s8x4(x);
        const uint32_t a = caps_cm_sxtab16(nzp, w);      /* y0, y2 */
        const uint32_t b = caps_cm_sxtab16_ror8(nzp, w); /* y1, y3 */
        const uint32_t sq = (uint32_t)caps_cm_smlad(b, b, caps_cm_smuad(a, a));
        const int32_t g = table[caps_cm_squash_table_index(sq)];
        v[0] = (int8_t)caps_cm_ssat8(caps_cm_smlawb(g, a, 128) >> 8);
        v[1] = (int8_t)caps_cm_ssat8(caps_cm_smlawb(g, b, 128) >> 8);
        v[2] = (int8_t)caps_cm_ssat8(caps_cm_smlawt(g, a, 128) >> 8);
        v[3] = (int8_t)caps_cm_ssat8(caps_cm_smlawt(g, b, 128) >> 8);
    }
#else
    for (int32_t n = 0; n < n_caps; ++n, x += 4, v += 4) {
        const int32_t g = table[caps_cm_squash_table_index(caps_cm_squared_norm(x, 4, zp))];
        for (int32_t k = 0; k < 4; ++k) {
            v[k] = apply((uint32_t)(x[k] - zp), g);
        }
    }
#endif
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
    const int32_t zp = params->input_zp;
    if (table != NULL && dim == 4) {
        squash_d4(table, dims->n_caps, zp, input, output);
        return CAPS_NN_SUCCESS;
    }
    for (int32_t n = 0; n < dims->n_caps; ++n) {
        const int8_t *x = input + (size_t)n * (size_t)dim;
        int8_t *v = output + (size_t)n * (size_t)dim;
        const uint32_t sq = caps_cm_squared_norm(x, dim, zp);
        int32_t g;
        if (table != NULL) {
            g = table[caps_cm_squash_table_index(sq)];
        } else {
            const uint32_t rep = caps_nn_squash_index_rep(caps_cm_squash_table_index(sq));
            g = caps_nn_squash_gain_s32(
                caps_bm_squash_gain(rep, params->sq_multiplier, params->sq_exponent));
        }
        /* in place is safe: element k is read before it is written */
        for (int32_t k = 0; k < dim; ++k) {
            v[k] = apply((uint32_t)(x[k] - zp), g);
        }
    }
    return CAPS_NN_SUCCESS;
}
