/* Umbrella header of the tflm-caps int8 capsule kernels. */
#ifndef TFLM_CAPS_CAPS_NN_H
#define TFLM_CAPS_CAPS_NN_H

#include "tflm_caps/caps_nn_types.h"
#include "tflm_caps/caps_nn_functions.h"
#include "tflm_caps/caps_nn_fixedpoint.h"

#endif /* TFLM_CAPS_CAPS_NN_H */
