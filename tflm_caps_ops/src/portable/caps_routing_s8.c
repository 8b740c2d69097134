/*
 * Portable dynamic routing and the whole class-capsule layer (int8 or
 * packed 4-bit weights).  caps_class_caps_s8 and caps_class_caps_s4 share
 * one body (class_caps below): a backend that replaces this file defines
 * both, passing the weight width to its prediction source.
 *
 * One pass over the predictions per iteration: for iteration r >= 1 the
 * logit update of iteration r-1 (which needs v_{r-1}) and the softmax of
 * iteration r are done for input capsule i right before its contribution
 * to s is accumulated, so recomputing predictions costs one
 * matrix-vector product per input capsule per iteration.
 */
#include <stddef.h>
#include <string.h>

#include "../common/caps_nn_int4.h"
#include "../common/caps_nn_scratch.h"
#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

/* Where the predictions of input capsule i come from. */
typedef struct {
    const int8_t *stored;                  /* [n_in, n_out*dim_out] or NULL */
    const caps_nn_context *pred_ctx;       /* recompute: predictions scratch */
    const caps_predictions_params *pred;   /* recompute: params */
    const int8_t *input;                   /* recompute: u [n_in, dim_in] */
    const int8_t *weights;                 /* recompute: W */
    int8_t *row;                           /* recompute: [n_out*dim_out] */
    int32_t weight_bits;                   /* recompute: 8, or 4 (packed W) */
} uhat_source;

static const int8_t *uhat_row(const uhat_source *src, const caps_class_caps_dims *dims, int32_t i)
{
    const size_t md = (size_t)dims->n_out * (size_t)dims->dim_out;
    if (src->stored != NULL) {
        return src->stored + (size_t)i * md;
    }
    const caps_class_caps_dims one = {1, dims->dim_in, dims->n_out, dims->dim_out};
    const int8_t *u_i = src->input + (size_t)i * (size_t)dims->dim_in;
    if (src->weight_bits == 4) {
        (void)caps_predictions_s4(src->pred_ctx, &one, src->pred, u_i,
                                  caps_nn_s4_block(src->weights, dims, i), src->row);
    } else {
        (void)caps_predictions_s8(src->pred_ctx, &one, src->pred, u_i,
                                  src->weights + (size_t)i * md * (size_t)dims->dim_in, src->row);
    }
    return src->row;
}

/* Logit update u = r-1 for input capsule i (v_prev = v_{r-1}). */
static void update_logits(const caps_routing_params *params, int32_t u, const int8_t *row,
                          const int8_t *v_prev, int32_t n_out, int32_t dim, int8_t *b)
{
    const caps_nn_requant agree = params->agree[u];
    const caps_nn_requant carry = params->carry[u];
    for (int32_t j = 0; j < n_out; ++j) {
        const int8_t *uh = row + (size_t)j * dim;
        const int8_t *v = v_prev + (size_t)j * dim;
        int32_t a = 0;
        for (int32_t d = 0; d < dim; ++d) {
            a += (int32_t)uh[d] * v[d];
        }
        if (u > 0) {
            const int32_t old = caps_nn_requantize(b[j], carry.multiplier, carry.shift);
            a = caps_nn_sat_s32((int64_t)a + old);
        }
        b[j] = caps_nn_sat_s8(caps_nn_requantize(a, agree.multiplier, agree.shift));
    }
}

/* Q15 couplings of input capsule i into acc (r >= 1). */
static void accumulate_coupled(const caps_nn_routing_buffers *sc, const int8_t *b,
                               const int8_t *row, int32_t n_out, int32_t dim)
{
    int32_t mx = b[0];
    for (int32_t j = 1; j < n_out; ++j) {
        mx = b[j] > mx ? b[j] : mx;
    }
    uint64_t sum = 0;
    for (int32_t j = 0; j < n_out; ++j) {
        sc->expv[j] = sc->table[mx - b[j]];
        sum += sc->expv[j];
    }
    const uint64_t recip = caps_nn_softmax_recip(sum); /* sum >= 2^30 */
    int64_t *acc = sc->acc;
    for (int32_t j = 0; j < n_out; ++j) {
        const int32_t c = caps_nn_softmax_q15(sc->expv[j], recip);
        for (int32_t d = 0; d < dim; ++d) {
            acc[d] += (int64_t)c * row[d];
        }
        acc += dim;
        row += dim;
    }
}

static void routing_core(const caps_class_caps_dims *dims,
                                   const caps_routing_params *params, const uhat_source *src,
                                   const caps_nn_routing_buffers *sc, int8_t *output)
{
    const int32_t n_in = dims->n_in;
    const int32_t n_out = dims->n_out;
    const int32_t dim = dims->dim_out;
    const size_t md = (size_t)n_out * (size_t)dim;
    const int32_t p = caps_nn_routing_acc_shift(n_in);

    for (int32_t r = 0; r < params->routings; ++r) {
        if (r > 0) {
            const caps_nn_requant beta = params->exp_beta[r - 1];
            for (int32_t k = 0; k < 256; ++k) {
                sc->table[k] = caps_nn_exp_neg_q30(k, beta.multiplier, beta.shift);
            }
        }
        memset(sc->acc, 0, md * sizeof(int64_t));
        for (int32_t i = 0; i < n_in; ++i) {
            const int8_t *row = uhat_row(src, dims, i);
            if (r == 0) {
                /* uniform coupling 1/n_out, folded into params->s[0] */
                for (size_t e = 0; e < md; ++e) {
                    sc->acc[e] += row[e];
                }
            } else {
                int8_t *b = sc->logits + (size_t)i * n_out;
                update_logits(params, r - 1, row, output, n_out, dim, b);
                accumulate_coupled(sc, b, row, n_out, dim);
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
    const uhat_source src = {u_hat, NULL, NULL, NULL, NULL, NULL, 8};
    routing_core(dims, params, &src, &sc, output);
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
    caps_nn_context pred_ctx;
    pred_ctx.buf = sc.pred;
    pred_ctx.size = caps_predictions_s8_get_buffer_size(dims);

    uhat_source src = {NULL, &pred_ctx, &params->pred, input, weights, sc.uhat, weight_bits};
    if (store_predictions) {
        /* cannot fail: the entry check covered these params and dims */
        if (weight_bits == 4) {
            (void)caps_predictions_s4(&pred_ctx, dims, &params->pred, input, weights, sc.uhat);
        } else {
            (void)caps_predictions_s8(&pred_ctx, dims, &params->pred, input, weights, sc.uhat);
        }
        src.stored = sc.uhat;
    }
    routing_core(dims, &params->routing, &src, &sc, output);
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
