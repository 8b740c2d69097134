/*
 * TFLMCaps_ClassCaps: u int8 [B, N_in, D_in], W int8 or packed int4
 * constant [N_in, N_out, D_out, D_in] (symmetric, 1 or N_out scales) ->
 * v int8 [B, N_out, D_out] (fixed scale 1/128, zero point 0):
 * predictions u_hat = W u, then dynamic routing-by-agreement
 * (docs/custom_ops.md, docs/quantization.md).  The calibrated scales of the
 * routing intermediates come from the options.
 */
#include "tflm/caps_op_common.h"
#include "tflm/caps_ops.h"
#include "tflm_caps/caps_nn_functions.h"

namespace tflm_caps {
namespace {

constexpr const char* kOp = kClassCapsOpName;  // names the op in messages

struct OpData {
  caps_class_caps_params params; /* points at the persistent arrays below */
  caps_class_caps_dims dims;
  int32_t batch;
  int32_t store_predictions;
  int32_t weight_bits; /* 8, or 4: W packed two per byte (caps_class_caps_s4) */
  int32_t scratch_bytes;
  int scratch_index;
  int32_t* multipliers; /* num_weight_scales entries, persistent */
  int32_t* shifts;
};

struct Options {
  int32_t routings;
  int32_t store_predictions;
  float u_hat_scale;
  float s_scales[CAPS_NN_MAX_ROUTINGS];
  float b_scales[CAPS_NN_MAX_ROUTINGS];
};

TfLiteStatus ReadOptions(const TfLiteNode* node, Options* opt) {
  caps_flexbuf_ref map;
  CAPS_ENSURE_OK(CapsOpenOptions(kOp, node, &map));
  int64_t value;
  CAPS_ENSURE_OK(CapsOptionInt(kOp, &map, kOptionNumRouting, kMinRoutings,
                               CAPS_NN_MAX_ROUTINGS, nullptr, &value));
  opt->routings = (int32_t)value;
  // Storing predictions only trades RAM for speed (bit-identical results),
  // so a model without the key gets the faster mode.
  const int64_t store_default = 1;
  CAPS_ENSURE_OK(CapsOptionInt(kOp, &map, kOptionStorePredictions, 0, 1, &store_default, &value));
  opt->store_predictions = (int32_t)value;
  CAPS_ENSURE_OK(CapsOptionScale(kOp, &map, kOptionUHatScale, &opt->u_hat_scale));
  CAPS_ENSURE_OK(CapsOptionScales(kOp, &map, kOptionSScales, opt->routings, opt->s_scales));
  if (opt->routings > 1) {
    CAPS_ENSURE_OK(CapsOptionScales(kOp, &map, kOptionBScales, opt->routings - 1,
                                    opt->b_scales));
  } else {
    // One iteration never updates the logits: b_scales may be absent or empty.
    caps_flexbuf_ref vec;
    if (caps_flexbuf_map_get(&map, kOptionBScales, &vec) == CAPS_FLEXBUF_OK)
      CAPS_ENSURE_OK(CapsOptionScales(kOp, &map, kOptionBScales, 0, opt->b_scales));
  }
  return kTfLiteOk;
}

TfLiteStatus PrepareTensors(TfLiteContext* context, OpData* data, const Options& opt,
                            const TfLiteTensor* u, const TfLiteTensor* w,
                            const TfLiteTensor* v) {
  CAPS_ENSURE_OK(CapsCheckInt8Rank(kOp, "input 0 (u)", u, 3));
  CAPS_ENSURE_OK(CapsCheckRank(kOp, "input 1 (W)", w, 4));
  const int w_type = CapsTensorType(w);
  if (w_type != kTfLiteInt8 && w_type != kTfLiteInt4) {
    CapsReportError("%s: input 1 (W) must be int8 or int4 (packed two per byte), got %s", kOp,
                    CapsTypeName(w_type));
    return kTfLiteError;
  }
  const int32_t weight_bits = w_type == kTfLiteInt4 ? 4 : 8;
  CAPS_ENSURE_OK(CapsCheckInt8Rank(kOp, "output 0 (v)", v, 3));
  const int32_t batch = u->dims->data[0];
  caps_class_caps_dims dims;
  dims.n_in = u->dims->data[1];
  dims.dim_in = u->dims->data[2];
  dims.n_out = w->dims->data[1];
  dims.dim_out = w->dims->data[2];
  const int w_dims[4] = {(int)dims.n_in, (int)dims.n_out, (int)dims.dim_out, (int)dims.dim_in};
  CAPS_ENSURE_OK(CapsCheckDims(kOp, "input 1 (W) [N_in, N_out, D_out, D_in]", w, w_dims, 4));
  const int v_dims[3] = {(int)batch, (int)dims.n_out, (int)dims.dim_out};
  CAPS_ENSURE_OK(CapsCheckDims(kOp, "output 0 (v) [B, N_out, D_out]", v, v_dims, 3));
  CapsWeightedQuant wq;
  CAPS_ENSURE_OK(CapsPrepareWeightedQuant(context, kOp, u, w, v, dims.n_out, &wq));
  data->multipliers = wq.multipliers;
  data->shifts = wq.shifts;
  caps_class_caps_quant quant;
  quant.input_scale = wq.u.scale;
  quant.input_zp = wq.u.zero_point;
  quant.weight_scales = wq.w_scales;
  quant.num_weight_scales = wq.n_scales;
  quant.uhat_scale = opt.u_hat_scale;
  quant.routings = opt.routings;
  quant.s_scales = opt.s_scales;
  quant.b_scales = opt.routings > 1 ? opt.b_scales : nullptr;
  if (caps_class_caps_params_init(&dims, &quant, data->multipliers, data->shifts,
                                  &data->params) != CAPS_NN_SUCCESS) {
    CapsReportError("%s: cannot derive integer parameters for N_in=%d D_in=%d N_out=%d D_out=%d "
                    "routings=%d (dims beyond the kernel limits or scales out of range)", kOp,
                    (int)dims.n_in, (int)dims.dim_in, (int)dims.n_out, (int)dims.dim_out,
                    (int)opt.routings);
    return kTfLiteError;
  }
  if (weight_bits == 4 &&
      ((int64_t)dims.n_out * dims.dim_out * dims.dim_in) % kInt4WeightBlockMultiple != 0) {
    CapsReportError("%s: int4 input 1 (W) needs N_out*D_out*D_in even (each input capsule's "
                    "weights start on a byte), got %d*%d*%d; store W as int8", kOp,
                    (int)dims.n_out, (int)dims.dim_out, (int)dims.dim_in);
    return kTfLiteError;
  }
  const int32_t bytes =
      weight_bits == 4 ? caps_class_caps_s4_get_buffer_size(&dims, opt.store_predictions)
                       : caps_class_caps_s8_get_buffer_size(&dims, opt.store_predictions);
  if (bytes < 0) {
    CapsReportError("%s: dims N_in=%d D_in=%d N_out=%d D_out=%d exceed the kernel limits", kOp,
                    (int)dims.n_in, (int)dims.dim_in, (int)dims.n_out, (int)dims.dim_out);
    return kTfLiteError;
  }
  data->scratch_index = -1;
  if (bytes > 0 && CapsRequestScratch(context, (size_t)bytes, &data->scratch_index) != kTfLiteOk) {
    CapsReportError("%s: could not reserve %d bytes of scratch in the arena", kOp, (int)bytes);
    return kTfLiteError;
  }
  data->dims = dims;
  data->batch = batch;
  data->store_predictions = opt.store_predictions;
  data->weight_bits = weight_bits;
  data->scratch_bytes = bytes;
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = CapsGetOpData<OpData>(kOp, node);
  if (data == nullptr) return kTfLiteError;
  Options opt;
  CAPS_ENSURE_OK(ReadOptions(node, &opt));
  CAPS_ENSURE_OK(CapsCheckArity(kOp, node, 2, 1));
  TfLiteTensor* u = CapsTempInput(context, node, 0);
  TfLiteTensor* w = CapsTempInput(context, node, 1);
  TfLiteTensor* v = CapsTempOutput(context, node, 0);
  const TfLiteStatus status = PrepareTensors(context, data, opt, u, w, v);
  CapsFreeTemp(context, u);
  CapsFreeTemp(context, w);
  CapsFreeTemp(context, v);
  return status;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* u = CapsEvalInput(context, node, 0);
  const TfLiteEvalTensor* w = CapsEvalInput(context, node, 1);
  TfLiteEvalTensor* v = CapsEvalOutput(context, node, 0);
  caps_nn_context scratch;
  scratch.buf = data->scratch_index >= 0 ? CapsGetScratch(context, data->scratch_index) : nullptr;
  scratch.size = data->scratch_bytes;
  const caps_class_caps_dims& d = data->dims;
  const int32_t in_stride = d.n_in * d.dim_in, out_stride = d.n_out * d.dim_out;
  const bool s4 = data->weight_bits == 4;
  for (int32_t b = 0; b < data->batch; ++b) {
    const int8_t* u_b = u->data.int8 + (size_t)b * in_stride;
    int8_t* v_b = v->data.int8 + (size_t)b * out_stride;
    const caps_nn_status st =
        s4 ? caps_class_caps_s4(&scratch, &d, &data->params, data->store_predictions, u_b,
                                w->data.int8, v_b)
           : caps_class_caps_s8(&scratch, &d, &data->params, data->store_predictions, u_b,
                                w->data.int8, v_b);
    if (st != CAPS_NN_SUCCESS) {
      CapsReportError("%s: kernel %s failed with status %d (batch item %d)", kOp,
                      s4 ? "caps_class_caps_s4" : "caps_class_caps_s8", (int)st, (int)b);
      return kTfLiteError;
    }
  }
  return kTfLiteOk;
}

}  // namespace

TFLMRegistration* Register_TFLMCAPS_CLASS_CAPS() {
  static TFLMRegistration registration =
      CapsMakeRegistration(CapsInitOpData<OpData>, Prepare, Eval, nullptr);
  return &registration;
}

}  // namespace tflm_caps
