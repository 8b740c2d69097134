/*
 * Cortex-M capsule length, bit-exact with src/portable/caps_length_s8.c:
 * squared norm with SXTAB16/SMLAD, the exact fast Q16 norm of
 * caps_nn_backend_math.h, requantization as in the portable kernel.
 */
#include "caps_cm_internal.h"

caps_nn_status caps_length_s8(const caps_caps_dims *dims, const caps_length_params *params,
                              const int8_t *input, int8_t *output)
{
    if (caps_length_s8_args_check(dims, params, input, output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    const int32_t dim = dims->dim;
    const int32_t zp = params->input_zp;
    /* the norm is < 2^31; the fast split needs it below 2^30 */
    const caps_bm_requant q =
        caps_bm_requant_init(params->out.multiplier, params->out.shift, (1 << 30) - 1);
    for (int32_t n = 0; n < dims->n_caps; ++n) {
        const uint32_t sq = caps_cm_squared_norm(input + (size_t)n * (size_t)dim, dim, zp);
        const int32_t norm = (int32_t)caps_bm_norm_q16(sq);
        const int32_t out = (q.fast && norm < (1 << 30))
                                ? caps_cm_requant(norm, &q)
                                : caps_nn_requantize(norm, params->out.multiplier,
                                                     params->out.shift);
        output[n] = (int8_t)caps_cm_ssat8(out + CAPS_NN_LENGTH_OUT_ZERO_POINT);
    }
    return CAPS_NN_SUCCESS;
}
