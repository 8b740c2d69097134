/*
 * RISC-V self-attention capsule layer (Efficient-CapsNet), PULP-NN style,
 * bit-exact with src/portable/caps_self_attention_s8.c.  After the votes
 * (this backend's caps_predictions_s8, input capsules split over the
 * cores) four parallel phases, each ended by the team barrier:
 *   A. vote sums, output elements split over the cores (int32 column sums,
 *      exact, shifted to int16);
 *   B. couplings, input capsules split over the cores: agreements, then
 *      the softmax by the shared fast primitives (caps_bm_attention_couplings:
 *      no 64-bit division); each core keeps its agreements and
 *      exponentials in its own slot of the scratch that phases A and C do
 *      not use (the accumulator region), so the number of cores working
 *      here is capped by the slots there are;
 *   C. weighted sums, output elements split over the cores: int32 sums
 *      exact per block of 255 input capsules (int64 across blocks),
 *      requantized to int16 s;
 *   D. the squash of s, output capsules split over the cores.
 */
#include "caps_rv_internal.h"

#define BLOCK CAPS_NN_ROUTING_MAX_BLOCK

typedef struct {
    const caps_self_attention_params *params;
    const caps_nn_attention_buffers *sc;
    const int32_t *bias;
    int8_t *output;
    int32_t n_in;
    int32_t n_out;
    int32_t dim;
    int32_t md;
    int32_t slots; /* cores that can work in phase B */
} attention_job;

static void sums_phase(void *args, int32_t core, int32_t cores)
{
    const attention_job *job = (const attention_job *)args;
    const int32_t p = job->params->acc_shift;
    const int32_t half = p > 0 ? 1 << (p - 1) : 0;
    int32_t start, stop;
    caps_nn_core_range(job->md, core, cores, &start, &stop);
    for (int32_t e = start; e < stop; ++e) {
        const int8_t *col = job->sc->uhat + e;
        int32_t t = 0; /* |t| <= 2^20 128 */
        for (int32_t i = 0; i < job->n_in; ++i, col += job->md) {
            t += *col;
        }
        job->sc->sum[e] = (int16_t)((t + half) >> p); /* |.| <= 2^15 */
    }
}

static void couplings_phase(void *args, int32_t core, int32_t cores)
{
    const attention_job *job = (const attention_job *)args;
    const int32_t workers = cores < job->slots ? cores : job->slots;
    if (core >= workers) {
        return;
    }
    const int32_t n_out = job->n_out;
    const int32_t dim = job->dim;
    /* this core's slot: agreements then exponentials, n_out words each */
    int32_t *agree = (int32_t *)(void *)job->sc->acc + (size_t)core * 2u * (size_t)n_out;
    uint32_t *expv = (uint32_t *)(void *)(agree + n_out);
    int32_t start, stop;
    caps_nn_core_range(job->n_in, core, workers, &start, &stop);
    for (int32_t i = start; i < stop; ++i) {
        const int8_t *row = job->sc->uhat + (size_t)i * (size_t)job->md;
        const int16_t *sum = job->sc->sum;
        int32_t mx = INT32_MIN, mn = INT32_MAX;
        for (int32_t j = 0; j < n_out; ++j, row += dim, sum += dim) {
            int32_t a = 0;
            int32_t d = 0;
            for (; d + 2 <= dim; d += 2) {
                a += (int32_t)row[d] * sum[d] + (int32_t)row[d + 1] * sum[d + 1];
            }
            if (d < dim) {
                a += (int32_t)row[d] * sum[d];
            }
            agree[j] = a;
            mx = a > mx ? a : mx;
            mn = a < mn ? a : mn;
        }
        caps_bm_attention_couplings(agree, n_out, mx, mn, &job->params->exp_beta,
                                    job->params->coupling_shift,
                                    job->bias + (size_t)i * (size_t)n_out, expv,
                                    job->sc->coupling + (size_t)i * (size_t)n_out);
    }
}

static void weighted_phase(void *args, int32_t core, int32_t cores)
{
    const attention_job *job = (const attention_job *)args;
    const int32_t n_in = job->n_in;
    const int32_t n_out = job->n_out;
    int32_t start, stop;
    caps_nn_core_range(job->md, core, cores, &start, &stop);
    for (int32_t e = start; e < stop; ++e) {
        const int16_t *c = job->sc->coupling + e / job->dim;
        const int8_t *col = job->sc->uhat + e;
        int64_t t = 0;
        for (int32_t i0 = 0; i0 < n_in; i0 += BLOCK) {
            const int32_t i1 = n_in - i0 < BLOCK ? n_in : i0 + BLOCK;
            int32_t acc = 0; /* |c' u_hat| <= 2^22: exact for 255 capsules */
            for (int32_t i = i0; i < i1; ++i, col += job->md, c += n_out) {
                acc += (int32_t)*c * *col;
            }
            t += acc;
        }
        job->sc->s[e] = caps_bm_attention_s(t, job->params->acc_shift, &job->params->s);
    }
}

static void squash_phase(void *args, int32_t core, int32_t cores)
{
    const attention_job *job = (const attention_job *)args;
    const int32_t dim = job->dim;
    const caps_nn_requant *exp = &job->params->squash_exp;
    int32_t start, stop;
    caps_nn_core_range(job->n_out, core, cores, &start, &stop);
    for (int32_t j = start; j < stop; ++j) {
        const int16_t *y = job->sc->s + (size_t)j * (size_t)dim;
        int8_t *v = job->output + (size_t)j * (size_t)dim;
        uint64_t sq = 0;
        for (int32_t d = 0; d < dim; ++d) {
            sq += (uint32_t)((int32_t)y[d] * y[d]);
        }
        const int32_t g = caps_bm_efficient_squash_wide_gain(sq, exp->multiplier, exp->shift);
        for (int32_t d = 0; d < dim; ++d) {
            /* |y G| < 2^46: the shifted value fits int32 */
            v[d] = (int8_t)caps_rv_sat8(
                (int32_t)(((int64_t)y[d] * g + ((int64_t)1 << 23)) >> 24));
        }
    }
}

caps_nn_status caps_self_attention_s8(const caps_nn_context *ctx,
                                      const caps_class_caps_dims *dims,
                                      const caps_self_attention_params *params,
                                      const int8_t *input, const int8_t *weights,
                                      const int32_t *bias, int8_t *output)
{
    if (caps_self_attention_s8_args_check(ctx, dims, params, input, weights, bias, output) !=
        CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_nn_attention_buffers sc;
    caps_nn_attention_carve(ctx->buf, dims, &sc);
    const caps_nn_status st =
        caps_predictions_s8(&sc.pred, dims, &params->pred, input, weights, sc.uhat);
    if (st != CAPS_NN_SUCCESS) {
        return st;
    }
    const int32_t md = dims->n_out * dims->dim_out;
    /* acc, agree and expv are contiguous: 8 md + 2 A8(4 n_out) bytes */
    const size_t free_bytes = 8u * (size_t)md + 2u * CAPS_NN_A8(4u * (size_t)dims->n_out);
    attention_job job = {params, &sc, bias, output, dims->n_in, dims->n_out, dims->dim_out, md,
                         (int32_t)(free_bytes / (8u * (size_t)dims->n_out))};
    caps_nn_parallel(sums_phase, &job);
    caps_nn_parallel(couplings_phase, &job);
    caps_nn_parallel(weighted_phase, &job);
    caps_nn_parallel(squash_phase, &job);
    return CAPS_NN_SUCCESS;
}
