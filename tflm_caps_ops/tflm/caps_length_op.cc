/*
 * TFLMCaps_Length: v int8 [B, N, D] (any scale / zero point) ->
 * |v| int8 [B, N] (fixed scale 1/256, zero point -128)
 * (docs/custom_ops.md, docs/quantization.md).
 */
#include "tflm/caps_op_common.h"
#include "tflm/caps_ops.h"
#include "tflm_caps/caps_nn_functions.h"

namespace tflm_caps {
namespace {

constexpr const char* kOp = kLengthOpName;  // names the op in messages
const CapsUnaryCapsSpec kSpec = {kOp, "input 0 (v)", "output 0 (length)", 2,
                                 kLengthOutputScale, kLengthOutputZeroPoint};

using OpData = CapsUnaryCapsData<caps_length_params>;

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = CapsGetOpData<OpData>(kOp, node);
  if (data == nullptr) return kTfLiteError;
  CapsQuant in_q;
  CAPS_ENSURE_OK(CapsPrepareUnaryCaps(context, node, kSpec, &data->dims, &in_q));
  return CapsCheckParamsInit(
      kOp, caps_length_params_init(in_q.scale, in_q.zero_point, &data->params), in_q);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  return CapsEvalUnaryCaps<caps_length_params>(context, node, kOp, "caps_length_s8",
                                               caps_length_s8);
}

}  // namespace

TFLMRegistration* Register_TFLMCAPS_LENGTH() {
  static TFLMRegistration registration =
      CapsMakeRegistration(CapsInitOpData<OpData>, Prepare, Eval, nullptr);
  return &registration;
}

}  // namespace tflm_caps
