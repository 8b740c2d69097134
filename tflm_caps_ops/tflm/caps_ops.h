/*
 * TFLM registration of the tflm-caps capsule operators.
 *
 * Firmware:
 *   static tflite::MicroMutableOpResolver<N> resolver;
 *   resolver.AddConv2D(); resolver.AddReshape(); ...   // the builtins
 *   tflm_caps::AddCapsOps(resolver);                     // our three ops
 *
 * The names must match the CUSTOM op codes the converter writes
 * (docs/custom_ops.md).  Build the .cc files of this directory together
 * with tflm_caps_ops/src/common and one kernel backend (src/portable,
 * src/cortex_m or src/riscv) against your TFLM tree.
 */
#ifndef TFLM_CAPS_TFLM_CAPS_OPS_H
#define TFLM_CAPS_TFLM_CAPS_OPS_H

#include "tflm/caps_tflm_compat.h"

namespace tflm_caps {

constexpr const char* kSquashOpName = "TFLMCaps_Squash";
constexpr const char* kClassCapsOpName = "TFLMCaps_ClassCaps";
constexpr const char* kLengthOpName = "TFLMCaps_Length";

// Static registrations (TFLM convention for custom ops).
TFLMRegistration* Register_TFLMCAPS_SQUASH();
TFLMRegistration* Register_TFLMCAPS_CLASS_CAPS();
TFLMRegistration* Register_TFLMCAPS_LENGTH();

// Adds the three capsule operators to any resolver with TFLM's
// AddCustom(const char*, const TFLMRegistration*) (MicroMutableOpResolver,
// or the host adapter of the Python wheel's resolver).  The resolver needs
// three free slots.
template <typename Resolver>
TfLiteStatus AddCapsOps(Resolver& resolver) {
  if (resolver.AddCustom(kSquashOpName, Register_TFLMCAPS_SQUASH()) != kTfLiteOk)
    return kTfLiteError;
  if (resolver.AddCustom(kClassCapsOpName, Register_TFLMCAPS_CLASS_CAPS()) != kTfLiteOk)
    return kTfLiteError;
  if (resolver.AddCustom(kLengthOpName, Register_TFLMCAPS_LENGTH()) != kTfLiteOk)
    return kTfLiteError;
  return kTfLiteOk;
}

}  // namespace tflm_caps

#endif /* TFLM_CAPS_TFLM_CAPS_OPS_H */
