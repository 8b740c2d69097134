/* Portable capsule length: |v|, output scale 1/256, zp -128. */
#include <stddef.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

caps_nn_status caps_length_s8(const caps_caps_dims *dims, const caps_length_params *params,
                              const int8_t *input, int8_t *output)
{
    if (caps_length_s8_args_check(dims, params, input, output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    const int32_t dim = dims->dim;
    const int32_t zp = params->input_zp;
    for (int32_t n = 0; n < dims->n_caps; ++n) {
        const int8_t *x = input + (size_t)n * dim;
        uint32_t sq = 0;
        for (int32_t k = 0; k < dim; ++k) {
            const int32_t y = x[k] - zp;
            sq += (uint32_t)(y * y);
        }
        const int32_t norm = (int32_t)caps_nn_norm_q16(sq); /* sq < 2^30: < 2^31 */
        const int32_t q = caps_nn_requantize(norm, params->out.multiplier, params->out.shift);
        output[n] = caps_nn_sat_s8(q + CAPS_NN_LENGTH_OUT_ZERO_POINT);
    }
    return CAPS_NN_SUCCESS;
}
