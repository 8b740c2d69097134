/* The exact fast primitives of caps_nn_backend_math.h, once per image. */
#include "tflm_caps/caps_nn_backend_math_impl.h"
