/*
 * Host-only canary operator "TFLMCaps_AbiProbe" exercising every part of
 * the wheel's binary interface the capsule operators rely on, independent
 * of the capsule kernels:
 *   - node layout: inputs/outputs arrays, custom options (FlexBuffer map
 *     with version, int "add", float "gain");
 *   - MicroContext slots: persistent buffer (init), temp TfLiteTensor
 *     allocate/deallocate and scratch request (prepare), scratch pointer and
 *     eval tensors (invoke);
 *   - TfLiteTensor fields: type, dims, bytes, params, affine quantization,
 *     allocation type of a constant.
 * out = sat8(x + c + add), computed through the scratch buffer; what
 * prepare observed is reported by TFLMCaps_AbiProbeReport() so the canary
 * test compares it with the model it built.
 */
#include <string.h>

#include "host/caps_host_resolver.h"
#include "tflm/caps_op_common.h"

namespace tflm_caps {
namespace {

const char kOp[] = "TFLMCaps_AbiProbe";

struct OpData {
  int32_t elements;
  int32_t add;
  int scratch_index;
  uint32_t magic; /* proves the persistent buffer survives until invoke */
};
constexpr uint32_t kMagic = 0x43415053u;

}  // namespace
}  // namespace tflm_caps

extern "C" {

// Observations of the last prepare/invoke (host canary only).
struct TFLMCapsAbiProbeReport {
  int32_t init_calls;
  int32_t prepare_calls;
  int32_t invoke_calls;
  int32_t x_type;
  int32_t x_rank;
  int32_t x_dims[4];
  int32_t x_bytes;
  float x_params_scale;
  int32_t x_params_zero_point;
  int32_t x_affine_count;
  float x_affine_scale;
  int32_t x_affine_zero_point;
  int32_t x_allocation_type;
  int32_t c_allocation_type;
  float out_params_scale;
  int32_t out_params_zero_point;
  int32_t options_size;
  int64_t add;
  double gain;
  int32_t scratch_ok;
  int32_t persistent_ok;
  int32_t eval_dims_match;
};

}  // extern "C"

namespace tflm_caps {
namespace {

TFLMCapsAbiProbeReport g_report;

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  ++g_report.init_calls;
  g_report.options_size = (int32_t)length;
  OpData* data = static_cast<OpData*>(CapsAllocatePersistent(context, sizeof(OpData)));
  if (data != nullptr) data->magic = kMagic;
  return data;
}

TfLiteStatus PrepareTensors(TfLiteContext* context, OpData* data, const TfLiteTensor* x,
                            const TfLiteTensor* c, const TfLiteTensor* out) {
  if (x == nullptr || c == nullptr || out == nullptr) {
    CapsReportError("%s: could not allocate temporary tensors", kOp);
    return kTfLiteError;
  }
  g_report.x_type = CapsTensorType(x);
  g_report.x_rank = x->dims->size;
  for (int i = 0; i < 4; ++i) g_report.x_dims[i] = i < x->dims->size ? x->dims->data[i] : 0;
  g_report.x_bytes = (int32_t)x->bytes;
  g_report.x_params_scale = x->params.scale;
  g_report.x_params_zero_point = x->params.zero_point;
  g_report.x_allocation_type = x->allocation_type;
  g_report.c_allocation_type = c->allocation_type;
  g_report.out_params_scale = out->params.scale;
  g_report.out_params_zero_point = out->params.zero_point;
  if (x->quantization.type == kTfLiteAffineQuantization && x->quantization.params != nullptr) {
    const TfLiteAffineQuantization* q =
        static_cast<const TfLiteAffineQuantization*>(x->quantization.params);
    g_report.x_affine_count = q->scale->size;
    g_report.x_affine_scale = q->scale->data[0];
    g_report.x_affine_zero_point = q->zero_point->data[0];
  }
  CAPS_ENSURE_OK(CapsCheckInt8Rank(kOp, "input 0 (x)", x, x->dims->size));
  CAPS_ENSURE_OK(CapsCheckInt8Rank(kOp, "input 1 (c)", c, x->dims->size));
  CAPS_ENSURE_OK(CapsCheckDims(kOp, "input 1 (c)", c, x->dims->data, x->dims->size));
  CAPS_ENSURE_OK(CapsCheckDims(kOp, "output 0", out, x->dims->data, x->dims->size));
  data->elements = CapsNumElements(x->dims);
  if (CapsRequestScratch(context, (size_t)data->elements, &data->scratch_index) != kTfLiteOk) {
    CapsReportError("%s: scratch request of %d bytes failed", kOp, (int)data->elements);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  ++g_report.prepare_calls;
  OpData* data = static_cast<OpData*>(node->user_data);
  if (data == nullptr) {
    CapsReportError("%s: no op data", kOp);
    return kTfLiteError;
  }
  caps_flexbuf_ref map;
  CAPS_ENSURE_OK(CapsOpenOptions(kOp, node, &map));
  int64_t add;
  CAPS_ENSURE_OK(CapsOptionInt(kOp, &map, "add", -255, 255, nullptr, &add));
  float gain;
  CAPS_ENSURE_OK(CapsOptionScale(kOp, &map, "gain", &gain));
  g_report.add = add;
  g_report.gain = gain;
  data->add = (int32_t)add;
  CAPS_ENSURE_OK(CapsCheckArity(kOp, node, 2, 1));
  TfLiteTensor* x = CapsTempInput(context, node, 0);
  TfLiteTensor* c = CapsTempInput(context, node, 1);
  TfLiteTensor* out = CapsTempOutput(context, node, 0);
  const TfLiteStatus status = PrepareTensors(context, data, x, c, out);
  CapsFreeTemp(context, x);
  CapsFreeTemp(context, c);
  CapsFreeTemp(context, out);
  return status;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  ++g_report.invoke_calls;
  const OpData* data = static_cast<const OpData*>(node->user_data);
  g_report.persistent_ok = data != nullptr && data->magic == kMagic;
  const TfLiteEvalTensor* x = CapsEvalInput(context, node, 0);
  const TfLiteEvalTensor* c = CapsEvalInput(context, node, 1);
  TfLiteEvalTensor* out = CapsEvalOutput(context, node, 0);
  g_report.eval_dims_match = x != nullptr && out != nullptr &&
                             CapsNumElements(x->dims) == data->elements &&
                             CapsNumElements(out->dims) == data->elements &&
                             CapsTensorType(x) == kTfLiteInt8;
  int8_t* scratch = static_cast<int8_t*>(CapsGetScratch(context, data->scratch_index));
  g_report.scratch_ok = scratch != nullptr;
  if (!g_report.persistent_ok || !g_report.eval_dims_match || scratch == nullptr) {
    CapsReportError("%s: invoke-time interface check failed", kOp);
    return kTfLiteError;
  }
  for (int32_t i = 0; i < data->elements; ++i) {
    int32_t v = (int32_t)x->data.int8[i] + (int32_t)c->data.int8[i] + data->add;
    scratch[i] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
  }
  memcpy(out->data.int8, scratch, (size_t)data->elements);
  return kTfLiteOk;
}

}  // namespace
}  // namespace tflm_caps

extern "C" {

void TFLMCaps_AbiProbeReset(void) { memset(&tflm_caps::g_report, 0, sizeof(tflm_caps::g_report)); }

void TFLMCaps_AbiProbeReport(TFLMCapsAbiProbeReport* out) {
  if (out != nullptr) *out = tflm_caps::g_report;
}

int32_t TFLMCaps_AbiProbeReportSize(void) { return (int32_t)sizeof(TFLMCapsAbiProbeReport); }

// Registers the canary op "TFLMCaps_AbiProbe" only.
bool TFLMCaps_RegisterAbiProbe(void* resolver) {
  static tflm_caps_host::TFLMRegistration registration = tflm_caps::CapsMakeRegistration(
      tflm_caps::Init, tflm_caps::Prepare, tflm_caps::Eval, nullptr);
  tflm_caps_host::HostOpResolver adapter(resolver);
  if (!adapter.LayoutLooksValid()) {
    TFLMCaps_HostRecordError("tflm-caps: unexpected op resolver layout (probe registerer)");
    return false;
  }
  return adapter.AddCustom(tflm_caps::kOp, &registration) == tflm_caps_host::kTfLiteOk;
}

}  // extern "C"
