/*
 * Helium Efficient-CapsNet squash, bit-exact with
 * src/portable/caps_efficient_squash_s8.c.
 *
 * Per capsule: the squared norm by a predicated VMLADAV loop (eight
 * elements per step), the table index by CLZ, the gain from the exponential gain table (or, with
 * no table, from the exact fast scalar primitive), then four elements per
 * step: y 2^7 by VQRDMULH with the scalar gain = (y G 2^8 + 2^31) >> 32 =
 * (y G + 2^23) >> 24, saturated to int8 and stored by a predicated VSTRB.
 */
#include "caps_hl_internal.h"

/* caps_nn_squash_index by CLZ: shift = max(0, 24 - clz(sq)) (the bit
 * length above the 2^(BITS+1) entries of the exact range). */
CAPS_HL_INLINE uint32_t table_index(uint32_t sq)
{
    const int32_t lz = sq != 0 ? __builtin_clz(sq) : 32;
    const int32_t shift = lz < 24 ? 24 - lz : 0;
    return (sq >> shift) + ((uint32_t)shift << CAPS_NN_SQUASH_LUT_BITS);
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
    for (int32_t n = 0; n < dims->n_caps; ++n) {
        const int8_t *x = input + (size_t)n * (size_t)dim;
        int8_t *v = output + (size_t)n * (size_t)dim;
        const uint32_t idx = table_index(caps_hl_squared_norm(x, dim, zp));
        const int32_t g =
            table != NULL ? table[idx]
                          : caps_nn_squash_gain_s32(caps_bm_efficient_squash_gain(
                                caps_nn_squash_index_rep(idx), params->exp.multiplier,
                                params->exp.shift));
        /* in place is safe: each step reads its elements before writing them */
        for (int32_t k = 0; k < dim; k += 4) {
            const mve_pred16_t p = vctp32q((uint32_t)(dim - k));
            const int32x4_t y = vsubq_n_s32(vldrbq_z_s32(x + k, p), zp);
            const int32x4_t r = vqrdmulhq_n_s32(vshlq_n_s32(y, 7), g);
            vstrbq_p_s32(v + k, caps_hl_sat8_lanes(r), p);
        }
    }
    return CAPS_NN_SUCCESS;
}
