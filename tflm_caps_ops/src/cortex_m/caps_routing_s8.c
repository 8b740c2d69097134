/*
 * Cortex-M dynamic routing and class-capsule layer (CMSIS-NN style),
 * bit-exact with src/portable/caps_routing_s8.c.
 *
 * Iteration 0 sums the predictions over input capsules
 * (caps_cm_routing_sums.c).  Iterations r >= 1 go over blocks of up to 255
 * input capsules in three phases:
 *  A  (per output capsule j, over the block's capsules i): agreement
 *     u_hat(j|i) . v_j and the logit update (caps_cm_routing_agree.c);
 *  B  (per input capsule i): integer softmax of its logits into Q15
 *     couplings of the block buffer (caps_cm_routing_softmax.c);
 *  C  (per output capsule j, per group of dimensions): s_j += c_ij u_hat(j|i)
 *     over the block into int32 registers, then into the int64
 *     accumulators once per block (caps_cm_routing_sums.c).
 * At most 255 capsules per block keep the int32 partial sums from
 * overflowing (|c u| < 2^22).  The block buffer is the tail of the routing
 * scratch, free during iterations >= 1 (caps_nn_scratch.h).  Stack: about
 * 2.3 KB (unpacked v, carry table, exponentials).
 */
#include "caps_cm_routing.h"

/* Where the predictions of input capsule i come from. */
typedef struct {
    const int8_t *stored; /* [n_in, md] or NULL: recompute into sc->rowbuf */
    const caps_cm_pred *pc;
    const int8_t *input;
    const int8_t *weights;
} cm_source;

/* The prediction rows of input capsules [i, i + n): stored, or recomputed
 * into the block buffer. */
static const int8_t *source_rows(const cm_source *src, const caps_nn_routing_buffers *sc,
                                 size_t md, int32_t i, int32_t n)
{
    if (src->stored != NULL) {
        return src->stored + (size_t)i * md;
    }
    caps_cm_predict_layer(src->pc, src->input + (size_t)i * (size_t)src->pc->dim_in,
                          caps_cm_weights_of(src->pc, src->weights, i), sc->rowbuf, n);
    return sc->rowbuf;
}

/* ---------------------------------------------------------------------
 * The routing loop.
 * ------------------------------------------------------------------- */
static void routing_core(const caps_class_caps_dims *dims,
                                   const caps_routing_params *params, const cm_source *src,
                                   const caps_nn_routing_buffers *sc, int8_t *output)
{
    const int32_t n_in = dims->n_in;
    const int32_t n_out = dims->n_out;
    const int32_t dim = dims->dim_out;
    const size_t md = (size_t)n_out * (size_t)dim;
    const int32_t p = caps_nn_routing_acc_shift(n_in);

    for (int32_t r = 0; r < params->routings; ++r) {
        if (r == 0) {
            for (size_t e = 0; e < md; ++e) {
                sc->acc[e] = 0;
            }
            /* stored: all rows at once */
            const int32_t block = src->stored != NULL ? n_in : sc->block;
            for (int32_t i0 = 0; i0 < n_in; i0 += block) {
                const int32_t n = n_in - i0 < block ? n_in - i0 : block;
                caps_cm_routing_uniform_sums(source_rows(src, sc, md, i0, n), n, md, sc->acc);
            }
        } else {
            caps_bm_exp_table(&params->exp_beta[r - 1], 0, 256, sc->table);
            for (size_t e = 0; e < md; ++e) {
                sc->acc[e] = 0;
            }
            caps_cm_agreement ag;
            caps_cm_agreement_init(&ag, params, r - 1, output, n_out, dim);
            for (int32_t i0 = 0; i0 < n_in; i0 += sc->block) {
                const int32_t n = n_in - i0 < sc->block ? n_in - i0 : sc->block;
                const int8_t *rows = source_rows(src, sc, md, i0, n);
                caps_cm_routing_agree_block(&ag, sc, rows, md, output, i0, n, n_out, dim);
                caps_cm_routing_coupled_sums(sc, rows, md, n, n_out, dim);
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
    const cm_source src = {u_hat, NULL, NULL, NULL};
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
    caps_cm_pred pc;
    caps_cm_pred_init(&pc, dims, &params->pred, sc.pred);
    pc.weight_bits = weight_bits;
    cm_source src = {NULL, &pc, input, weights};
    if (store_predictions) {
        caps_cm_predict_layer(&pc, input, weights, sc.uhat, dims->n_in);
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
