/*
 * TFLM registration of the tflm-caps capsule operators.
 *
 * Firmware:
 *   static tflite::MicroMutableOpResolver<N> resolver;
 *   resolver.AddConv2D(); resolver.AddReshape(); ...   // the builtins
 *   tflm_caps::AddCapsOps(resolver);                     // our five ops
 *
 * Build the .cc files of this directory together with
 * tflm_caps_ops/src/common and one kernel backend (src/portable,
 * src/cortex_m or src/riscv) against your TFLM tree.
 */
#ifndef TFLM_CAPS_TFLM_CAPS_OPS_H
#define TFLM_CAPS_TFLM_CAPS_OPS_H

#include "tflm/caps_tflm_compat.h"
#include "tflm_caps/caps_nn_types.h"

namespace tflm_caps {

// The operator contract (docs/custom_ops.md): the same values as
// python/tflm_caps/ops_contract.py, which the converter writes into models
// (tests/test_ops_contract.py compares the two).

// CUSTOM op codes.
constexpr const char* kSquashOpName = "TFLMCaps_Squash";
constexpr const char* kClassCapsOpName = "TFLMCaps_ClassCaps";
constexpr const char* kLengthOpName = "TFLMCaps_Length";
constexpr const char* kEfficientSquashOpName = "TFLMCaps_EfficientSquash";
constexpr const char* kSelfAttentionCapsOpName = "TFLMCaps_SelfAttentionCaps";

// FlexBuffer custom options: the version the converter writes, the oldest
// this build still reads, and the keys.  Version 2 gave TFLMCaps_Squash its
// input 1, the gain table as a constant int32 tensor (version 1 models:
// the op fills the table in Prepare, in the arena).
constexpr int64_t kOptionsVersion = 2;
constexpr int64_t kMinOptionsVersion = 1;
constexpr int64_t kSquashTableVersion = 2;
constexpr const char* kOptionVersion = "version";
constexpr const char* kOptionNumRouting = "num_routing";
constexpr const char* kOptionStorePredictions = "store_predictions";
constexpr const char* kOptionUHatScale = "u_hat_scale";
constexpr const char* kOptionSScales = "s_scales";
constexpr const char* kOptionBScales = "b_scales";
constexpr const char* kOptionSScale = "s_scale";

// num_routing lies in [kMinRoutings, CAPS_NN_MAX_ROUTINGS].
constexpr int64_t kMinRoutings = 1;

// W is int8 or packed int4 (TFLite INT4, low nibble first); an int4 W needs
// N_out*D_out*D_in to be a multiple of kInt4WeightBlockMultiple.
constexpr int64_t kInt4WeightBlockMultiple = CAPS_NN_S4_BLOCK_MULTIPLE;

// Fixed int8 output quantization (docs/quantization.md): squash and
// ClassCaps write 2^CAPS_NN_SQUASH_OUT_SCALE_LOG2 = 1/128 with zero point 0,
// length 2^CAPS_NN_LENGTH_OUT_SCALE_LOG2 = 1/256 with zero point -128.
constexpr float kSquashOutputScale = 1.0f / (1 << -CAPS_NN_SQUASH_OUT_SCALE_LOG2);
constexpr int32_t kSquashOutputZeroPoint = 0;
constexpr float kLengthOutputScale = 1.0f / (1 << -CAPS_NN_LENGTH_OUT_SCALE_LOG2);
constexpr int32_t kLengthOutputZeroPoint = CAPS_NN_LENGTH_OUT_ZERO_POINT;
// SelfAttentionCaps' coupling bias: int32 in Q15, zero point 0.
constexpr float kAttentionBiasScale = 1.0f / (1 << -CAPS_NN_ATTENTION_BIAS_SCALE_LOG2);
constexpr int32_t kAttentionBiasZeroPoint = 0;

// Static registrations (TFLM convention for custom ops).
TFLMRegistration* Register_TFLMCAPS_SQUASH();
TFLMRegistration* Register_TFLMCAPS_CLASS_CAPS();
TFLMRegistration* Register_TFLMCAPS_LENGTH();
TFLMRegistration* Register_TFLMCAPS_EFFICIENT_SQUASH();
TFLMRegistration* Register_TFLMCAPS_SELF_ATTENTION_CAPS();

// Number of operators AddCapsOps registers (free resolver slots it needs).
constexpr int kNumCapsOps = 5;

// Adds the capsule operators to any resolver with TFLM's
// AddCustom(const char*, const TFLMRegistration*) (MicroMutableOpResolver,
// or the host adapter of the Python wheel's resolver).  The resolver needs
// kNumCapsOps free slots.
template <typename Resolver>
TfLiteStatus AddCapsOps(Resolver& resolver) {
  if (resolver.AddCustom(kSquashOpName, Register_TFLMCAPS_SQUASH()) != kTfLiteOk)
    return kTfLiteError;
  if (resolver.AddCustom(kClassCapsOpName, Register_TFLMCAPS_CLASS_CAPS()) != kTfLiteOk)
    return kTfLiteError;
  if (resolver.AddCustom(kLengthOpName, Register_TFLMCAPS_LENGTH()) != kTfLiteOk)
    return kTfLiteError;
  if (resolver.AddCustom(kEfficientSquashOpName, Register_TFLMCAPS_EFFICIENT_SQUASH()) !=
      kTfLiteOk)
    return kTfLiteError;
  if (resolver.AddCustom(kSelfAttentionCapsOpName, Register_TFLMCAPS_SELF_ATTENTION_CAPS()) !=
      kTfLiteOk)
    return kTfLiteError;
  return kTfLiteOk;
}

}  // namespace tflm_caps

#endif /* TFLM_CAPS_TFLM_CAPS_OPS_H */
