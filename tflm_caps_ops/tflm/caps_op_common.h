/*
 * Code shared by the capsule operators: Prepare checks of tensor types,
 * shapes, quantization and FlexBuffer options, each failing with a message
 * that names the operator, the tensor (or option) and what was expected;
 * op-data Init; and the whole Prepare/Eval of the single-input capsule ops
 * (Squash, Length) but for their kernel and params_init.
 */
#ifndef TFLM_CAPS_TFLM_CAPS_OP_COMMON_H
#define TFLM_CAPS_TFLM_CAPS_OP_COMMON_H

#include <string.h>

#include <type_traits>

#include "tflm/caps_flexbuffer.h"
#include "tflm/caps_ops.h"
#include "tflm/caps_tflm_compat.h"
#include "tflm_caps/caps_nn_functions.h"

namespace tflm_caps {

// Returns kTfLiteError from the calling function when expr is not kTfLiteOk
// (the message was already reported by the check).
#define CAPS_ENSURE_OK(expr)                           \
  do {                                                 \
    if ((expr) != kTfLiteOk) return kTfLiteError;      \
  } while (0)

// Per-tensor affine quantization of an int8 tensor.
struct CapsQuant {
  float scale;
  int32_t zero_point;
};

// Fails (with a message) unless the node has exactly the given numbers of
// inputs and outputs.
TfLiteStatus CapsCheckArity(const char* op, const TfLiteNode* node, int inputs, int outputs);

// Fails unless `tensor` (null when the allocation failed) is int8 of the
// given rank; `what` names the tensor, e.g. "input 0 (x)".
TfLiteStatus CapsCheckInt8Rank(const char* op, const char* what, const TfLiteTensor* tensor,
                               int rank);

// The same without the type: rank and positive dims only.
TfLiteStatus CapsCheckRank(const char* op, const char* what, const TfLiteTensor* tensor,
                           int rank);

// Reads per-tensor affine quantization (one positive finite scale, zero
// point in [-128, 127]).
TfLiteStatus CapsGetPerTensorQuant(const char* op, const char* what, const TfLiteTensor* tensor,
                                   CapsQuant* quant);

// Fails unless the tensor's quantization is exactly (scale, zero_point).
TfLiteStatus CapsCheckFixedQuant(const char* op, const char* what, const TfLiteTensor* tensor,
                                 float scale, int32_t zero_point);

// Fails unless dims[i] of the tensor equal `expected` (count entries).
TfLiteStatus CapsCheckDims(const char* op, const char* what, const TfLiteTensor* tensor,
                           const int* expected, int count);

// Product of all dims, or -1 on overflow beyond int32 or a negative dim.
int32_t CapsNumElements(const TfLiteIntArray* dims);

// Opens the node's custom options (a FlexBuffer map) and checks its version
// (kMinOptionsVersion to kOptionsVersion); `version` (may be null) receives it.
TfLiteStatus CapsOpenOptions(const char* op, const TfLiteNode* node, caps_flexbuf_ref* map,
                             int64_t* version = nullptr);

// Integer option in [min_value, max_value]; a missing key is an error
// unless `fallback` is given (non-null).
TfLiteStatus CapsOptionInt(const char* op, const caps_flexbuf_ref* map, const char* key,
                           int64_t min_value, int64_t max_value, const int64_t* fallback,
                           int64_t* out);

// Positive finite float option (a scale).
TfLiteStatus CapsOptionScale(const char* op, const caps_flexbuf_ref* map, const char* key,
                             float* out);

// Vector of exactly `count` positive finite floats (scales).
TfLiteStatus CapsOptionScales(const char* op, const caps_flexbuf_ref* map, const char* key,
                              int32_t count, float* out);

// The type code of a TfLiteTensor or TfLiteEvalTensor, copied out as the
// enum's underlying integer: TFLM stores codes (uint16, bfloat16, float8,
// ...) that the host header's enum does not list, and loading such a value
// as the enum is undefined.
template <typename Tensor>
int CapsTensorType(const Tensor* tensor) {
  typename std::underlying_type<decltype(tensor->type)>::type code;
  static_assert(sizeof(code) == sizeof(tensor->type), "enum and its underlying type");
  memcpy(&code, &tensor->type, sizeof(code));
  return static_cast<int>(code);
}

// Capsule weights W [N_in, N_out, D_out, D_in] (ClassCaps, SelfAttentionCaps):
// a constant int8 tensor, symmetric, 1 scale or one per output capsule along
// dimension 1; returns the scale array and count.
TfLiteStatus CapsCheckCapsuleWeights(const char* op, const TfLiteTensor* w, int32_t n_out,
                                     const float** scales, int32_t* count);

// What the capsule-weight layers (ClassCaps, SelfAttentionCaps) share in
// Prepare: u per tensor, v at the squash's fixed output quantization, W's
// scales (CapsCheckCapsuleWeights), and persistent room for one multiplier
// and shift per W scale.
struct CapsWeightedQuant {
  CapsQuant u;
  const float* w_scales;
  int32_t n_scales;
  int32_t* multipliers;
  int32_t* shifts;
};
TfLiteStatus CapsPrepareWeightedQuant(TfLiteContext* context, const char* op,
                                      const TfLiteTensor* u, const TfLiteTensor* w,
                                      const TfLiteTensor* v, int32_t n_out,
                                      CapsWeightedQuant* out);

// Human-readable name of a tensor type.
const char* CapsTypeName(int type);

// Init of every capsule operator: the op data lives in the persistent arena.
template <typename OpData>
void* CapsInitOpData(TfLiteContext* context, const char* buffer, size_t length) {
  return CapsAllocatePersistent(context, sizeof(OpData));
}

// The op data Init allocated, or null (reported) when the arena had no room.
void* CapsGetOpData(const char* op, const TfLiteNode* node, size_t bytes);
template <typename OpData>
OpData* CapsGetOpData(const char* op, const TfLiteNode* node) {
  return static_cast<OpData*>(CapsGetOpData(op, node, sizeof(OpData)));
}

// Fails with a message naming the input quantization when a kernel's
// *_params_init rejected it (`st` is its status).
TfLiteStatus CapsCheckParamsInit(const char* op, caps_nn_status st, const CapsQuant& in_q);

// Contract of the single-input capsule operators (Squash, Length): input 0
// int8 [B, N, D] with any per-tensor quantization, D <= CAPS_NN_MAX_CAPS_DIM;
// output 0 int8 with the first `output_rank` dims of the input and a fixed
// quantization.  From options version `table_version` on (0: never) the
// op has a second input, a constant table the op checks itself.
struct CapsUnaryCapsSpec {
  const char* op;
  const char* input;   // e.g. "input 0 (x)"
  const char* output;  // e.g. "output 0 (v)"
  int output_rank;
  float output_scale;
  int32_t output_zero_point;
  int64_t table_version;
};

// Op data of those operators: one kernel call covers all B * N capsules.
template <typename Params>
struct CapsUnaryCapsData {
  Params params;
  caps_caps_dims dims;
};

// Prepare of those operators up to the kernel parameters: checks options,
// arity and tensors against `spec`, sets `dims` and returns the input
// quantization, from which the op derives its params with *_params_init.
// `has_table` (may be null when spec.table_version is 0) tells whether the
// node has the table input.
TfLiteStatus CapsPrepareUnaryCaps(TfLiteContext* context, TfLiteNode* node,
                                  const CapsUnaryCapsSpec& spec, caps_caps_dims* dims,
                                  CapsQuant* in_q, bool* has_table = nullptr);

// Eval of those operators: `kernel` (named `kernel_name` in errors) over
// all capsules of the batch.
template <typename Params>
TfLiteStatus CapsEvalUnaryCaps(TfLiteContext* context, TfLiteNode* node, const char* op,
                               const char* kernel_name,
                               caps_nn_status (*kernel)(const caps_caps_dims*, const Params*,
                                                        const int8_t*, int8_t*)) {
  const auto* data = static_cast<const CapsUnaryCapsData<Params>*>(node->user_data);
  const TfLiteEvalTensor* input = CapsEvalInput(context, node, 0);
  TfLiteEvalTensor* output = CapsEvalOutput(context, node, 0);
  const caps_nn_status st = kernel(&data->dims, &data->params, input->data.int8,
                                   output->data.int8);
  if (st != CAPS_NN_SUCCESS) {
    CapsReportError("%s: kernel %s failed with status %d", op, kernel_name, (int)st);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace tflm_caps

#endif /* TFLM_CAPS_TFLM_CAPS_OP_COMMON_H */
