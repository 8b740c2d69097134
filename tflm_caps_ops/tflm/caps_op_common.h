/*
 * Shared checks of the capsule operators' Prepare: tensor types, shapes,
 * quantization and FlexBuffer options, each failing with a message that
 * names the operator, the tensor (or option) and what was expected.
 */
#ifndef TFLM_CAPS_TFLM_CAPS_OP_COMMON_H
#define TFLM_CAPS_TFLM_CAPS_OP_COMMON_H

#include "tflm/caps_flexbuffer.h"
#include "tflm/caps_tflm_compat.h"

namespace tflm_caps {

// Returns kTfLiteError from the calling function when expr is not kTfLiteOk
// (the message was already reported by the check).
#define CAPS_ENSURE_OK(expr)                           \
  do {                                                 \
    if ((expr) != kTfLiteOk) return kTfLiteError;      \
  } while (0)

// Options version understood by this build (docs/custom_ops.md).
constexpr int64_t kCapsOptionsVersion = 1;

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

// Opens the node's custom options (a FlexBuffer map) and checks `version`.
TfLiteStatus CapsOpenOptions(const char* op, const TfLiteNode* node, caps_flexbuf_ref* map);

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

// Human-readable name of a tensor type.
const char* CapsTypeName(int type);

}  // namespace tflm_caps

#endif /* TFLM_CAPS_TFLM_CAPS_OP_COMMON_H */
