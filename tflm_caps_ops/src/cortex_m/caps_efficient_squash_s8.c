/*
 * Cortex-M Efficient-CapsNet squash, bit-exact with
 * src/portable/caps_efficient_squash_s8.c.
 *
 * The squash's loop with the exponential gain table: per capsule the
 * squared norm by SXTAB16 (zero point folded in) and SMLAD, the table
 * index by CLZ and USAT, one table load, then four elements per step by
 * SMLAWB/SMLAWT and SSAT (sat8((y G + 2^23) >> 24) == ssat8((128 +
 * floor(y G / 2^16)) >> 8)).  Without a table each gain comes from the
 * exact fast primitives of caps_nn_backend_math.h.
 */
#include "caps_cm_internal.h"

CAPS_CM_INLINE int8_t apply(uint32_t y, int32_t g)
{
    return (int8_t)caps_cm_ssat8(caps_cm_smlawb(g, y, 128) >> 8);
}

caps_nn_status caps_efficient_squash_s8(const caps_nn_context *ctx, const caps_caps_dims *dims,
                                        const caps_efficient_squash_params *params,
                                        const int8_t *input, int8_t *output)
{
    const int32_t *table;
    const caps_nn_status st =
        caps_efficient_squash_s8_args_check(ctx, dims, params, input, output, &table);
    if (st != CAPS_NN_SUCCESS) {
        return st;
    }
    const int32_t dim = dims->dim;
    const int32_t zp = params->input_zp;
#if CAPS_CM_DSP
    const uint32_t nzp = (uint32_t)(uint16_t)(int16_t)(-zp) * 0x00010001u;
#endif
    for (int32_t n = 0; n < dims->n_caps; ++n) {
        const int8_t *x = input + (size_t)n * (size_t)dim;
        int8_t *v = output + (size_t)n * (size_t)dim;
        const uint32_t idx = caps_cm_squash_table_index(caps_cm_squared_norm(x, dim, zp));
        const int32_t g =
            table != NULL ? table[idx]
                          : caps_nn_squash_gain_s32(caps_bm_efficient_squash_gain(
                                caps_nn_squash_index_rep(idx), params->exp.multiplier,
                                params->exp.shift));
        /* in place is safe: each step reads its elements before writing them */
        int32_t k = 0;
#if CAPS_CM_DSP
        for (; k + 4 <= dim; k += 4) {
            const uint32_t w = caps_cm_read_s8x4(x + k);
            const uint32_t a = caps_cm_sxtab16(nzp, w);      /* y0, y2 */
            const uint32_t b = caps_cm_sxtab16_ror8(nzp, w); /* y1, y3 */
            v[k] = (int8_t)caps_cm_ssat8(caps_cm_smlawb(g, a, 128) >> 8);
            v[k + 1] = (int8_t)caps_cm_ssat8(caps_cm_smlawb(g, b, 128) >> 8);
            v[k + 2] = (int8_t)caps_cm_ssat8(caps_cm_smlawt(g, a, 128) >> 8);
            v[k + 3] = (int8_t)caps_cm_ssat8(caps_cm_smlawt(g, b, 128) >> 8);
        }
#endif
        for (; k < dim; ++k) {
            v[k] = apply((uint32_t)(x[k] - zp), g);
        }
    }
    return CAPS_NN_SUCCESS;
}
