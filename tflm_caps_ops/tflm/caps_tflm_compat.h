/*
 * The only place where the operator glue meets TFLM types and services.
 *
 * Two builds of the same operator sources:
 *  - firmware (default): real TFLM headers, public API only
 *    (tflite::GetMicroContext, MicroContext::AllocateTemp*Tensor,
 *    tflite::micro::GetEvalInput/Output, tflite::micro::RegisterOp,
 *    MicroPrintf);
 *  - host (TFLM_CAPS_HOST_ABI defined, as setup.py does): the pinned
 *    tflite-micro Python wheel, described by host/tflm_host_abi.h.
 * Everything below is a thin inline wrapper so the op files read the same
 * in both builds.
 */
#ifndef TFLM_CAPS_TFLM_CAPS_TFLM_COMPAT_H
#define TFLM_CAPS_TFLM_CAPS_TFLM_COMPAT_H

#include <stddef.h>
#include <stdint.h>

#if defined(TFLM_CAPS_HOST_ABI)
#include "host/tflm_host_abi.h"
#else
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"
#endif

namespace tflm_caps {

#if defined(TFLM_CAPS_HOST_ABI)
using namespace tflm_caps_host;  // NOLINT: the ABI header's TFLite-named types
#endif

// Allocation type of read-only (constant, flatbuffer-backed) tensors:
// TfLiteAllocationType::kTfLiteMmapRo in both builds.
constexpr int32_t kCapsConstantAllocation = 1;

inline int CapsNumInputs(const TfLiteNode* node) { return node->inputs->size; }
inline int CapsNumOutputs(const TfLiteNode* node) { return node->outputs->size; }

#if defined(TFLM_CAPS_HOST_ABI)

inline void* CapsAllocatePersistent(TfLiteContext* ctx, size_t bytes) {
  return AllocatePersistentBuffer(ctx, bytes);
}
inline TfLiteStatus CapsRequestScratch(TfLiteContext* ctx, size_t bytes, int* idx) {
  return RequestScratchBufferInArena(ctx, bytes, idx);
}
inline void* CapsGetScratch(TfLiteContext* ctx, int idx) { return GetScratchBuffer(ctx, idx); }

inline TfLiteTensor* CapsTempTensor(TfLiteContext* ctx, const TfLiteIntArray* list, int index) {
  if (list == nullptr || index < 0 || index >= list->size || list->data[index] < 0)
    return nullptr;
  return AllocateTempTfLiteTensor(ctx, list->data[index]);
}
inline TfLiteTensor* CapsTempInput(TfLiteContext* ctx, const TfLiteNode* node, int index) {
  return CapsTempTensor(ctx, node->inputs, index);
}
inline TfLiteTensor* CapsTempOutput(TfLiteContext* ctx, const TfLiteNode* node, int index) {
  return CapsTempTensor(ctx, node->outputs, index);
}
inline void CapsFreeTemp(TfLiteContext* ctx, TfLiteTensor* tensor) {
  if (tensor != nullptr) DeallocateTempTfLiteTensor(ctx, tensor);
}

inline TfLiteEvalTensor* CapsEvalTensor(TfLiteContext* ctx, const TfLiteIntArray* list,
                                        int index) {
  if (list == nullptr || index < 0 || index >= list->size || list->data[index] < 0)
    return nullptr;
  return GetEvalTensor(ctx, list->data[index]);
}
inline const TfLiteEvalTensor* CapsEvalInput(TfLiteContext* ctx, const TfLiteNode* node,
                                             int index) {
  return CapsEvalTensor(ctx, node->inputs, index);
}
inline TfLiteEvalTensor* CapsEvalOutput(TfLiteContext* ctx, const TfLiteNode* node, int index) {
  return CapsEvalTensor(ctx, node->outputs, index);
}

inline TFLMRegistration CapsMakeRegistration(TfLiteInitFn init, TfLitePrepareFn prepare,
                                             TfLiteInvokeFn invoke, TfLiteFreeFn free_fn) {
  TFLMRegistration r;
  r.init = init;
  r.free = free_fn;
  r.prepare = prepare;
  r.invoke = invoke;
  r.reset = nullptr;
  r.builtin_code = 0;
  r.custom_name = nullptr;
  return r;
}

#else  // real TFLM

inline void* CapsAllocatePersistent(TfLiteContext* ctx, size_t bytes) {
  return tflite::GetMicroContext(ctx)->AllocatePersistentBuffer(bytes);
}
inline TfLiteStatus CapsRequestScratch(TfLiteContext* ctx, size_t bytes, int* idx) {
  return tflite::GetMicroContext(ctx)->RequestScratchBufferInArena(bytes, idx);
}
inline void* CapsGetScratch(TfLiteContext* ctx, int idx) {
  return tflite::GetMicroContext(ctx)->GetScratchBuffer(idx);
}
inline TfLiteTensor* CapsTempInput(TfLiteContext* ctx, const TfLiteNode* node, int index) {
  return tflite::GetMicroContext(ctx)->AllocateTempInputTensor(node, index);
}
inline TfLiteTensor* CapsTempOutput(TfLiteContext* ctx, const TfLiteNode* node, int index) {
  return tflite::GetMicroContext(ctx)->AllocateTempOutputTensor(node, index);
}
inline void CapsFreeTemp(TfLiteContext* ctx, TfLiteTensor* tensor) {
  if (tensor != nullptr) tflite::GetMicroContext(ctx)->DeallocateTempTfLiteTensor(tensor);
}
inline const TfLiteEvalTensor* CapsEvalInput(TfLiteContext* ctx, const TfLiteNode* node,
                                             int index) {
  return tflite::micro::GetEvalInput(ctx, node, index);
}
inline TfLiteEvalTensor* CapsEvalOutput(TfLiteContext* ctx, const TfLiteNode* node, int index) {
  return tflite::micro::GetEvalOutput(ctx, node, index);
}

typedef void* (*TfLiteInitFn)(TfLiteContext* context, const char* buffer, size_t length);
typedef void (*TfLiteFreeFn)(TfLiteContext* context, void* buffer);
typedef TfLiteStatus (*TfLitePrepareFn)(TfLiteContext* context, TfLiteNode* node);
typedef TfLiteStatus (*TfLiteInvokeFn)(TfLiteContext* context, TfLiteNode* node);

inline TFLMRegistration CapsMakeRegistration(TfLiteInitFn init, TfLitePrepareFn prepare,
                                             TfLiteInvokeFn invoke, TfLiteFreeFn free_fn) {
  return tflite::micro::RegisterOp(init, prepare, invoke, free_fn);
}

#endif  // TFLM_CAPS_HOST_ABI

// Reports an operator error: MicroPrintf in a firmware; on the host it is
// also kept as the library's last error so Python can show it (the wheel
// only raises a generic "TFLM failed to allocate tensors").
void CapsReportError(const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

}  // namespace tflm_caps

#endif /* TFLM_CAPS_TFLM_CAPS_TFLM_COMPAT_H */
