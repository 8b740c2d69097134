/*
 * TFLMCaps_EfficientSquash: x int8 [B, N, D] (any scale / zero point) ->
 * v int8 [B, N, D] (fixed scale 1/128, zero point 0),
 * v = (1 - exp(-|x|)) x / |x| per capsule (Efficient-CapsNet;
 * docs/custom_ops.md, docs/quantization.md).  Prepare fills the kernel's
 * gain table in a persistent arena buffer, so Eval does no division.
 */
#include "tflm/caps_op_common.h"
#include "tflm/caps_ops.h"
#include "tflm_caps/caps_nn_functions.h"

namespace tflm_caps {
namespace {

constexpr const char* kOp = kEfficientSquashOpName;  // names the op in messages
const CapsUnaryCapsSpec kSpec = {kOp, "input 0 (x)", "output 0 (v)", 3,
                                 kSquashOutputScale, kSquashOutputZeroPoint};

struct OpData {
  CapsUnaryCapsData<caps_efficient_squash_params> op;
  caps_nn_context table;
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = CapsGetOpData<OpData>(kOp, node);
  if (data == nullptr) return kTfLiteError;
  CapsQuant in_q;
  CAPS_ENSURE_OK(CapsPrepareUnaryCaps(context, node, kSpec, &data->op.dims, &in_q));
  CAPS_ENSURE_OK(CapsCheckParamsInit(
      kOp, caps_efficient_squash_params_init(in_q.scale, in_q.zero_point, &data->op.params),
      in_q));
  const int32_t bytes =
      caps_efficient_squash_s8_get_buffer_size(&data->op.dims, &data->op.params);
  data->table.buf = bytes > 0 ? CapsAllocatePersistent(context, (size_t)bytes) : nullptr;
  data->table.size = bytes;
  if (data->table.buf == nullptr) {
    CapsReportError("%s: the arena has no room for the %d-byte squash gain table", kOp,
                    (int)bytes);
    return kTfLiteError;
  }
  const caps_nn_status st =
      caps_efficient_squash_s8_init_table(&data->table, &data->op.dims, &data->op.params);
  if (st != CAPS_NN_SUCCESS) {
    CapsReportError("%s: caps_efficient_squash_s8_init_table failed with status %d", kOp,
                    (int)st);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input = CapsEvalInput(context, node, 0);
  TfLiteEvalTensor* output = CapsEvalOutput(context, node, 0);
  const caps_nn_status st = caps_efficient_squash_s8(
      &data->table, &data->op.dims, &data->op.params, input->data.int8, output->data.int8);
  if (st != CAPS_NN_SUCCESS) {
    CapsReportError("%s: kernel caps_efficient_squash_s8 failed with status %d", kOp, (int)st);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

TFLMRegistration* Register_TFLMCAPS_EFFICIENT_SQUASH() {
  static TFLMRegistration registration =
      CapsMakeRegistration(CapsInitOpData<OpData>, Prepare, Eval, nullptr);
  return &registration;
}

}  // namespace tflm_caps
