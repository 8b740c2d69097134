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

const char kOp[] = "TFLMCaps_Length";

struct OpData {
  caps_length_params params;
  caps_caps_dims dims; /* all capsules of the batch at once */
};

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  return CapsAllocatePersistent(context, sizeof(OpData));
}

TfLiteStatus PrepareTensors(OpData* data, const TfLiteTensor* input, const TfLiteTensor* output) {
  CAPS_ENSURE_OK(CapsCheckInt8Rank(kOp, "input 0 (v)", input, 3));
  CAPS_ENSURE_OK(CapsCheckInt8Rank(kOp, "output 0 (length)", output, 2));
  CAPS_ENSURE_OK(CapsCheckDims(kOp, "output 0 (length)", output, input->dims->data, 2));
  CapsQuant in_q;
  CAPS_ENSURE_OK(CapsGetPerTensorQuant(kOp, "input 0 (v)", input, &in_q));
  CAPS_ENSURE_OK(CapsCheckFixedQuant(kOp, "output 0 (length)", output, 1.0f / 256.0f,
                                     CAPS_NN_LENGTH_OUT_ZERO_POINT));
  const int32_t batch = input->dims->data[0], n = input->dims->data[1], d = input->dims->data[2];
  if (d > CAPS_NN_MAX_CAPS_DIM || (int64_t)batch * n > INT32_MAX) {
    CapsReportError("%s: input 0 (v) capsule dim %d must be <= %d", kOp, (int)d,
                    CAPS_NN_MAX_CAPS_DIM);
    return kTfLiteError;
  }
  if (caps_length_params_init(in_q.scale, in_q.zero_point, &data->params) != CAPS_NN_SUCCESS) {
    CapsReportError("%s: cannot derive integer parameters from input scale %g, zero point %d",
                    kOp, (double)in_q.scale, (int)in_q.zero_point);
    return kTfLiteError;
  }
  data->dims.n_caps = batch * n;
  data->dims.dim = d;
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  if (data == nullptr) {
    CapsReportError("%s: could not allocate %d bytes of op data in the arena", kOp,
                    (int)sizeof(OpData));
    return kTfLiteError;
  }
  caps_flexbuf_ref options;
  CAPS_ENSURE_OK(CapsOpenOptions(kOp, node, &options));
  CAPS_ENSURE_OK(CapsCheckArity(kOp, node, 1, 1));
  TfLiteTensor* input = CapsTempInput(context, node, 0);
  TfLiteTensor* output = CapsTempOutput(context, node, 0);
  const TfLiteStatus status = PrepareTensors(data, input, output);
  CapsFreeTemp(context, input);
  CapsFreeTemp(context, output);
  return status;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input = CapsEvalInput(context, node, 0);
  TfLiteEvalTensor* output = CapsEvalOutput(context, node, 0);
  const caps_nn_status st =
      caps_length_s8(&data->dims, &data->params, input->data.int8, output->data.int8);
  if (st != CAPS_NN_SUCCESS) {
    CapsReportError("%s: kernel caps_length_s8 failed with status %d", kOp, (int)st);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

TFLMRegistration* Register_TFLMCAPS_LENGTH() {
  static TFLMRegistration registration = CapsMakeRegistration(Init, Prepare, Eval, nullptr);
  return &registration;
}

}  // namespace tflm_caps
