/*
 * RISC-V squash, bit-exact with src/portable/caps_squash_s8.c: capsules
 * split over the cluster's cores; the gain with the exact fast primitives
 * of caps_nn_backend_math.h (hardware 32-bit divides, table-seeded square
 * root) instead of 64-bit library divisions and a bit-serial root.
 */
#include "caps_rv_internal.h"

typedef struct {
    const caps_caps_dims *dims;
    const caps_squash_params *params;
    const int8_t *input;
    int8_t *output;
} squash_job;

static void squash_phase(void *args, int32_t core, int32_t cores)
{
    const squash_job *job = (const squash_job *)args;
    const int32_t dim = job->dims->dim;
    const int32_t zp = job->params->input_zp;
    int32_t start, stop;
    caps_nn_core_range(job->dims->n_caps, core, cores, &start, &stop);
    for (int32_t n = start; n < stop; ++n) {
        const int8_t *x = job->input + (size_t)n * (size_t)dim;
        int8_t *v = job->output + (size_t)n * (size_t)dim;
        uint32_t sq = 0;
        for (int32_t k = 0; k < dim; ++k) {
            const int32_t y = x[k] - zp;
            sq += (uint32_t)(y * y);
        }
        const uint32_t g =
            caps_bm_squash_gain(sq, job->params->sq_multiplier, job->params->sq_exponent);
        /* round(y G / 2^24) as two 32-bit products (G = gh 2^8 + gl) */
        const int32_t gh = (int32_t)(g >> 8), gl = (int32_t)(g & 0xFFu);
        for (int32_t k = 0; k < dim; ++k) {
            const int32_t y = x[k] - zp;
            const int32_t low = (y * gl + (1 << 23) + (y >> 31)) >> 8;
            v[k] = (int8_t)caps_rv_sat8((y * gh + low) >> 16);
        }
    }
}

caps_nn_status caps_squash_s8(const caps_caps_dims *dims, const caps_squash_params *params,
                              const int8_t *input, int8_t *output)
{
    if (caps_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        caps_squash_params_check(params) != CAPS_NN_SUCCESS ||
        (dims->n_caps > 0 && (input == NULL || output == NULL))) {
        return CAPS_NN_ARG_ERROR;
    }
    squash_job job = {dims, params, input, output};
    caps_nn_parallel(squash_phase, &job);
    return CAPS_NN_SUCCESS;
}
