/*
 * RISC-V capsule length, bit-exact with src/portable/caps_length_s8.c:
 * capsules split over the cluster's cores, exact fast Q16 norm.
 */
#include "caps_rv_internal.h"

typedef struct {
    const caps_caps_dims *dims;
    const caps_length_params *params;
    const int8_t *input;
    int8_t *output;
} length_job;

static void length_phase(void *args, int32_t core, int32_t cores)
{
    const length_job *job = (const length_job *)args;
    const int32_t dim = job->dims->dim;
    const int32_t zp = job->params->input_zp;
    const caps_nn_requant out = job->params->out;
    const caps_bm_requant q = caps_bm_requant_init(out.multiplier, out.shift, (1 << 30) - 1);
    int32_t start, stop;
    caps_nn_core_range(job->dims->n_caps, core, cores, &start, &stop);
    for (int32_t n = start; n < stop; ++n) {
        const int8_t *x = job->input + (size_t)n * (size_t)dim;
        uint32_t sq = 0;
        for (int32_t k = 0; k < dim; ++k) {
            const int32_t y = x[k] - zp;
            sq += (uint32_t)(y * y);
        }
        const int32_t norm = (int32_t)caps_bm_norm_q16(sq);
        const int32_t r = (q.fast && norm < (1 << 30))
                              ? caps_bm_requantize(norm, &q)
                              : caps_nn_requantize(norm, out.multiplier, out.shift);
        job->output[n] = (int8_t)caps_rv_sat8(r + CAPS_NN_LENGTH_OUT_ZERO_POINT);
    }
}

caps_nn_status caps_length_s8(const caps_caps_dims *dims, const caps_length_params *params,
                              const int8_t *input, int8_t *output)
{
    if (caps_length_s8_args_check(dims, params, input, output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    length_job job = {dims, params, input, output};
    caps_nn_parallel(length_phase, &job);
    return CAPS_NN_SUCCESS;
}
