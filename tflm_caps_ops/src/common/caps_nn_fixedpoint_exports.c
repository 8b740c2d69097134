/* Out-of-line copies of the inline primitives, for bindings and tests. */
#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

int32_t caps_nn_requantize_export(int32_t x, int32_t multiplier, int32_t shift)
{
    if (shift < -31) {
        shift = -31;
    } else if (shift > 31) {
        shift = 31;
    }
    return caps_nn_requantize(x, multiplier, shift);
}

uint64_t caps_nn_isqrt_u64_export(uint64_t n) { return caps_nn_isqrt_u64(n); }

uint32_t caps_nn_exp2_neg_q30_export(int32_t w_q16) { return caps_nn_exp2_neg_q30(w_q16); }

void caps_nn_exp_table_export(const caps_nn_requant *exp_beta, uint32_t *table)
{
    for (int32_t k = 0; k < 256; ++k) {
        table[k] = caps_nn_exp_neg_q30(k, exp_beta->multiplier, exp_beta->shift);
    }
}

uint32_t caps_nn_squash_gain_export(uint32_t sq, int32_t sq_multiplier, int32_t sq_exponent)
{
    return caps_nn_squash_gain(sq, sq_multiplier, sq_exponent);
}

int32_t caps_nn_squash_table_gain_export(uint32_t sq, int32_t sq_multiplier, int32_t sq_exponent)
{
    return caps_nn_squash_table_gain(sq, sq_multiplier, sq_exponent);
}
