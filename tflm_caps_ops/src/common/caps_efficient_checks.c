/*
 * Argument checks and scratch size of the self-attention capsule layer,
 * shared by every kernel backend (limits: docs/quantization.md).
 */
#include <stddef.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

#define A8(x) (((x) + 7) & ~(int64_t)7)

/* Largest scratch size reported (as caps_nn_checks.c). */
#define MAX_BUFFER ((int64_t)INT32_MAX - 65536)

static int requant_ok(const caps_nn_requant *q)
{
    return q->shift >= -31 && q->shift <= 30 && q->multiplier >= 0;
}

static int64_t attention_bytes(const caps_class_caps_dims *dims);

/* The class-capsule limits, dim_out <= CAPS_NN_MAX_ATTENTION_DIM_OUT, and
 * the layer's own scratch (votes and couplings beside the prediction
 * scratch) fits: dims the class-capsule check accepts can exceed it. */
caps_nn_status caps_self_attention_dims_check(const caps_class_caps_dims *dims)
{
    if (caps_class_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        dims->dim_out > CAPS_NN_MAX_ATTENTION_DIM_OUT || attention_bytes(dims) > MAX_BUFFER) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_efficient_squash_params_check(const caps_efficient_squash_params *params)
{
    if (params == NULL || params->input_zp < -128 || params->input_zp > 127 ||
        !requant_ok(&params->exp)) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_self_attention_params_check(const caps_class_caps_dims *dims,
                                                const caps_self_attention_params *params)
{
    if (caps_self_attention_dims_check(dims) != CAPS_NN_SUCCESS || params == NULL ||
        caps_predictions_params_check(dims, &params->pred) != CAPS_NN_SUCCESS ||
        params->n_in != dims->n_in || params->n_out != dims->n_out ||
        params->dim_out != dims->dim_out ||
        params->acc_shift != caps_nn_routing_acc_shift(dims->n_in) ||
        params->coupling_shift < 0 || params->coupling_shift > 10 || /* bias <= 2^24 */
        !requant_ok(&params->exp_beta) || !requant_ok(&params->s) ||
        !requant_ok(&params->squash_exp)) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}

/* Layout (each part 8-aligned, after aligning the caller's pointer):
 * votes int8 [n_in n_out d], vote sums int16 [n_out d], accumulators int64
 * [n_out d], agreements int32 [n_out], exponentials uint32 [n_out],
 * couplings int16 [n_in n_out], s int16 [n_out d], predictions scratch. */
static int64_t attention_bytes(const caps_class_caps_dims *dims)
{
    /* dims within the class-capsule limits: every term fits int64 */
    const int64_t md = (int64_t)dims->n_out * dims->dim_out;
    return 8 + A8((int64_t)dims->n_in * md) + A8(2 * md) + 8 * md +
           2 * A8((int64_t)4 * dims->n_out) + A8((int64_t)2 * dims->n_in * dims->n_out) +
           A8(2 * md) + caps_predictions_s8_get_buffer_size(dims);
}

int32_t caps_self_attention_s8_get_buffer_size(const caps_class_caps_dims *dims)
{
    if (caps_self_attention_dims_check(dims) != CAPS_NN_SUCCESS) {
        return -1;
    }
    return (int32_t)attention_bytes(dims);
}

caps_nn_status caps_self_attention_s8_args_check(const caps_nn_context *ctx,
                                                 const caps_class_caps_dims *dims,
                                                 const caps_self_attention_params *params,
                                                 const int8_t *input, const int8_t *weights,
                                                 const int32_t *bias, const int8_t *output)
{
    /* need < 0 is a size that does not exist: never enough */
    const int32_t need = caps_self_attention_s8_get_buffer_size(dims);
    if (caps_self_attention_params_check(dims, params) != CAPS_NN_SUCCESS || input == NULL ||
        weights == NULL || bias == NULL || output == NULL || ctx == NULL || ctx->buf == NULL ||
        need < 0 || ctx->size < need) {
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}
