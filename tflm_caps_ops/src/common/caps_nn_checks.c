/*
 * Argument checks and scratch sizes shared by every kernel backend, so
 * that all backends accept exactly the same inputs (limits and their
 * reasons: docs/quantization.md).
 */
#include <stddef.h>

#include "caps_nn_scratch.h"
#include "tflm_caps/caps_nn_functions.h"

/* Largest scratch size we report (leaves room for the caller's rounding). */
#define CAPS_NN_MAX_BUFFER ((int64_t)INT32_MAX - 65536)

/* Squared-scale exponents caps_frexp_q31 can return (normal doubles);
 * beyond them caps_nn_squash_gain's shift arithmetic would overflow. */
#define SQ_EXPONENT_MIN (-1021)
#define SQ_EXPONENT_MAX 1025

static int64_t class_caps_bytes(const caps_class_caps_dims *dims, int32_t store_predictions);

static int shift_ok(const caps_nn_requant *q)
{
    return q->shift >= -31 && q->shift <= 30 && q->multiplier >= 0;
}

caps_nn_status caps_caps_dims_check(const caps_caps_dims *dims)
{
    if (dims == NULL || dims->n_caps < 0 || dims->dim < 1 || dims->dim > CAPS_NN_MAX_CAPS_DIM) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_class_caps_dims_check(const caps_class_caps_dims *dims)
{
    if (dims == NULL || dims->n_in < 1 || dims->n_in > CAPS_NN_MAX_N_IN || dims->dim_in < 1 ||
        dims->dim_in > CAPS_NN_MAX_DIM_IN || dims->n_out < 1 || dims->n_out > CAPS_NN_MAX_N_OUT ||
        dims->dim_out < 1 || dims->dim_out > CAPS_NN_MAX_CAPS_DIM) {
        return CAPS_NN_ARG_ERROR;
    }
    /* every size of the layer fits int32: the weights (indexed with int32
     * strides by callers) and the largest scratch, the one with stored
     * predictions (the others are smaller) */
    const int64_t md = (int64_t)dims->n_out * dims->dim_out;
    if ((int64_t)dims->n_in * md * dims->dim_in > INT32_MAX ||
        /* the two large terms of the scratch: bounding them first keeps the
         * layout's size_t sums from wrapping on a 32-bit target */
        (int64_t)dims->n_in * dims->n_out + (int64_t)dims->n_in * md > CAPS_NN_MAX_BUFFER ||
        class_caps_bytes(dims, 1) > CAPS_NN_MAX_BUFFER) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_squash_params_check(const caps_squash_params *params)
{
    if (params == NULL || params->input_zp < -128 || params->input_zp > 127 ||
        params->sq_multiplier < 0 || params->sq_exponent < SQ_EXPONENT_MIN ||
        params->sq_exponent > SQ_EXPONENT_MAX) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_length_params_check(const caps_length_params *params)
{
    if (params == NULL || params->input_zp < -128 || params->input_zp > 127 ||
        !shift_ok(&params->out)) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_predictions_params_check(const caps_class_caps_dims *dims,
                                             const caps_predictions_params *params)
{
    if (caps_class_caps_dims_check(dims) != CAPS_NN_SUCCESS || params == NULL ||
        params->input_zp < -128 || params->input_zp > 127 || params->multipliers == NULL ||
        params->shifts == NULL ||
        (params->num_scales != 1 && params->num_scales != dims->n_out)) {
        return CAPS_NN_ARG_ERROR;
    }
    for (int32_t j = 0; j < params->num_scales; ++j) {
        const caps_nn_requant q = {params->multipliers[j], params->shifts[j]};
        if (!shift_ok(&q)) {
            return CAPS_NN_ARG_ERROR;
        }
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_routing_params_check(const caps_class_caps_dims *dims,
                                         const caps_routing_params *params)
{
    if (caps_class_caps_dims_check(dims) != CAPS_NN_SUCCESS || params == NULL ||
        params->routings < 1 || params->routings > CAPS_NN_MAX_ROUTINGS ||
        params->n_in != dims->n_in || params->n_out != dims->n_out ||
        params->dim_out != dims->dim_out) {
        return CAPS_NN_ARG_ERROR;
    }
    for (int32_t r = 0; r < params->routings; ++r) {
        if (!shift_ok(&params->s[r]) || params->squash[r].input_zp != 0 ||
            caps_squash_params_check(&params->squash[r]) != CAPS_NN_SUCCESS) {
            return CAPS_NN_ARG_ERROR;
        }
    }
    for (int32_t u = 0; u + 1 < params->routings; ++u) {
        if (!shift_ok(&params->agree[u]) || !shift_ok(&params->carry[u]) ||
            !shift_ok(&params->exp_beta[u])) {
            return CAPS_NN_ARG_ERROR;
        }
    }
    return CAPS_NN_SUCCESS;
}

/* Scratch of caps_class_caps_s8, from the one layout (caps_nn_scratch.h).
 * Only called once the terms are known to be small enough for size_t on a
 * 32-bit target (caps_class_caps_dims_check). */
static int64_t class_caps_bytes(const caps_class_caps_dims *dims, int32_t store_predictions)
{
    caps_nn_routing_scratch layout;
    caps_nn_routing_scratch_layout(dims, store_predictions != 0, &layout);
    return 8 + (int64_t)layout.end;
}

/* Sizes of valid dims fit (caps_class_caps_dims_check); the bound stays
 * as a second line of defence. */
static int32_t checked(int64_t bytes)
{
    return bytes > CAPS_NN_MAX_BUFFER ? -1 : (int32_t)bytes;
}

/* The buffer sizes: 8 bytes to align ctx->buf, then the layout of
 * caps_nn_scratch.h. */
int32_t caps_predictions_s8_get_buffer_size(const caps_class_caps_dims *dims)
{
    if (caps_class_caps_dims_check(dims) != CAPS_NN_SUCCESS) {
        return -1;
    }
    return checked((int64_t)caps_nn_predictions_scratch_bytes(dims));
}

int32_t caps_dynamic_routing_s8_get_buffer_size(const caps_class_caps_dims *dims)
{
    if (caps_class_caps_dims_check(dims) != CAPS_NN_SUCCESS) {
        return -1;
    }
    caps_nn_routing_scratch layout;
    caps_nn_routing_scratch_layout(dims, 1, &layout);
    return checked(8 + (int64_t)layout.routing_end);
}

int32_t caps_class_caps_s8_get_buffer_size(const caps_class_caps_dims *dims,
                                           int32_t store_predictions)
{
    if (caps_class_caps_dims_check(dims) != CAPS_NN_SUCCESS) {
        return -1;
    }
    return checked(class_caps_bytes(dims, store_predictions));
}

/* need < 0 is a size that does not exist: never enough. */
static int context_ok(const caps_nn_context *ctx, int32_t need)
{
    return need >= 0 && ctx != NULL && ctx->buf != NULL && ctx->size >= need;
}

caps_nn_status caps_length_s8_args_check(const caps_caps_dims *dims,
                                        const caps_length_params *params, const int8_t *input,
                                        const int8_t *output)
{
    if (caps_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        caps_length_params_check(params) != CAPS_NN_SUCCESS ||
        (dims->n_caps > 0 && (input == NULL || output == NULL))) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_predictions_s8_args_check(const caps_nn_context *ctx,
                                              const caps_class_caps_dims *dims,
                                              const caps_predictions_params *params,
                                              const int8_t *input, const int8_t *weights,
                                              const int8_t *u_hat)
{
    if (caps_predictions_params_check(dims, params) != CAPS_NN_SUCCESS || input == NULL ||
        weights == NULL || u_hat == NULL ||
        !context_ok(ctx, caps_predictions_s8_get_buffer_size(dims))) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_dynamic_routing_s8_args_check(const caps_nn_context *ctx,
                                                  const caps_class_caps_dims *dims,
                                                  const caps_routing_params *params,
                                                  const int8_t *u_hat, const int8_t *output)
{
    if (caps_routing_params_check(dims, params) != CAPS_NN_SUCCESS || u_hat == NULL ||
        output == NULL || !context_ok(ctx, caps_dynamic_routing_s8_get_buffer_size(dims))) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_class_caps_s8_args_check(const caps_nn_context *ctx,
                                             const caps_class_caps_dims *dims,
                                             const caps_class_caps_params *params,
                                             int32_t store_predictions, const int8_t *input,
                                             const int8_t *weights, const int8_t *output)
{
    if (params == NULL || caps_predictions_params_check(dims, &params->pred) != CAPS_NN_SUCCESS ||
        caps_routing_params_check(dims, &params->routing) != CAPS_NN_SUCCESS || input == NULL ||
        weights == NULL || output == NULL ||
        !context_ok(ctx, caps_class_caps_s8_get_buffer_size(dims, store_predictions))) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

/* Packed 4-bit weights: every input capsule's block W[i] starts on a byte. */
static int s4_dims_ok(const caps_class_caps_dims *dims)
{
    return caps_class_caps_dims_check(dims) == CAPS_NN_SUCCESS &&
           ((int64_t)dims->n_out * dims->dim_out * dims->dim_in) % CAPS_NN_S4_BLOCK_MULTIPLE == 0;
}

int32_t caps_predictions_s4_get_buffer_size(const caps_class_caps_dims *dims)
{
    return s4_dims_ok(dims) ? caps_predictions_s8_get_buffer_size(dims) : -1;
}

int32_t caps_class_caps_s4_get_buffer_size(const caps_class_caps_dims *dims,
                                           int32_t store_predictions)
{
    return s4_dims_ok(dims) ? caps_class_caps_s8_get_buffer_size(dims, store_predictions) : -1;
}

caps_nn_status caps_predictions_s4_args_check(const caps_nn_context *ctx,
                                              const caps_class_caps_dims *dims,
                                              const caps_predictions_params *params,
                                              const int8_t *input, const int8_t *weights,
                                              const int8_t *u_hat)
{
    if (!s4_dims_ok(dims)) {
        return CAPS_NN_ARG_ERROR;
    }
    return caps_predictions_s8_args_check(ctx, dims, params, input, weights, u_hat);
}

caps_nn_status caps_class_caps_s4_args_check(const caps_nn_context *ctx,
                                             const caps_class_caps_dims *dims,
                                             const caps_class_caps_params *params,
                                             int32_t store_predictions, const int8_t *input,
                                             const int8_t *weights, const int8_t *output)
{
    if (!s4_dims_ok(dims)) {
        return CAPS_NN_ARG_ERROR;
    }
    return caps_class_caps_s8_args_check(ctx, dims, params, store_predictions, input, weights,
                                         output);
}
