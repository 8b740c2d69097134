/* Portable predictions from packed 4-bit weights: caps_predictions_s8's
 * loop with each weight's nibble sign-extended as it is read (no unpacked
 * copy of W). */
#include <stddef.h>

#include "../common/caps_nn_int4.h"
#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

caps_nn_status caps_predictions_s4(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                   const caps_predictions_params *params, const int8_t *input,
                                   const int8_t *weights, int8_t *u_hat)
{
    if (caps_predictions_s4_args_check(ctx, dims, params, input, weights, u_hat) !=
        CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    const int32_t k_in = dims->dim_in;
    const int32_t n_out = dims->n_out;
    const int32_t d_out = dims->dim_out;
    const size_t rows = (size_t)n_out * (size_t)d_out;
    const int32_t zp = params->input_zp;
    /* u_i - zp, in [-255, 255]; the buffer size has room to align */
    int16_t *u_off = (int16_t *)(void *)(((uintptr_t)ctx->buf + 7u) & ~(uintptr_t)7u);

    for (int32_t i = 0; i < dims->n_in; ++i) {
        const int8_t *u = input + (size_t)i * k_in;
        for (int32_t k = 0; k < k_in; ++k) {
            u_off[k] = (int16_t)(u[k] - zp);
        }
        const int8_t *w = caps_nn_s4_block(weights, dims, i);
        int8_t *out = u_hat + (size_t)i * rows;
        size_t e = 0; /* element of W[i] */
        for (int32_t j = 0; j < n_out; ++j) {
            const int32_t q = params->num_scales == 1 ? 0 : j;
            const int32_t mult = params->multipliers[q];
            const int32_t shift = params->shifts[q];
            for (int32_t d = 0; d < d_out; ++d) {
                int32_t acc = 0;
                for (int32_t k = 0; k < k_in; ++k) {
                    acc += caps_nn_s4_at(w, e++) * u_off[k];
                }
                out[j * d_out + d] = caps_nn_sat_s8(caps_nn_requantize(acc, mult, shift));
            }
        }
    }
    return CAPS_NN_SUCCESS;
}
