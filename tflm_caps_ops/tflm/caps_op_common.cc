/*
 * Shared Prepare checks of the capsule operators (see caps_op_common.h).
 */
#include "tflm/caps_op_common.h"

#include <float.h>
#include <stdarg.h>

#if defined(TFLM_CAPS_HOST_ABI)
#include <stdio.h>
// host/caps_host_registerer.cc: keeps the message for Python and prints it.
extern "C" void TFLMCaps_HostRecordError(const char* message);
#endif

namespace tflm_caps {

void CapsReportError(const char* format, ...) {
  va_list args;
  va_start(args, format);
#if defined(TFLM_CAPS_HOST_ABI)
  char message[512];
  vsnprintf(message, sizeof(message), format, args);
  TFLMCaps_HostRecordError(message);
#else
  VMicroPrintf(format, args);
#endif
  va_end(args);
}

const char* CapsTypeName(int type) {
  switch (type) {
    case kTfLiteNoType: return "notype";
    case kTfLiteFloat32: return "float32";
    case kTfLiteInt32: return "int32";
    case kTfLiteUInt8: return "uint8";
    case kTfLiteInt64: return "int64";
    case kTfLiteBool: return "bool";
    case kTfLiteInt16: return "int16";
    case kTfLiteInt8: return "int8";
    case kTfLiteInt4: return "int4";
    default: return "other";
  }
}

TfLiteStatus CapsCheckArity(const char* op, const TfLiteNode* node, int inputs, int outputs) {
  const int n_in = CapsNumInputs(node), n_out = CapsNumOutputs(node);
  if (n_in != inputs || n_out != outputs) {
    CapsReportError("%s: expected %d input(s) and %d output(s), got %d and %d", op, inputs,
                    outputs, n_in, n_out);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

TfLiteStatus CapsCheckInt8Rank(const char* op, const char* what, const TfLiteTensor* tensor,
                               int rank) {
  if (tensor == nullptr) {
    CapsReportError("%s: %s is missing (could not allocate its tensor)", op, what);
    return kTfLiteError;
  }
  const int type = CapsTensorType(tensor);
  if (type != kTfLiteInt8) {
    CapsReportError("%s: %s must be int8, got %s (type code %d)", op, what, CapsTypeName(type),
                    type);
    return kTfLiteError;
  }
  return CapsCheckRank(op, what, tensor, rank);
}

TfLiteStatus CapsCheckRank(const char* op, const char* what, const TfLiteTensor* tensor,
                           int rank) {
  if (tensor == nullptr) {
    CapsReportError("%s: %s is missing (could not allocate its tensor)", op, what);
    return kTfLiteError;
  }
  if (tensor->dims == nullptr || tensor->dims->size != rank) {
    CapsReportError("%s: %s must have rank %d, got rank %d", op, what, rank,
                    tensor->dims == nullptr ? -1 : tensor->dims->size);
    return kTfLiteError;
  }
  for (int i = 0; i < rank; ++i) {
    if (tensor->dims->data[i] <= 0) {
      CapsReportError("%s: %s has non-positive dimension %d (%d)", op, what, i,
                      tensor->dims->data[i]);
      return kTfLiteError;
    }
  }
  return kTfLiteOk;
}

static bool IsPositiveFinite(float x) { return x > 0.0f && x <= FLT_MAX; }

TfLiteStatus CapsGetPerTensorQuant(const char* op, const char* what, const TfLiteTensor* tensor,
                                   CapsQuant* quant) {
  const TfLiteAffineQuantization* affine =
      tensor->quantization.type == kTfLiteAffineQuantization
          ? static_cast<const TfLiteAffineQuantization*>(tensor->quantization.params)
          : nullptr;
  if (affine == nullptr || affine->scale == nullptr || affine->zero_point == nullptr) {
    CapsReportError("%s: %s must have affine (scale, zero point) quantization, got none", op,
                    what);
    return kTfLiteError;
  }
  if (affine->scale->size != 1 || affine->zero_point->size != 1) {
    CapsReportError("%s: %s must be quantized per tensor (1 scale), got %d scales and %d "
                    "zero points", op, what, affine->scale->size, affine->zero_point->size);
    return kTfLiteError;
  }
  const float scale = affine->scale->data[0];
  const int zero_point = affine->zero_point->data[0];
  if (!IsPositiveFinite(scale)) {
    CapsReportError("%s: %s scale must be positive and finite, got %g", op, what, (double)scale);
    return kTfLiteError;
  }
  if (zero_point < -128 || zero_point > 127) {
    CapsReportError("%s: %s zero point must be in [-128, 127], got %d", op, what, zero_point);
    return kTfLiteError;
  }
  quant->scale = scale;
  quant->zero_point = zero_point;
  return kTfLiteOk;
}

TfLiteStatus CapsCheckFixedQuant(const char* op, const char* what, const TfLiteTensor* tensor,
                                 float scale, int32_t zero_point) {
  CapsQuant q;
  if (CapsGetPerTensorQuant(op, what, tensor, &q) != kTfLiteOk) return kTfLiteError;
  if (q.scale != scale || q.zero_point != zero_point) {
    CapsReportError("%s: %s must have the fixed quantization scale %.9g, zero point %d; got "
                    "scale %.9g, zero point %d", op, what, (double)scale, (int)zero_point,
                    (double)q.scale, (int)q.zero_point);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

// Writes "[d0, d1, ...]" into out (always terminated, truncated if long).
static void FormatDims(const int* dims, int count, char* out, size_t cap) {
  size_t n = 0;
  out[n++] = '[';
  for (int i = 0; i < count && n + 16 < cap; ++i) {
    if (i) { out[n++] = ','; out[n++] = ' '; }
    long long v = dims[i];
    if (v < 0) { out[n++] = '-'; v = -v; }
    char digits[12];
    int k = 0;
    do { digits[k++] = (char)('0' + v % 10); v /= 10; } while (v > 0 && k < 11);
    while (k > 0) out[n++] = digits[--k];
  }
  out[n++] = ']';
  out[n] = 0;
}

TfLiteStatus CapsCheckDims(const char* op, const char* what, const TfLiteTensor* tensor,
                           const int* expected, int count) {
  bool ok = tensor->dims != nullptr && tensor->dims->size == count;
  for (int i = 0; ok && i < count; ++i) ok = tensor->dims->data[i] == expected[i];
  if (!ok) {
    char want[128], got[128];
    FormatDims(expected, count < 8 ? count : 8, want, sizeof(want));
    if (tensor->dims == nullptr)
      FormatDims(nullptr, 0, got, sizeof(got));
    else
      FormatDims(tensor->dims->data, tensor->dims->size, got, sizeof(got));
    CapsReportError("%s: %s must have shape %s, got %s", op, what, want, got);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

int32_t CapsNumElements(const TfLiteIntArray* dims) {
  int64_t n = 1;
  for (int i = 0; i < dims->size; ++i) {
    if (dims->data[i] < 0) return -1;
    n *= dims->data[i];
    if (n > INT32_MAX) return -1;
  }
  return (int32_t)n;
}

static const char* FlexStatusText(caps_flexbuf_status st) {
  switch (st) {
    case CAPS_FLEXBUF_NOT_FOUND: return "is missing";
    case CAPS_FLEXBUF_WRONG_TYPE: return "has the wrong type";
    case CAPS_FLEXBUF_MALFORMED: return "is malformed (offsets outside the buffer)";
    default: return "is invalid";
  }
}

TfLiteStatus CapsOpenOptions(const char* op, const TfLiteNode* node, caps_flexbuf_ref* map,
                             int64_t* version_out) {
  const uint8_t* data = static_cast<const uint8_t*>(node->custom_initial_data);
  const int size = node->custom_initial_data_size;
  if (data == nullptr || size <= 0) {
    CapsReportError("%s: custom options are missing (expected a FlexBuffer map with 'version' "
                    "= %d)", op, (int)kOptionsVersion);
    return kTfLiteError;
  }
  caps_flexbuf_status st = caps_flexbuf_root(data, (size_t)size, map);
  if (st == CAPS_FLEXBUF_OK && map->type != CAPS_FBT_MAP) st = CAPS_FLEXBUF_WRONG_TYPE;
  if (st != CAPS_FLEXBUF_OK) {
    CapsReportError("%s: custom options (%d bytes) are not a valid FlexBuffer map", op, size);
    return kTfLiteError;
  }
  int64_t version;
  const int64_t lowest = 0, highest = INT32_MAX;
  if (CapsOptionInt(op, map, kOptionVersion, lowest, highest, nullptr, &version) != kTfLiteOk)
    return kTfLiteError;
  if (version < kMinOptionsVersion || version > kOptionsVersion) {
    CapsReportError("%s: options version %lld is not supported by this build (it reads "
                    "versions %d to %d)", op, (long long)version, (int)kMinOptionsVersion,
                    (int)kOptionsVersion);
    return kTfLiteError;
  }
  if (version_out != nullptr) *version_out = version;
  return kTfLiteOk;
}

TfLiteStatus CapsOptionInt(const char* op, const caps_flexbuf_ref* map, const char* key,
                           int64_t min_value, int64_t max_value, const int64_t* fallback,
                           int64_t* out) {
  caps_flexbuf_ref value;
  caps_flexbuf_status st = caps_flexbuf_map_get(map, key, &value);
  if (st == CAPS_FLEXBUF_NOT_FOUND && fallback != nullptr) {
    *out = *fallback;
    return kTfLiteOk;
  }
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_as_int(&value, out);
  if (st != CAPS_FLEXBUF_OK) {
    CapsReportError("%s: option '%s' %s (expected an integer)", op, key, FlexStatusText(st));
    return kTfLiteError;
  }
  if (*out < min_value || *out > max_value) {
    CapsReportError("%s: option '%s' = %lld is outside [%lld, %lld]", op, key, (long long)*out,
                    (long long)min_value, (long long)max_value);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

static TfLiteStatus CheckScaleValue(const char* op, const char* key, int index, double v,
                                    float* out) {
  const float f = (float)v;
  if (!(v > 0.0) || !IsPositiveFinite(f)) {
    if (index < 0)
      CapsReportError("%s: option '%s' must be a positive finite scale, got %g", op, key, v);
    else
      CapsReportError("%s: option '%s'[%d] must be a positive finite scale, got %g", op, key,
                      index, v);
    return kTfLiteError;
  }
  *out = f;
  return kTfLiteOk;
}

TfLiteStatus CapsOptionScale(const char* op, const caps_flexbuf_ref* map, const char* key,
                             float* out) {
  caps_flexbuf_ref value;
  double v = 0.0;
  caps_flexbuf_status st = caps_flexbuf_map_get(map, key, &value);
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_as_double(&value, &v);
  if (st != CAPS_FLEXBUF_OK) {
    CapsReportError("%s: option '%s' %s (expected a float scale)", op, key, FlexStatusText(st));
    return kTfLiteError;
  }
  return CheckScaleValue(op, key, -1, v, out);
}

TfLiteStatus CapsOptionScales(const char* op, const caps_flexbuf_ref* map, const char* key,
                              int32_t count, float* out) {
  caps_flexbuf_ref vec;
  int32_t size = -1;
  caps_flexbuf_status st = caps_flexbuf_map_get(map, key, &vec);
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_vector_size(&vec, &size);
  if (st != CAPS_FLEXBUF_OK) {
    CapsReportError("%s: option '%s' %s (expected a vector of %d float scales)", op, key,
                    FlexStatusText(st), (int)count);
    return kTfLiteError;
  }
  if (size != count) {
    CapsReportError("%s: option '%s' must hold %d scales, got %d", op, key, (int)count,
                    (int)size);
    return kTfLiteError;
  }
  for (int32_t i = 0; i < count; ++i) {
    caps_flexbuf_ref elem;
    double v = 0.0;
    st = caps_flexbuf_vector_at(&vec, i, &elem);
    if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_as_double(&elem, &v);
    if (st != CAPS_FLEXBUF_OK) {
      CapsReportError("%s: option '%s'[%d] %s (expected a float scale)", op, key, (int)i,
                      FlexStatusText(st));
      return kTfLiteError;
    }
    if (CheckScaleValue(op, key, (int)i, v, &out[i]) != kTfLiteOk) return kTfLiteError;
  }
  return kTfLiteOk;
}

void* CapsGetOpData(const char* op, const TfLiteNode* node, size_t bytes) {
  if (node->user_data == nullptr) {
    CapsReportError("%s: could not allocate %d bytes of op data in the arena", op, (int)bytes);
  }
  return node->user_data;
}

TfLiteStatus CapsCheckParamsInit(const char* op, caps_nn_status st, const CapsQuant& in_q) {
  if (st != CAPS_NN_SUCCESS) {
    CapsReportError("%s: cannot derive integer parameters from input scale %g, zero point %d",
                    op, (double)in_q.scale, (int)in_q.zero_point);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

static TfLiteStatus CheckUnaryCapsTensors(const CapsUnaryCapsSpec& spec,
                                          const TfLiteTensor* input, const TfLiteTensor* output,
                                          caps_caps_dims* dims, CapsQuant* in_q) {
  const char* op = spec.op;
  CAPS_ENSURE_OK(CapsCheckInt8Rank(op, spec.input, input, 3));
  CAPS_ENSURE_OK(CapsCheckInt8Rank(op, spec.output, output, spec.output_rank));
  CAPS_ENSURE_OK(CapsCheckDims(op, spec.output, output, input->dims->data, spec.output_rank));
  CAPS_ENSURE_OK(CapsGetPerTensorQuant(op, spec.input, input, in_q));
  CAPS_ENSURE_OK(CapsCheckFixedQuant(op, spec.output, output, spec.output_scale,
                                     spec.output_zero_point));
  const int32_t batch = input->dims->data[0], n = input->dims->data[1], d = input->dims->data[2];
  if (d > CAPS_NN_MAX_CAPS_DIM || (int64_t)batch * n > INT32_MAX) {
    CapsReportError("%s: %s capsule dim %d must be <= %d", op, spec.input, (int)d,
                    CAPS_NN_MAX_CAPS_DIM);
    return kTfLiteError;
  }
  dims->n_caps = batch * n;
  dims->dim = d;
  return kTfLiteOk;
}

TfLiteStatus CapsPrepareUnaryCaps(TfLiteContext* context, TfLiteNode* node,
                                  const CapsUnaryCapsSpec& spec, caps_caps_dims* dims,
                                  CapsQuant* in_q, bool* has_table) {
  caps_flexbuf_ref options;
  int64_t version = 0;
  CAPS_ENSURE_OK(CapsOpenOptions(spec.op, node, &options, &version));
  const bool table = spec.table_version > 0 && version >= spec.table_version;
  if (has_table != nullptr) *has_table = table;
  CAPS_ENSURE_OK(CapsCheckArity(spec.op, node, table ? 2 : 1, 1));
  TfLiteTensor* input = CapsTempInput(context, node, 0);
  TfLiteTensor* output = CapsTempOutput(context, node, 0);
  const TfLiteStatus status = CheckUnaryCapsTensors(spec, input, output, dims, in_q);
  CapsFreeTemp(context, input);
  CapsFreeTemp(context, output);
  return status;
}

TfLiteStatus CapsCheckCapsuleWeights(const char* op, const TfLiteTensor* w, int32_t n_out,
                                     const float** scales, int32_t* count) {
  const char* what = "input 1 (W)";
  if (w->allocation_type != kCapsConstantAllocation) {
    CapsReportError("%s: %s must be a constant tensor (weights stored in the model)", op, what);
    return kTfLiteError;
  }
  const TfLiteAffineQuantization* affine =
      w->quantization.type == kTfLiteAffineQuantization
          ? static_cast<const TfLiteAffineQuantization*>(w->quantization.params)
          : nullptr;
  if (affine == nullptr || affine->scale == nullptr || affine->zero_point == nullptr) {
    CapsReportError("%s: %s must have affine quantization, got none", op, what);
    return kTfLiteError;
  }
  const int32_t n = affine->scale->size;
  if (n != 1 && n != n_out) {
    CapsReportError("%s: %s must have 1 or N_out = %d scales, got %d", op, what, (int)n_out,
                    (int)n);
    return kTfLiteError;
  }
  if (n > 1 && affine->quantized_dimension != 1) {
    CapsReportError("%s: %s per-capsule scales must be along dimension 1 (N_out), got "
                    "quantized_dimension %d", op, what, (int)affine->quantized_dimension);
    return kTfLiteError;
  }
  if (affine->zero_point->size != n && affine->zero_point->size != 1) {
    CapsReportError("%s: %s has %d scales but %d zero points", op, what, (int)n,
                    (int)affine->zero_point->size);
    return kTfLiteError;
  }
  for (int i = 0; i < affine->zero_point->size; ++i) {
    if (affine->zero_point->data[i] != 0) {
      CapsReportError("%s: %s must be symmetric (zero point 0), got zero point %d at %d", op,
                      what, affine->zero_point->data[i], i);
      return kTfLiteError;
    }
  }
  for (int i = 0; i < n; ++i) {
    const float s = affine->scale->data[i];
    if (!(s > 0.0f) || s > FLT_MAX) {
      CapsReportError("%s: %s scale %d must be positive and finite, got %g", op, what, i,
                      (double)s);
      return kTfLiteError;
    }
  }
  *scales = affine->scale->data;
  *count = n;
  return kTfLiteOk;
}

TfLiteStatus CapsPrepareWeightedQuant(TfLiteContext* context, const char* op,
                                      const TfLiteTensor* u, const TfLiteTensor* w,
                                      const TfLiteTensor* v, int32_t n_out,
                                      CapsWeightedQuant* out) {
  CAPS_ENSURE_OK(CapsGetPerTensorQuant(op, "input 0 (u)", u, &out->u));
  CAPS_ENSURE_OK(CapsCheckFixedQuant(op, "output 0 (v)", v, kSquashOutputScale,
                                     kSquashOutputZeroPoint));
  CAPS_ENSURE_OK(CapsCheckCapsuleWeights(op, w, n_out, &out->w_scales, &out->n_scales));
  const size_t bytes = sizeof(int32_t) * static_cast<size_t>(out->n_scales);
  out->multipliers = static_cast<int32_t*>(CapsAllocatePersistent(context, bytes));
  out->shifts = static_cast<int32_t*>(CapsAllocatePersistent(context, bytes));
  if (out->multipliers == nullptr || out->shifts == nullptr) {
    CapsReportError("%s: could not allocate requantization parameters in the arena", op);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace tflm_caps
