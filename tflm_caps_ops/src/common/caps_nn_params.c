/*
 * Float scales -> integer kernel parameters (docs/quantization.md).
 *
 * Runs once at prepare time.  Uses double arithmetic in exactly the order
 * of tflm_caps.reference.quant so both derive identical integers; frexp
 * and ldexp are done on the IEEE-754 bit pattern, so firmware needs no libm.
 */
#include <string.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

/* log2(e) rounded to the nearest double (0x1.71547652b82fep+0). */
#define CAPS_NN_LOG2E 1.4426950408889634

static uint64_t double_bits(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof(bits));
    return bits;
}

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

static int zp_ok(int32_t zp) { return zp >= -128 && zp <= 127; }

caps_nn_status caps_frexp_q31(double real, int32_t *multiplier, int32_t *exponent)
{
    const uint64_t bits = double_bits(real);
    const uint32_t exp_field = (uint32_t)((bits >> 52) & 0x7FF);
    *multiplier = 0;
    *exponent = 0;
    if (exp_field == 0x7FF || ((bits >> 63) != 0 && (bits << 1) != 0)) {
        return CAPS_NN_ARG_ERROR; /* inf, NaN or negative */
    }
    if (exp_field == 0) {
        return CAPS_NN_SUCCESS; /* zero or subnormal */
    }
    /* real = full * 2^(exp_field - 1075) = q * 2^e, q = full / 2^53 in [0.5, 1) */
    const uint64_t full = (bits & (((uint64_t)1 << 52) - 1)) | ((uint64_t)1 << 52);
    uint64_t q31 = (full + ((uint64_t)1 << 21)) >> 22; /* round(q * 2^31), ties up */
    int32_t e = (int32_t)exp_field - 1022;
    if (q31 == ((uint64_t)1 << 31)) {
        q31 >>= 1;
        ++e;
    }
    *multiplier = (int32_t)q31;
    *exponent = e;
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_quantize_multiplier(double real, int32_t *multiplier, int32_t *shift)
{
    int32_t m;
    int32_t e;
    const caps_nn_status status = caps_frexp_q31(real, &m, &e);
    *multiplier = 0;
    *shift = 0;
    if (status != CAPS_NN_SUCCESS || m == 0 || e < -31) {
        return status;
    }
    if (e > 30) {
        *multiplier = INT32_MAX;
        *shift = 30;
        return CAPS_NN_SUCCESS;
    }
    *multiplier = m;
    *shift = e;
    return CAPS_NN_SUCCESS;
}

static caps_nn_status requant_init(double real, caps_nn_requant *out)
{
    return caps_quantize_multiplier(real, &out->multiplier, &out->shift);
}

caps_nn_status caps_squash_params_init(float input_scale, int32_t input_zp,
                                       caps_squash_params *out)
{
    if (out == NULL) {
        return CAPS_NN_ARG_ERROR;
    }
    memset(out, 0, sizeof(*out));
    if (!scale_ok(input_scale) || !zp_ok(input_zp)) {
        return CAPS_NN_ARG_ERROR;
    }
    const double s = (double)input_scale;
    out->input_zp = input_zp;
    return caps_frexp_q31(s * s, &out->sq_multiplier, &out->sq_exponent);
}

caps_nn_status caps_length_params_init(float input_scale, int32_t input_zp,
                                       caps_length_params *out)
{
    if (out == NULL) {
        return CAPS_NN_ARG_ERROR;
    }
    memset(out, 0, sizeof(*out));
    if (!scale_ok(input_scale) || !zp_ok(input_zp)) {
        return CAPS_NN_ARG_ERROR;
    }
    out->input_zp = input_zp;
    return requant_init((double)input_scale * pow2(-8), &out->out);
}

caps_nn_status caps_predictions_params_init(float input_scale, int32_t input_zp,
                                            const float *weight_scales,
                                            int32_t num_weight_scales, int32_t n_out,
                                            float uhat_scale, int32_t *multipliers,
                                            int32_t *shifts, caps_predictions_params *out)
{
    if (out == NULL) {
        return CAPS_NN_ARG_ERROR;
    }
    memset(out, 0, sizeof(*out));
    if (weight_scales == NULL || multipliers == NULL || shifts == NULL ||
        !scale_ok(input_scale) || !zp_ok(input_zp) || !scale_ok(uhat_scale) ||
        n_out < 1 || (num_weight_scales != 1 && num_weight_scales != n_out)) {
        return CAPS_NN_ARG_ERROR;
    }
    for (int32_t j = 0; j < num_weight_scales; ++j) {
        if (!scale_ok(weight_scales[j])) {
            return CAPS_NN_ARG_ERROR;
        }
        const double real = ((double)input_scale * (double)weight_scales[j]) / (double)uhat_scale;
        if (caps_quantize_multiplier(real, &multipliers[j], &shifts[j]) != CAPS_NN_SUCCESS) {
            return CAPS_NN_ARG_ERROR;
        }
    }
    out->input_zp = input_zp;
    out->num_scales = num_weight_scales;
    out->multipliers = multipliers;
    out->shifts = shifts;
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_routing_params_init(const caps_class_caps_dims *dims, int32_t routings,
                                        float uhat_scale, const float *s_scales,
                                        const float *b_scales, caps_routing_params *out)
{
    if (out == NULL) {
        return CAPS_NN_ARG_ERROR;
    }
    memset(out, 0, sizeof(*out));
    if (dims == NULL || caps_class_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        routings < 1 || routings > CAPS_NN_MAX_ROUTINGS || !scale_ok(uhat_scale) ||
        s_scales == NULL || (routings > 1 && b_scales == NULL)) {
        return CAPS_NN_ARG_ERROR;
    }
    for (int32_t r = 0; r < routings; ++r) {
        if (!scale_ok(s_scales[r])) {
            return CAPS_NN_ARG_ERROR;
        }
    }
    for (int32_t u = 0; u + 1 < routings; ++u) {
        if (!scale_ok(b_scales[u])) {
            return CAPS_NN_ARG_ERROR;
        }
    }
    const double uh = (double)uhat_scale;
    const int32_t p = caps_nn_routing_acc_shift(dims->n_in);
    caps_nn_status st = CAPS_NN_SUCCESS;
    out->n_in = dims->n_in;
    out->n_out = dims->n_out;
    out->dim_out = dims->dim_out;
    out->routings = routings;
    for (int32_t r = 0; r < routings; ++r) {
        const double s = (double)s_scales[r];
        const double real = r == 0 ? uh / (s * (double)dims->n_out) : (uh * pow2(p - 15)) / s;
        if (requant_init(real, &out->s[r]) != CAPS_NN_SUCCESS ||
            caps_squash_params_init(s_scales[r], 0, &out->squash[r]) != CAPS_NN_SUCCESS) {
            st = CAPS_NN_ARG_ERROR;
        }
    }
    for (int32_t u = 0; u + 1 < routings; ++u) {
        const double b = (double)b_scales[u];
        if (requant_init((uh * pow2(-7)) / b, &out->agree[u]) != CAPS_NN_SUCCESS ||
            requant_init((b * CAPS_NN_LOG2E) * pow2(16), &out->exp_beta[u]) != CAPS_NN_SUCCESS) {
            st = CAPS_NN_ARG_ERROR;
        }
        if (u >= 1 &&
            requant_init((double)b_scales[u - 1] / (uh * pow2(-7)), &out->carry[u]) !=
                CAPS_NN_SUCCESS) {
            st = CAPS_NN_ARG_ERROR;
        }
    }
    if (st != CAPS_NN_SUCCESS) {
        memset(out, 0, sizeof(*out));
    }
    return st;
}

caps_nn_status caps_class_caps_params_init(const caps_class_caps_dims *dims,
                                           const caps_class_caps_quant *quant,
                                           int32_t *multipliers, int32_t *shifts,
                                           caps_class_caps_params *out)
{
    if (out == NULL) {
        return CAPS_NN_ARG_ERROR;
    }
    memset(out, 0, sizeof(*out));
    if (dims == NULL || quant == NULL || caps_class_caps_dims_check(dims) != CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_nn_status st = caps_predictions_params_init(
        quant->input_scale, quant->input_zp, quant->weight_scales, quant->num_weight_scales,
        dims->n_out, quant->uhat_scale, multipliers, shifts, &out->pred);
    if (st == CAPS_NN_SUCCESS) {
        st = caps_routing_params_init(dims, quant->routings, quant->uhat_scale, quant->s_scales,
                                      quant->b_scales, &out->routing);
    }
    if (st != CAPS_NN_SUCCESS) {
        memset(out, 0, sizeof(*out));
    }
    return st;
}
