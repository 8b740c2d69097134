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
#if CAPS_CM_DSP
    const uint32_t nzp = (uint32_t)(uint16_t)(int16_t)(-zp) * 0x00010001u;
#endif
    for (int32_t n = 0; n < dims->n_caps; ++n) {
        const int8_t *x = input + (size_t)n * (size_t)dim;
        int32_t sq = 0;
        int32_t k = 0;
#if CAPS_CM_DSP
        for (; k + 4 <= dim; k += 4) {
            const uint32_t w = caps_cm_read_s8x4(x + k);
            const uint32_t a = caps_cm_sxtab16(nzp, w);
            const uint32_t b = caps_cm_sxtab16_ror8(nzp, w);
            sq = caps_cm_smlad(a, a, sq);
            sq = caps_cm_smlad(b, b, sq);
        }
#endif
        for (; k < dim; ++k) {
            const int32_t y = x[k] - zp;
            sq += y * y;
        }
        const int32_t norm = (int32_t)caps_bm_norm_q16((uint32_t)sq);
        const int32_t out = (q.fast && norm < (1 << 30))
                                ? caps_cm_requant(norm, &q)
                                : caps_nn_requantize(norm, params->out.multiplier,
                                                     params->out.shift);
        output[n] = (int8_t)caps_cm_ssat8(out + CAPS_NN_LENGTH_OUT_ZERO_POINT);
    }
    return CAPS_NN_SUCCESS;
}
