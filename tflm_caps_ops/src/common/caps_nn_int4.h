/*
 * Packed 4-bit weights (private to the kernels): the layout of
 * caps_nn_functions.h in one place for every backend.
 *
 * Element e of W is the low nibble of byte e / 2 for even e, the high
 * nibble for odd e (TFLite INT4 / TFLM's UnpackDenseInt4IntoInt8).  With
 * n_out * dim_out * dim_in even (checked), input capsule i's block W[i]
 * starts at byte i * n_out * dim_out * dim_in / 2, low nibble.
 *
 * The optimized backends read nibbles biased by 8: w + 8 = (nibble ^ 8) in
 * [0, 15] needs no sign extension, and sum_k w_k x_k =
 * sum_k (w_k + 8) x_k - 8 sum_k x_k, whose last term is one number per
 * input capsule.
 */
#ifndef TFLM_CAPS_CAPS_NN_INT4_H
#define TFLM_CAPS_CAPS_NN_INT4_H

#include <stddef.h>
#include <stdint.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_types.h"

/* Signed value of element e of a packed block. */
CAPS_NN_INLINE int32_t caps_nn_s4_at(const int8_t *packed, size_t e)
{
    const uint32_t byte = (uint8_t)packed[e >> 1];
    const uint32_t nibble = (byte >> ((e & 1u) * 4u)) & 0xFu;
    return (int32_t)(nibble ^ 8u) - 8;
}

/* The packed block W[i] of input capsule i. */
CAPS_NN_INLINE const int8_t *caps_nn_s4_block(const int8_t *weights,
                                                     const caps_class_caps_dims *dims, int32_t i)
{
    return weights + (size_t)i * ((size_t)dims->n_out * (size_t)dims->dim_out *
                                  (size_t)dims->dim_in / 2u);
}

/* Every 4 bits of x flipped in its top bit: each nibble becomes w + 8. */
#define CAPS_NN_S4_BIAS_FLIP 0x88888888u

#endif /* TFLM_CAPS_CAPS_NN_INT4_H */
