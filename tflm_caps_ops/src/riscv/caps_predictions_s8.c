/*
 * RISC-V predictions u_hat(j|i) = W_ij (u_i - zp), PULP-NN style: the input
 * capsules are split over the cluster's cores (each core one contiguous
 * chunk of whole (n_out*dim_out) x dim_in matrix-vector products, no
 * shared writes).  The zero point is folded as W.u - zp * sum(W) so the
 * dot products stay int8 x int8 (4 per instruction with Xpulp's sdotp).
 */
#include "caps_rv_internal.h"

void caps_rv_pred_init(caps_rv_pred *pc, const caps_class_caps_dims *dims,
                       const caps_predictions_params *params)
{
    pc->n_in = dims->n_in;
    pc->n_out = dims->n_out;
    pc->dim_out = dims->dim_out;
    pc->dim_in = dims->dim_in;
    pc->zp = params->input_zp;
    pc->num_scales = params->num_scales;
    pc->multipliers = params->multipliers;
    pc->shifts = params->shifts;
    pc->weight_bits = 8;
}

/* sum_k w_k (u_k - zp), exact int32 (|.| <= dim_in 255 128). */
CAPS_RV_INLINE int32_t row_dot(const int8_t *w, const int8_t *u, int32_t k_in, int32_t zp)
{
    int32_t acc = 0, wsum = 0;
    int32_t k = 0;
#if defined(CAPS_NN_PULP_SDOTP)
    const uint32_t ones = 0x01010101u;
    for (; k + 4 <= k_in; k += 4) {
        const uint32_t x = caps_rv_read_s8x4(w + k);
        acc = caps_rv_sdot4(x, caps_rv_read_s8x4(u + k), acc);
        wsum = caps_rv_sdot4(x, ones, wsum);
    }
#endif
    for (; k < k_in; ++k) {
        acc += (int32_t)w[k] * u[k];
        wsum += w[k];
    }
    return acc - zp * wsum;
}

void caps_rv_predict_capsule(const caps_rv_pred *pc, const int8_t *u_i, const int8_t *w_i,
                             int8_t *out)
{
    if (pc->weight_bits == 4) {
        caps_rv_predict_capsule_s4(pc, u_i, w_i, out);
        return;
    }
    const int32_t k_in = pc->dim_in;
    const int64_t max_abs = (int64_t)k_in * 255 * 128;
    for (int32_t j = 0; j < pc->n_out; ++j) {
        const int32_t q = pc->num_scales == 1 ? 0 : j;
        const int32_t mult = pc->multipliers[q], shift = pc->shifts[q];
        const caps_bm_requant rq = caps_bm_requant_init(mult, shift, max_abs);
        for (int32_t d = 0; d < pc->dim_out; ++d) {
            const int32_t acc = row_dot(w_i, u_i, k_in, pc->zp);
            *out++ = (int8_t)caps_rv_sat8(caps_rv_requant(acc, &rq, mult, shift));
            w_i += k_in;
        }
    }
}

typedef struct {
    const caps_rv_pred *pc;
    const int8_t *input;
    const int8_t *weights;
    int8_t *u_hat;
} pred_job;

static void pred_phase(void *args, int32_t core, int32_t cores)
{
    const pred_job *job = (const pred_job *)args;
    const caps_rv_pred *pc = job->pc;
    const size_t md = (size_t)pc->n_out * (size_t)pc->dim_out;
    int32_t start, stop;
    caps_nn_core_range(pc->n_in, core, cores, &start, &stop);
    for (int32_t i = start; i < stop; ++i) {
        caps_rv_predict_capsule(pc, job->input + (size_t)i * (size_t)pc->dim_in,
                                caps_rv_weights_of(pc, job->weights, (size_t)i),
                                job->u_hat + (size_t)i * md);
    }
}

void caps_rv_predict_all(const caps_rv_pred *pc, const int8_t *input, const int8_t *weights,
                         int8_t *u_hat)
{
    pred_job job = {pc, input, weights, u_hat};
    caps_nn_parallel(pred_phase, &job);
}

caps_nn_status caps_predictions_s8(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                   const caps_predictions_params *params, const int8_t *input,
                                   const int8_t *weights, int8_t *u_hat)
{
    if (caps_predictions_s8_args_check(ctx, dims, params, input, weights, u_hat) !=
        CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_rv_pred pc;
    caps_rv_pred_init(&pc, dims, params);
    caps_rv_predict_all(&pc, input, weights, u_hat);
    return CAPS_NN_SUCCESS;
}
