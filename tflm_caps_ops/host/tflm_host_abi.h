/*
 * Binary interface of the pinned tflite-micro Python wheel
 * (tflite-micro==0.dev20261023182759, built from tflite-micro commit 8f6596d,
 * x86-64 Linux), described from measurements of that wheel's _runtime.so.
 *
 * The wheel ships no headers, and its types moved into namespace
 * tflite::micro with a reduced TfLiteContext, so operators compiled against
 * TFLM source headers do not load into it.  This header states exactly the
 * layout our operator glue relies on; every size and offset below is pinned
 * with static_assert here and exercised by tests/test_tflm_canary.py, which
 * fails loudly when the installed wheel is a different build.
 *
 * Only tflm_caps_ops/tflm/caps_tflm_compat.h (when TFLM_CAPS_HOST_ABI is
 * defined) and tflm_caps_ops/host/ include this file.
 */
#ifndef TFLM_CAPS_HOST_TFLM_HOST_ABI_H
#define TFLM_CAPS_HOST_TFLM_HOST_ABI_H

#include <stddef.h>
#include <stdint.h>

namespace tflm_caps_host {

/* Status returned by prepare/invoke. */
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

/* Tensor element types (values of TFLite's TfLiteType that we use). */
typedef enum {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteBool = 6,
  kTfLiteInt16 = 7,
  kTfLiteInt8 = 9,
  kTfLiteInt4 = 18, /* packed, two per byte (TFLite's INT4 tensor type) */
} TfLiteType;

/* Quantization kinds: only affine quantization is used by int8 models. */
typedef enum { kTfLiteNoQuantization = 0, kTfLiteAffineQuantization = 1 } TfLiteQuantizationType;

/* {int size; T data[]} arrays. */
struct TfLiteIntArray {
  int size;
  int data[];
};
struct TfLiteFloatArray {
  int size;
  float data[];
};

struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
};

struct TfLiteAffineQuantization {
  TfLiteFloatArray* scale;
  TfLiteIntArray* zero_point;
  int32_t quantized_dimension;
};

struct TfLiteQuantization {
  TfLiteQuantizationType type;
  void* params; /* TfLiteAffineQuantization* when type is affine */
};

union TfLitePtrUnion {
  int32_t* i32;
  float* f;
  int8_t* int8;
  uint8_t* uint8;
  int16_t* i16;
  void* raw;
  const void* raw_const;
};

/* The static-memory TfLiteTensor handed out by AllocateTemp*Tensor. */
struct TfLiteTensor {
  TfLiteQuantization quantization; /* 0  */
  TfLiteQuantizationParams params; /* 16 */
  TfLitePtrUnion data;             /* 24 */
  TfLiteIntArray* dims;            /* 32 */
  size_t bytes;                    /* 40 */
  TfLiteType type;                 /* 48 */
  int32_t allocation_type;         /* 52 */
  bool is_variable;                /* 56 */
};

/* The light tensor available during invoke. */
struct TfLiteEvalTensor {
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteType type;
};

struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
};

/* The wheel's TfLiteContext holds nothing but the MicroContext pointer; all
 * services are virtual member functions of that MicroContext. */
struct TfLiteContext {
  void* micro_context;
};

typedef void* (*TfLiteInitFn)(TfLiteContext* context, const char* buffer, size_t length);
typedef void (*TfLiteFreeFn)(TfLiteContext* context, void* buffer);
typedef TfLiteStatus (*TfLitePrepareFn)(TfLiteContext* context, TfLiteNode* node);
typedef TfLiteStatus (*TfLiteInvokeFn)(TfLiteContext* context, TfLiteNode* node);
typedef void (*TfLiteResetFn)(TfLiteContext* context, void* buffer);

struct TFLMRegistration {
  TfLiteInitFn init;
  TfLiteFreeFn free;
  TfLitePrepareFn prepare;
  TfLiteInvokeFn invoke;
  TfLiteResetFn reset;
  int32_t builtin_code;
  const char* custom_name;
};

static_assert(sizeof(TfLiteTensor) == 64, "TfLiteTensor is 64 bytes in the wheel");
static_assert(offsetof(TfLiteTensor, params) == 16, "TfLiteTensor.params at 16");
static_assert(offsetof(TfLiteTensor, data) == 24, "TfLiteTensor.data at 24");
static_assert(offsetof(TfLiteTensor, dims) == 32, "TfLiteTensor.dims at 32");
static_assert(offsetof(TfLiteTensor, bytes) == 40, "TfLiteTensor.bytes at 40");
static_assert(offsetof(TfLiteTensor, type) == 48, "TfLiteTensor.type at 48");
static_assert(sizeof(TfLiteEvalTensor) == 24, "TfLiteEvalTensor is {data, dims, type}");
static_assert(sizeof(TfLiteNode) == 56, "TfLiteNode is 56 bytes in the wheel");
static_assert(sizeof(TFLMRegistration) == 0x38, "TFLMRegistration is 0x38 bytes");
static_assert(offsetof(TFLMRegistration, builtin_code) == 0x28, "builtin_code at 0x28");
static_assert(offsetof(TFLMRegistration, custom_name) == 0x30, "custom_name at 0x30");

/* ---- MicroContext: virtual slots (Itanium C++ ABI vtable indices). -------
 * Slots 0 and 1 are the destructors. */
enum MicroContextSlot {
  kSlotAllocatePersistentBuffer = 2,   /* void*  (size_t bytes) */
  kSlotRequestScratchBufferInArena = 3, /* Status (size_t bytes, int* idx) */
  kSlotGetScratchBuffer = 4,           /* void*  (int idx) */
  kSlotAllocateTempTfLiteTensor = 5,   /* TfLiteTensor* (int tensor_idx) */
  kSlotDeallocateTempTfLiteTensor = 6, /* void   (TfLiteTensor*) */
  kSlotAllocateTempBuffer = 7,         /* uint8_t* (size_t size, size_t align) */
  kSlotDeallocateTempBuffer = 8,       /* void   (uint8_t*) */
  kSlotGetEvalTensor = 9,              /* TfLiteEvalTensor* (int tensor_idx) */
};

inline void* const* MicroContextVtable(const TfLiteContext* context) {
  return *static_cast<void* const* const*>(context->micro_context);
}

template <typename Fn>
inline Fn MicroContextMethod(const TfLiteContext* context, MicroContextSlot slot) {
  return reinterpret_cast<Fn>(MicroContextVtable(context)[slot]);
}

inline void* AllocatePersistentBuffer(TfLiteContext* context, size_t bytes) {
  typedef void* (*Fn)(void*, size_t);
  return MicroContextMethod<Fn>(context, kSlotAllocatePersistentBuffer)(context->micro_context,
                                                                       bytes);
}

inline TfLiteStatus RequestScratchBufferInArena(TfLiteContext* context, size_t bytes,
                                                int* buffer_idx) {
  typedef TfLiteStatus (*Fn)(void*, size_t, int*);
  return MicroContextMethod<Fn>(context, kSlotRequestScratchBufferInArena)(
      context->micro_context, bytes, buffer_idx);
}

inline void* GetScratchBuffer(TfLiteContext* context, int buffer_idx) {
  typedef void* (*Fn)(void*, int);
  return MicroContextMethod<Fn>(context, kSlotGetScratchBuffer)(context->micro_context,
                                                               buffer_idx);
}

inline TfLiteTensor* AllocateTempTfLiteTensor(TfLiteContext* context, int tensor_idx) {
  typedef TfLiteTensor* (*Fn)(void*, int);
  return MicroContextMethod<Fn>(context, kSlotAllocateTempTfLiteTensor)(context->micro_context,
                                                                       tensor_idx);
}

inline void DeallocateTempTfLiteTensor(TfLiteContext* context, TfLiteTensor* tensor) {
  typedef void (*Fn)(void*, TfLiteTensor*);
  MicroContextMethod<Fn>(context, kSlotDeallocateTempTfLiteTensor)(context->micro_context, tensor);
}

inline TfLiteEvalTensor* GetEvalTensor(const TfLiteContext* context, int tensor_idx) {
  typedef TfLiteEvalTensor* (*Fn)(void*, int);
  return MicroContextMethod<Fn>(context, kSlotGetEvalTensor)(context->micro_context, tensor_idx);
}

/* ---- The wheel's op resolver ------------------------------------------------
 * tflite::PythonOpsResolver is a MicroMutableOpResolver<200>: vtable pointer,
 * then TFLMRegistration registrations[200], then the unsigned count.
 * AddCustom is an inline template in TFLM, so nothing is exported for it:
 * HostOpResolver below performs the same steps on that memory. */
constexpr unsigned kResolverCapacity = 200;
constexpr size_t kResolverRegistrationsOffset = 0x8;
constexpr size_t kResolverCountOffset = 0x2bc8;
constexpr int32_t kBuiltinOperatorCustom = 32;

static_assert(kResolverRegistrationsOffset + kResolverCapacity * sizeof(TFLMRegistration) ==
                  kResolverCountOffset,
              "count follows the registrations array");

}  // namespace tflm_caps_host

#endif /* TFLM_CAPS_HOST_TFLM_HOST_ABI_H */
