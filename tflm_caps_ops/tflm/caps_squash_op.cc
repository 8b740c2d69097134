/*
 * TFLMCaps_Squash: x int8 [B, N, D] (any scale / zero point) ->
 * v int8 [B, N, D] (fixed scale 1/128, zero point 0), v = squash(x) per
 * capsule (docs/custom_ops.md, docs/quantization.md).
 */
#include "tflm/caps_op_common.h"
#include "tflm/caps_ops.h"
#include "tflm_caps/caps_nn_functions.h"

namespace tflm_caps {
namespace {

const char kOp[] = "TFLMCaps_Squash";
const CapsUnaryCapsSpec kSpec = {kOp, "input 0 (x)", "output 0 (v)", 3, 1.0f / 128.0f, 0};

using OpData = CapsUnaryCapsData<caps_squash_params>;

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = CapsGetOpData<OpData>(kOp, node);
  if (data == nullptr) return kTfLiteError;
  CapsQuant in_q;
  CAPS_ENSURE_OK(CapsPrepareUnaryCaps(context, node, kSpec, &data->dims, &in_q));
  return CapsCheckParamsInit(
      kOp, caps_squash_params_init(in_q.scale, in_q.zero_point, &data->params), in_q);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  return CapsEvalUnaryCaps<caps_squash_params>(context, node, kOp, "caps_squash_s8",
                                               caps_squash_s8);
}

}  // namespace

TFLMRegistration* Register_TFLMCAPS_SQUASH() {
  static TFLMRegistration registration =
      CapsMakeRegistration(CapsInitOpData<OpData>, Prepare, Eval, nullptr);
  return &registration;
}

}  // namespace tflm_caps
