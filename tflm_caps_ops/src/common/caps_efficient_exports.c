/* Out-of-line copies of the Efficient-CapsNet primitives, for bindings and tests. */
#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

uint32_t caps_nn_efficient_squash_gain_export(uint32_t sq, int32_t exp_multiplier,
                                              int32_t exp_shift)
{
    return caps_nn_efficient_squash_gain(sq, exp_multiplier, exp_shift);
}

uint32_t caps_nn_inv_sqrt_q30_export(uint32_t n) { return n == 0 ? 0 : caps_nn_inv_sqrt_q30(n); }
