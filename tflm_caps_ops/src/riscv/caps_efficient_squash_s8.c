/*
 * RISC-V Efficient-CapsNet squash, bit-exact with
 * src/portable/caps_efficient_squash_s8.c: capsules split over the
 * cluster's cores; the gain from the exponential gain table (branch-light
 * bit length for its index) or, without a table, from the exact fast
 * primitives of caps_nn_backend_math.h; each element as
 * ((y G) >> 16 + 128) >> 8 with the 32x32 high multiply.
 */
#include "caps_rv_internal.h"

typedef struct {
    const caps_caps_dims *dims;
    const caps_efficient_squash_params *params;
    const int32_t *table;
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
        const uint32_t index = caps_rv_squash_table_index(x, dim, zp);
        const int32_t g =
            job->table != NULL
                ? job->table[index]
                : caps_nn_squash_gain_s32(caps_bm_efficient_squash_gain(
                      caps_nn_squash_index_rep(index), job->params->exp.multiplier,
                      job->params->exp.shift));
        caps_rv_squash_apply(x, v, dim, zp, g);
    }
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
    squash_job job = {dims, params, table, input, output};
    caps_nn_parallel(squash_phase, &job);
    return CAPS_NN_SUCCESS;
}
