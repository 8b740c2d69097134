/*
 * Portable self-attention capsule layer (Efficient-CapsNet), one sample:
 *   1. votes u_hat = W u (caps_predictions_s8), stored;
 *   2. vote sums per output capsule, shifted right by p (int16);
 *   3. per input capsule i: agreements a_ij = u_hat_ij . sum_j (int32),
 *      softmax over j from exp2 of the requantized differences to the
 *      largest (Q15), plus the Q15 bias, shifted right by q (int16), and
 *      its contribution to the weighted sums (int64, exact);
 *   4. s = requantized sums >> p (int16), v = Efficient-CapsNet squash of s.
 * docs/quantization.md specifies every step.
 */
#include <stddef.h>
#include <string.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"
#include "../common/caps_nn_scratch.h"

typedef caps_nn_attention_buffers scratch;

/* Couplings of input capsule i (int16, bias included) from its votes. */
static void couplings(const caps_self_attention_params *params, const scratch *sc,
                      const int8_t *row, const int32_t *bias, int16_t *out)
{
    const int32_t n_out = params->n_out;
    const int32_t dim = params->dim_out;
    int32_t mx = INT32_MIN;
    for (int32_t j = 0; j < n_out; ++j) {
        const int8_t *uh = row + (size_t)j * dim;
        const int16_t *sum = sc->sum + (size_t)j * dim;
        int32_t a = 0;
        for (int32_t d = 0; d < dim; ++d) {
            a += (int32_t)uh[d] * sum[d];
        }
        sc->agree[j] = a;
        mx = a > mx ? a : mx;
    }
    uint64_t total = 0;
    for (int32_t j = 0; j < n_out; ++j) {
        /* difference to the largest agreement: 0 .. 2^30 */
        const int32_t w = caps_nn_requantize(mx - sc->agree[j], params->exp_beta.multiplier,
                                             params->exp_beta.shift);
        sc->expv[j] = caps_nn_exp2_neg_q30(w);
        total += sc->expv[j];
    }
    const uint64_t recip = caps_nn_softmax_recip(total); /* total >= 2^30 */
    for (int32_t j = 0; j < n_out; ++j) {
        const int64_t c = (int64_t)caps_nn_softmax_q15(sc->expv[j], recip) + bias[j];
        out[j] = caps_nn_sat_s16(caps_nn_round_shift_s64(c, params->coupling_shift));
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
    const int32_t n_in = dims->n_in;
    const int32_t n_out = dims->n_out;
    const size_t md = (size_t)n_out * (size_t)dims->dim_out;
    const int32_t p = params->acc_shift;
    scratch sc;
    caps_nn_attention_carve(ctx->buf, dims, &sc);

    caps_nn_status st = caps_predictions_s8(&sc.pred, dims, &params->pred, input, weights,
                                            sc.uhat);
    if (st != CAPS_NN_SUCCESS) {
        return st;
    }
    memset(sc.acc, 0, md * sizeof(int64_t));
    for (int32_t i = 0; i < n_in; ++i) {
        const int8_t *row = sc.uhat + (size_t)i * md;
        for (size_t e = 0; e < md; ++e) {
            sc.acc[e] += row[e];
        }
    }
    for (size_t e = 0; e < md; ++e) {
        sc.sum[e] = (int16_t)caps_nn_round_shift_s64(sc.acc[e], p); /* |.| <= 2^15 */
    }
    memset(sc.acc, 0, md * sizeof(int64_t));
    for (int32_t i = 0; i < n_in; ++i) {
        const int8_t *row = sc.uhat + (size_t)i * md;
        int16_t *c = sc.coupling + (size_t)i * n_out;
        couplings(params, &sc, row, bias + (size_t)i * n_out, c);
        int64_t *acc = sc.acc;
        for (int32_t j = 0; j < n_out; ++j) {
            for (int32_t d = 0; d < dims->dim_out; ++d) {
                acc[d] += (int32_t)c[j] * row[d];
            }
            acc += dims->dim_out;
            row += dims->dim_out;
        }
    }
    for (size_t e = 0; e < md; ++e) {
        const int32_t a = caps_nn_sat_s32(caps_nn_round_shift_s64(sc.acc[e], p));
        sc.s[e] = caps_nn_sat_s16(caps_nn_requantize(a, params->s.multiplier, params->s.shift));
    }
    for (int32_t j = 0; j < n_out; ++j) {
        const size_t at = (size_t)j * (size_t)dims->dim_out;
        caps_nn_efficient_squash_wide(sc.s + at, dims->dim_out, params->squash_exp.multiplier,
                                      params->squash_exp.shift, output + at);
    }
    return CAPS_NN_SUCCESS;
}
