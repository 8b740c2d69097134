/*
 * TFLMCaps_SelfAttentionCaps: u int8 [B, N_in, D_in], W int8 constant
 * [N_in, N_out, D_out, D_in] (symmetric, 1 or N_out scales), coupling bias
 * int32 constant [N_in, N_out] (scale 2^-15, zero point 0) ->
 * v int8 [B, N_out, D_out] (fixed scale 1/128, zero point 0): votes, one
 * pass of self-attention routing, Efficient-CapsNet squash
 * (docs/custom_ops.md, docs/quantization.md).  The calibrated scales of the
 * votes and weighted sums come from the options.
 */
#include "tflm/caps_op_common.h"
#include "tflm/caps_ops.h"
#include "tflm_caps/caps_nn_functions.h"

namespace tflm_caps {
namespace {

constexpr const char* kOp = kSelfAttentionCapsOpName;  // names the op in messages

struct OpData {
  caps_self_attention_params params; /* points at the persistent arrays below */
  caps_class_caps_dims dims;
  int32_t batch;
  int32_t scratch_bytes;
  int scratch_index;
  int32_t* multipliers; /* num_weight_scales entries, persistent */
  int32_t* shifts;
};

struct Options {
  float u_hat_scale;
  float s_scale;
};

TfLiteStatus ReadOptions(const TfLiteNode* node, Options* opt) {
  caps_flexbuf_ref map;
  CAPS_ENSURE_OK(CapsOpenOptions(kOp, node, &map));
  CAPS_ENSURE_OK(CapsOptionScale(kOp, &map, kOptionUHatScale, &opt->u_hat_scale));
  CAPS_ENSURE_OK(CapsOptionScale(kOp, &map, kOptionSScale, &opt->s_scale));
  return kTfLiteOk;
}

// The coupling bias: a constant int32 [N_in, N_out] tensor in Q15.
TfLiteStatus CheckBias(const TfLiteTensor* bias, int32_t n_in, int32_t n_out) {
  const char* what = "input 2 (bias)";
  if (bias == nullptr) {
    CapsReportError("%s: %s is missing (could not allocate its tensor)", kOp, what);
    return kTfLiteError;
  }
  if (CapsTensorType(bias) != kTfLiteInt32) {
    CapsReportError("%s: %s must be int32, got %s", kOp, what, CapsTypeName(CapsTensorType(bias)));
    return kTfLiteError;
  }
  const int dims[2] = {(int)n_in, (int)n_out};
  CAPS_ENSURE_OK(CapsCheckDims(kOp, "input 2 (bias) [N_in, N_out]", bias, dims, 2));
  if (bias->allocation_type != kCapsConstantAllocation || bias->data.i32 == nullptr) {
    CapsReportError("%s: %s must be a constant tensor (stored in the model)", kOp, what);
    return kTfLiteError;
  }
  CAPS_ENSURE_OK(CapsCheckFixedQuant(kOp, what, bias, kAttentionBiasScale,
                                     kAttentionBiasZeroPoint));
  for (int32_t k = 0; k < n_in * n_out; ++k) {
    const int32_t b = bias->data.i32[k];
    if (b > CAPS_NN_MAX_ATTENTION_BIAS || b < -CAPS_NN_MAX_ATTENTION_BIAS) {
      CapsReportError("%s: %s value %d at %d is outside [-%d, %d] (|b| <= 512)", kOp, what,
                      (int)b, (int)k, CAPS_NN_MAX_ATTENTION_BIAS, CAPS_NN_MAX_ATTENTION_BIAS);
      return kTfLiteError;
    }
  }
  return kTfLiteOk;
}

TfLiteStatus PrepareTensors(TfLiteContext* context, OpData* data, const Options& opt,
                            const TfLiteTensor* u, const TfLiteTensor* w,
                            const TfLiteTensor* bias, const TfLiteTensor* v) {
  CAPS_ENSURE_OK(CapsCheckInt8Rank(kOp, "input 0 (u)", u, 3));
  CAPS_ENSURE_OK(CapsCheckInt8Rank(kOp, "input 1 (W)", w, 4));
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
  if (caps_self_attention_dims_check(&dims) != CAPS_NN_SUCCESS) {
    CapsReportError("%s: dims N_in=%d D_in=%d N_out=%d D_out=%d exceed the kernel limits "
                    "(D_out <= %d)", kOp, (int)dims.n_in, (int)dims.dim_in, (int)dims.n_out,
                    (int)dims.dim_out, CAPS_NN_MAX_ATTENTION_DIM_OUT);
    return kTfLiteError;
  }
  CAPS_ENSURE_OK(CheckBias(bias, dims.n_in, dims.n_out));
  CapsWeightedQuant wq;
  CAPS_ENSURE_OK(CapsPrepareWeightedQuant(context, kOp, u, w, v, dims.n_out, &wq));
  data->multipliers = wq.multipliers;
  data->shifts = wq.shifts;
  caps_self_attention_quant quant;
  quant.input_scale = wq.u.scale;
  quant.input_zp = wq.u.zero_point;
  quant.weight_scales = wq.w_scales;
  quant.num_weight_scales = wq.n_scales;
  quant.uhat_scale = opt.u_hat_scale;
  quant.s_scale = opt.s_scale;
  if (caps_self_attention_params_init(&dims, &quant, bias->data.i32, data->multipliers,
                                      data->shifts, &data->params) != CAPS_NN_SUCCESS) {
    CapsReportError("%s: cannot derive integer parameters for N_in=%d D_in=%d N_out=%d "
                    "D_out=%d (scales out of range)", kOp, (int)dims.n_in, (int)dims.dim_in,
                    (int)dims.n_out, (int)dims.dim_out);
    return kTfLiteError;
  }
  const int32_t bytes = caps_self_attention_s8_get_buffer_size(&dims);
  if (bytes < 0) {
    CapsReportError("%s: dims N_in=%d D_in=%d N_out=%d D_out=%d exceed the kernel limits", kOp,
                    (int)dims.n_in, (int)dims.dim_in, (int)dims.n_out, (int)dims.dim_out);
    return kTfLiteError;
  }
  data->scratch_index = -1;
  if (CapsRequestScratch(context, (size_t)bytes, &data->scratch_index) != kTfLiteOk) {
    CapsReportError("%s: could not reserve %d bytes of scratch in the arena", kOp, (int)bytes);
    return kTfLiteError;
  }
  data->dims = dims;
  data->batch = batch;
  data->scratch_bytes = bytes;
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = CapsGetOpData<OpData>(kOp, node);
  if (data == nullptr) return kTfLiteError;
  Options opt;
  CAPS_ENSURE_OK(ReadOptions(node, &opt));
  CAPS_ENSURE_OK(CapsCheckArity(kOp, node, 3, 1));
  TfLiteTensor* u = CapsTempInput(context, node, 0);
  TfLiteTensor* w = CapsTempInput(context, node, 1);
  TfLiteTensor* bias = CapsTempInput(context, node, 2);
  TfLiteTensor* v = CapsTempOutput(context, node, 0);
  const TfLiteStatus status = PrepareTensors(context, data, opt, u, w, bias, v);
  CapsFreeTemp(context, u);
  CapsFreeTemp(context, w);
  CapsFreeTemp(context, bias);
  CapsFreeTemp(context, v);
  return status;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* u = CapsEvalInput(context, node, 0);
  const TfLiteEvalTensor* w = CapsEvalInput(context, node, 1);
  const TfLiteEvalTensor* bias = CapsEvalInput(context, node, 2);
  TfLiteEvalTensor* v = CapsEvalOutput(context, node, 0);
  caps_nn_context scratch;
  scratch.buf = CapsGetScratch(context, data->scratch_index);
  scratch.size = data->scratch_bytes;
  const caps_class_caps_dims& d = data->dims;
  const int32_t in_stride = d.n_in * d.dim_in, out_stride = d.n_out * d.dim_out;
  for (int32_t b = 0; b < data->batch; ++b) {
    const caps_nn_status st = caps_self_attention_s8(
        &scratch, &d, &data->params, u->data.int8 + (size_t)b * in_stride, w->data.int8,
        bias->data.i32, v->data.int8 + (size_t)b * out_stride);
    if (st != CAPS_NN_SUCCESS) {
      CapsReportError("%s: kernel caps_self_attention_s8 failed with status %d (batch item %d)",
                      kOp, (int)st, (int)b);
      return kTfLiteError;
    }
  }
  return kTfLiteOk;
}

}  // namespace

TFLMRegistration* Register_TFLMCAPS_SELF_ATTENTION_CAPS() {
  static TFLMRegistration registration =
      CapsMakeRegistration(CapsInitOpData<OpData>, Prepare, Eval, nullptr);
  return &registration;
}

}  // namespace tflm_caps
