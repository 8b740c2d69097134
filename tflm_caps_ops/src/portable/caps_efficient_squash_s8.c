/* Portable Efficient-CapsNet squash: v = (1 - exp(-|x|)) x / |x|, output
 * scale 1/128, zp 0. */
#include <stddef.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

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
        const int8_t *x = input + (size_t)n * dim;
        int8_t *v = output + (size_t)n * dim;
        uint32_t sq = 0;
        for (int32_t k = 0; k < dim; ++k) {
            const int32_t y = x[k] - zp;
            sq += (uint32_t)(y * y);
        }
        const int32_t gain =
            table != NULL ? table[caps_nn_squash_index(sq)]
                          : caps_nn_efficient_squash_table_gain(sq, params->exp.multiplier,
                                                                params->exp.shift);
        /* in place is safe: element k is read before it is written */
        for (int32_t k = 0; k < dim; ++k) {
            v[k] = caps_nn_squash_apply(x[k] - zp, gain);
        }
    }
    return CAPS_NN_SUCCESS;
}
