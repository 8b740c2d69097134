/*
 * Float scales -> integer parameters of the Efficient-CapsNet ops
 * (docs/quantization.md).  Same rules as caps_nn_params.c: double
 * arithmetic in exactly the order of tflm_caps.reference.quant, powers of
 * two from the bit pattern, no libm.
 */
#include <string.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

/* log2(e) rounded to the nearest double (0x1.71547652b82fep+0). */
#define LOG2E 1.4426950408889634

/* 2^k as a double, exact for k in [-1022, 1023]. */
static double pow2(int32_t k)
{
    const uint64_t bits = (uint64_t)(k + 1023) << 52;
    double x;
    memcpy(&x, &bits, sizeof(x));
    return x;
}

static int scale_ok(float s)
{
    /* rejects NaN (comparison false), inf, zero, negative */
    return s > 0.0f && s <= 3.4028234663852886e38f;
}

caps_nn_status caps_efficient_squash_params_init(float input_scale, int32_t input_zp,
                                                 caps_efficient_squash_params *out)
{
    if (out == NULL) {
        return CAPS_NN_ARG_ERROR;
    }
    memset(out, 0, sizeof(*out));
    if (!scale_ok(input_scale) || input_zp < -128 || input_zp > 127) {
        return CAPS_NN_ARG_ERROR;
    }
    out->input_zp = input_zp;
    return caps_quantize_multiplier((double)input_scale * LOG2E, &out->exp.multiplier,
                                    &out->exp.shift);
}

/* Smallest q >= 0 with 2^15 + max|bias| <= 2^(15+q); -1 for a bias beyond
 * CAPS_NN_MAX_ATTENTION_BIAS. */
static int32_t coupling_shift(const int32_t *bias, int32_t count)
{
    int64_t top = (int64_t)1 << 15;
    int64_t largest = 0;
    for (int32_t k = 0; k < count; ++k) {
        const int64_t b = bias[k] < 0 ? -(int64_t)bias[k] : (int64_t)bias[k];
        largest = b > largest ? b : largest;
    }
    if (largest > CAPS_NN_MAX_ATTENTION_BIAS) {
        return -1;
    }
    top += largest;
    int32_t q = 0;
    while (((int64_t)1 << (15 + q)) < top) {
        ++q;
    }
    return q;
}

caps_nn_status caps_self_attention_params_init(const caps_class_caps_dims *dims,
                                               const caps_self_attention_quant *quant,
                                               const int32_t *bias, int32_t *multipliers,
                                               int32_t *shifts, caps_self_attention_params *out)
{
    if (out == NULL) {
        return CAPS_NN_ARG_ERROR;
    }
    memset(out, 0, sizeof(*out));
    if (quant == NULL || bias == NULL || caps_self_attention_dims_check(dims) != CAPS_NN_SUCCESS ||
        !scale_ok(quant->uhat_scale) || !scale_ok(quant->s_scale)) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_nn_status st = caps_predictions_params_init(
        quant->input_scale, quant->input_zp, quant->weight_scales, quant->num_weight_scales,
        dims->n_out, quant->uhat_scale, multipliers, shifts, &out->pred);
    const int32_t q = coupling_shift(bias, dims->n_in * dims->n_out);
    if (st != CAPS_NN_SUCCESS || q < 0) {
        memset(out, 0, sizeof(*out));
        return CAPS_NN_ARG_ERROR;
    }
    const int32_t p = caps_nn_routing_acc_shift(dims->n_in);
    const double uh = (double)quant->uhat_scale;
    const double inv_sqrt = (double)caps_nn_inv_sqrt_q30((uint32_t)dims->dim_out) * pow2(p - 30);
    out->n_in = dims->n_in;
    out->n_out = dims->n_out;
    out->dim_out = dims->dim_out;
    out->acc_shift = p;
    out->coupling_shift = q;
    if (caps_quantize_multiplier(((uh * uh) * inv_sqrt) * (LOG2E * pow2(16)),
                                 &out->exp_beta.multiplier, &out->exp_beta.shift) !=
            CAPS_NN_SUCCESS ||
        caps_quantize_multiplier((uh * pow2(q + p - 15)) / (double)quant->s_scale,
                                 &out->s.multiplier, &out->s.shift) != CAPS_NN_SUCCESS ||
        caps_quantize_multiplier(((double)quant->s_scale * LOG2E) * pow2(8),
                                 &out->squash_exp.multiplier,
                                 &out->squash_exp.shift) != CAPS_NN_SUCCESS) {
        memset(out, 0, sizeof(*out));
        return CAPS_NN_ARG_ERROR;
    }
    return CAPS_NN_SUCCESS;
}
