/*
 * The one CMSIS-NN function the Cortex-M backend can call when built with
 * CAPS_NN_USE_CMSIS_NN (the firmware links CMSIS-NN, e.g. TFLM with
 * OPTIMIZED_KERNEL_DIR=cmsis_nn).  Declared here, not included from
 * CMSIS-NN, so the backend has no build dependency on its headers.
 *
 * Signature of CMSIS-NN v6.0.0 and later (kernel_sum and rhs_offset
 * arguments).  kernel_sum is only read by the Helium (MVE) build, so the
 * route is refused there: build the M55 with the DSP path (the default).
 * The result status is ignored: the arguments are validated beforehand.
 */
#ifndef TFLM_CAPS_CM_CMSIS_NN_H
#define TFLM_CAPS_CM_CMSIS_NN_H

#include <stdint.h>

#if defined(__ARM_FEATURE_MVE) && __ARM_FEATURE_MVE
#error "CAPS_NN_USE_CMSIS_NN: the Helium build of arm_nn_vec_mat_mult_t_s8 needs kernel sums; not supported"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* arm_cmsis_nn_status is an int-sized enum (0 = ARM_CMSIS_NN_SUCCESS). */
int arm_nn_vec_mat_mult_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *kernel_sum,
                             const int32_t *bias, int8_t *dst, const int32_t lhs_offset,
                             const int32_t dst_offset, const int32_t dst_multiplier,
                             const int32_t dst_shift, const int32_t rhs_cols,
                             const int32_t rhs_rows, const int32_t activation_min,
                             const int32_t activation_max, const int32_t address_offset,
                             const int32_t rhs_offset);

#ifdef __cplusplus
}
#endif

#endif /* TFLM_CAPS_CM_CMSIS_NN_H */
