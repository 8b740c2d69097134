/*
 * RISC-V dynamic routing and class-capsule layer (PULP-NN style),
 * bit-exact with src/portable/caps_routing_s8.c.
 *
 * Blocked scheme as in the Cortex-M backend, with every phase split over
 * the cluster's cores and a barrier after it:
 *   iteration 0: columns (j, d) of sum_i u_hat split over cores;
 *   exp table:   its 256 entries split over cores;
 *   per block of input capsules:
 *     P:  recompute mode only: the block's predictions, capsules split
 *         over cores, into the block buffer;
 *     AB: input capsules split over cores: agreement, logit update,
 *         softmax, Q15 couplings (each core writes its own logit rows and
 *         its own columns of the coupling block);
 *     C:  columns (j, d) split over cores: s_jd += sum_i c_ij u_hat(j|i)
 *         into int32 registers, then into the int64 accumulator the core
 *         owns.
 * Couplings are stored as uint16 (2^15 fits), no correction needed.  The
 * weighted-sum requantization and the squash of the n_out output capsules
 * run on the calling core (small).
 */
#include "caps_rv_internal.h"

/* Everything a phase needs. */
typedef struct {
    const caps_nn_routing_buffers *sc;
    const caps_routing_params *params;
    const caps_rv_pred *pc;      /* recompute mode */
    const int8_t *input;         /* recompute mode */
    const int8_t *weights;       /* recompute mode */
    const int8_t *stored;        /* [n_in, md] or NULL */
    const int8_t *v;             /* previous iteration's output */
    int32_t n_in, n_out, dim;
    size_t md;
    int32_t update;              /* logit update index u = r - 1 */
    caps_bm_requant agree, carry;
    int32_t i0, n;               /* current block */
    const int8_t *rows;          /* first prediction row of the block */
} rv_job;

/* Iteration 0: columns of sum_i u_hat over the block's rows (all input
 * capsules when the predictions are stored). */
static void phase_sum(void *args, int32_t core, int32_t cores)
{
    const rv_job *job = (const rv_job *)args;
    int32_t start, stop;
    caps_nn_core_range((int32_t)job->md, core, cores, &start, &stop);
    for (int32_t e = start; e < stop; ++e) {
        const int8_t *p = job->rows + e;
        int32_t t = 0;
        for (int32_t k = 0; k < job->n; ++k) {
            t += *p;
            p += job->md;
        }
        job->sc->acc[e] += t;
    }
}

/* Recompute mode: the predictions of this core's capsules of the block. */
static void phase_predict(void *args, int32_t core, int32_t cores)
{
    const rv_job *job = (const rv_job *)args;
    const caps_rv_pred *pc = job->pc;
    int32_t start, stop;
    caps_nn_core_range(job->n, core, cores, &start, &stop);
    for (int32_t k = start; k < stop; ++k) {
        const size_t i = (size_t)(job->i0 + k);
        caps_rv_predict_capsule(pc, job->input + i * (size_t)pc->dim_in,
                                caps_rv_weights_of(pc, job->weights, i),
                                job->sc->rowbuf + (size_t)k * job->md);
    }
}

/* The block [i0, i0 + n): its prediction rows, computed in recompute mode. */
static void block_rows(rv_job *job, int32_t i0, int32_t block)
{
    job->i0 = i0;
    job->n = job->n_in - i0 < block ? job->n_in - i0 : block;
    if (job->stored != NULL) {
        job->rows = job->stored + (size_t)i0 * job->md;
    } else {
        caps_nn_parallel(phase_predict, job);
        job->rows = job->sc->rowbuf;
    }
}

static void phase_table(void *args, int32_t core, int32_t cores)
{
    const rv_job *job = (const rv_job *)args;
    int32_t start, stop;
    caps_nn_core_range(256, core, cores, &start, &stop);
    caps_bm_exp_table(&job->params->exp_beta[job->update], start, stop, job->sc->table);
}

static void phase_zero(void *args, int32_t core, int32_t cores)
{
    const rv_job *job = (const rv_job *)args;
    int32_t start, stop;
    caps_nn_core_range((int32_t)job->md, core, cores, &start, &stop);
    for (int32_t e = start; e < stop; ++e) {
        job->sc->acc[e] = 0;
    }
}

/* New logit of one (i, j). */
CAPS_RV_INLINE int32_t update_logit(const rv_job *job, int32_t a, int32_t b_old)
{
    const caps_nn_requant agree = job->params->agree[job->update];
    if (job->update > 0) {
        const caps_nn_requant carry = job->params->carry[job->update];
        const int32_t old = caps_rv_requant(b_old, &job->carry, carry.multiplier, carry.shift);
        a = caps_nn_sat_s32((int64_t)a + old);
    }
    return caps_rv_sat8(caps_rv_requant(a, &job->agree, agree.multiplier, agree.shift));
}

/* Phase AB: this core's input capsules of the block. */
static void phase_ab(void *args, int32_t core, int32_t cores)
{
    const rv_job *job = (const rv_job *)args;
    const caps_nn_routing_buffers *sc = job->sc;
    const int32_t n_out = job->n_out, dim = job->dim;
    int32_t start, stop;
    caps_nn_core_range(job->n, core, cores, &start, &stop);
    for (int32_t k = start; k < stop; ++k) {
        const int32_t i = job->i0 + k;
        const int8_t *row = job->rows + (size_t)k * job->md;
        int8_t *b = sc->logits + (size_t)i * n_out;
        int32_t mx = -128;
        for (int32_t j = 0; j < n_out; ++j) {
            const int32_t a = caps_rv_dot_s8(row + (size_t)j * dim, job->v + (size_t)j * dim, dim);
            const int32_t bj = update_logit(job, a, b[j]);
            b[j] = (int8_t)bj;
            mx = bj > mx ? bj : mx;
        }
        uint64_t sum = 0;
        for (int32_t j = 0; j < n_out; ++j) {
            sum += sc->table[mx - b[j]];
        }
        const uint32_t recip = caps_bm_softmax_recip(sum);
        uint16_t *c = (uint16_t *)sc->cbuf + k; /* 2^15 fits */
        for (int32_t j = 0; j < n_out; ++j) {
            *c = (uint16_t)caps_bm_softmax_q15(sc->table[mx - b[j]], recip);
            c += sc->block;
        }
    }
}

/* Phase C: this core's columns (j, d), up to four of one j at a time. */
static void phase_c(void *args, int32_t core, int32_t cores)
{
    const rv_job *job = (const rv_job *)args;
    const caps_nn_routing_buffers *sc = job->sc;
    const int32_t dim = job->dim, n = job->n;
    const size_t md = job->md;
    int32_t start, stop;
    caps_nn_core_range((int32_t)md, core, cores, &start, &stop);
    int32_t e = start;
    while (e < stop) {
        const int32_t j = e / dim;
        int32_t group = (j + 1) * dim - e; /* columns left in this j */
        group = group > stop - e ? stop - e : group;
        group = group > 4 ? 4 : group;
        const uint16_t *c = (const uint16_t *)sc->cbuf + (size_t)j * sc->block;
        const int8_t *u = job->rows + e;
        int32_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
        if (group == 4) {
            for (int32_t k = 0; k < n; ++k) {
                const int32_t cc = c[k];
                p0 += cc * u[0];
                p1 += cc * u[1];
                p2 += cc * u[2];
                p3 += cc * u[3];
                u += md;
            }
        } else {
            for (int32_t k = 0; k < n; ++k) {
                const int32_t cc = c[k];
                p0 += cc * u[0];
                if (group > 1) {
                    p1 += cc * u[1];
                }
                if (group > 2) {
                    p2 += cc * u[2];
                }
                u += md;
            }
        }
        int64_t *acc = sc->acc + e;
        acc[0] += p0;
        if (group > 1) {
            acc[1] += p1;
        }
        if (group > 2) {
            acc[2] += p2;
        }
        if (group > 3) {
            acc[3] += p3;
        }
        e += group;
    }
}

/* A job over scratch sc; the caller sets where the predictions come from. */
static void job_init(rv_job *job, const caps_class_caps_dims *dims,
                     const caps_routing_params *params, const caps_nn_routing_buffers *sc)
{
    memset(job, 0, sizeof(*job));
    job->sc = sc;
    job->params = params;
    job->n_in = dims->n_in;
    job->n_out = dims->n_out;
    job->dim = dims->dim_out;
    job->md = (size_t)dims->n_out * (size_t)dims->dim_out;
}

static void routing_core(rv_job *job, int8_t *output)
{
    const caps_routing_params *params = job->params;
    const caps_nn_routing_buffers *sc = job->sc;
    const int32_t p = caps_nn_routing_acc_shift(job->n_in);
    job->v = output;

    for (int32_t r = 0; r < params->routings; ++r) {
        if (r == 0) {
            caps_nn_parallel(phase_zero, job);
            /* stored: one block of all rows (int32 column sums cannot
             * overflow, |sum| <= 2^20 128) */
            const int32_t block = job->stored != NULL ? job->n_in : sc->block;
            for (int32_t i0 = 0; i0 < job->n_in; i0 += block) {
                block_rows(job, i0, block);
                caps_nn_parallel(phase_sum, job);
            }
        } else {
            const int32_t u = r - 1;
            job->update = u;
            const caps_nn_requant agree = params->agree[u], carry = params->carry[u];
            job->carry = caps_bm_requant_init(carry.multiplier, carry.shift, 128);
            int64_t max_abs = (int64_t)job->dim * 128 * 128;
            if (u > 0) {
                max_abs += carry.shift >= 0 ? ((int64_t)128 << (carry.shift + 1)) + 1 : 129;
            }
            job->agree = caps_bm_requant_init(agree.multiplier, agree.shift, max_abs);
            if (u > 0 && !job->carry.fast) {
                job->agree.fast = 0; /* the bound above assumed an exact carry */
            }
            caps_nn_parallel(phase_table, job);
            caps_nn_parallel(phase_zero, job);
            for (int32_t i0 = 0; i0 < job->n_in; i0 += sc->block) {
                block_rows(job, i0, sc->block);
                caps_nn_parallel(phase_ab, job);
                caps_nn_parallel(phase_c, job);
            }
        }
        caps_nn_routing_output(sc, params, r, p, output);
    }
}

caps_nn_status caps_dynamic_routing_s8(const caps_nn_context *ctx,
                                       const caps_class_caps_dims *dims,
                                       const caps_routing_params *params, const int8_t *u_hat,
                                       int8_t *output)
{
    if (caps_dynamic_routing_s8_args_check(ctx, dims, params, u_hat, output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_nn_routing_buffers sc;
    caps_nn_routing_carve(ctx->buf, dims, 1, &sc);
    rv_job job;
    job_init(&job, dims, params, &sc);
    job.stored = u_hat;
    routing_core(&job, output);
    return CAPS_NN_SUCCESS;
}

/* The class-capsule layer with int8 (weight_bits 8) or packed 4-bit
 * weights, after the entry check of either. */
static void class_caps(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                       const caps_class_caps_params *params, int32_t store_predictions,
                       const int8_t *input, const int8_t *weights, int32_t weight_bits,
                       int8_t *output)
{
    caps_nn_routing_buffers sc;
    caps_nn_routing_carve(ctx->buf, dims, store_predictions, &sc);
    caps_rv_pred pc;
    caps_rv_pred_init(&pc, dims, &params->pred);
    pc.weight_bits = weight_bits;
    rv_job job;
    job_init(&job, dims, &params->routing, &sc);
    job.pc = &pc;
    job.input = input;
    job.weights = weights;
    if (store_predictions) {
        caps_rv_predict_all(&pc, input, weights, sc.uhat);
        job.stored = sc.uhat;
    }
    routing_core(&job, output);
}

caps_nn_status caps_class_caps_s8(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                  const caps_class_caps_params *params,
                                  int32_t store_predictions, const int8_t *input,
                                  const int8_t *weights, int8_t *output)
{
    if (caps_class_caps_s8_args_check(ctx, dims, params, store_predictions, input, weights,
                                      output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    class_caps(ctx, dims, params, store_predictions, input, weights, 8, output);
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_class_caps_s4(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                  const caps_class_caps_params *params,
                                  int32_t store_predictions, const int8_t *input,
                                  const int8_t *weights, int8_t *output)
{
    if (caps_class_caps_s4_args_check(ctx, dims, params, store_predictions, input, weights,
                                      output) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    class_caps(ctx, dims, params, store_predictions, input, weights, 4, output);
    return CAPS_NN_SUCCESS;
}
