/*
 * A small model and MicroContext for driving the capsule operators'
 * Init/Prepare/Eval outside TFLM, over the host binary interface
 * (tflm_caps_ops/host/tflm_host_abi.h) the operators are built against.
 *
 * Every tensor, array, persistent buffer and scratch buffer is its own
 * heap block of exactly the requested size, so the address sanitizer sees
 * any access outside them.  Faults TFLM can produce (a full arena, a
 * failed scratch request, no temp tensor) are injected on request.
 */
#ifndef TFLM_CAPS_TESTS_FUZZ_FUZZ_HOST_H
#define TFLM_CAPS_TESTS_FUZZ_FUZZ_HOST_H

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "host/tflm_host_abi.h"

namespace fuzz_host {

using namespace tflm_caps_host;  // NOLINT: the ABI's TFLite-named types

// What a model says about one tensor; turned into TfLiteTensor /
// TfLiteEvalTensor blocks on demand.
struct TensorSpec {
  int32_t type = kTfLiteInt8;  // raw type code (TFLM passes codes the enum lacks)
  bool has_dims = true;
  std::vector<int> dims;
  int32_t quant_type = kTfLiteAffineQuantization;  // 0 or 1 (TFLM's two kinds)
  bool has_affine = true;
  bool has_scale = true;
  std::vector<float> scales;
  bool has_zero_point = true;
  std::vector<int> zero_points;
  int32_t quantized_dimension = 0;
  int32_t allocation_type = 2;  // kTfLiteArenaRw
  // Contents of a constant tensor (allocation_type 1), zero-padded or cut to
  // its size: Prepare sees them and Eval gets the same; empty: Prepare sees
  // zeros, Eval the seeded filler.
  std::vector<uint8_t> data;
};

// One FlexBuffer map entry of the options writer.
struct OptionEntry {
  enum Kind { kInt, kFloat, kFloatVector, kString } kind = kInt;
  std::string key;
  int64_t int_value = 0;
  double float_value = 0.0;
  std::vector<double> vector;
  int vector_width = 4;  // 4: float32 elements, 8: float64
  std::string text;      // kString (at most 255 bytes)
};

// FlexBuffer map of the entries (sorted by key as FlexBuffers requires).
std::vector<uint8_t> EncodeOptions(std::vector<OptionEntry> entries);

// Operator error messages (TFLMCaps_HostRecordError) since the last clear.
int ErrorCount();
const char* LastError();
void ClearErrors();

// Faults to inject.
struct Faults {
  int persistent_fail_at = -1;  // this persistent allocation (0-based) returns null
  bool scratch_request_fails = false;
  int temp_fail_at = -1;  // this temp tensor allocation returns null
};

class Host {
 public:
  Host();
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  std::vector<TensorSpec> tensors;
  std::vector<int> inputs;
  std::vector<int> outputs;
  std::vector<uint8_t> options;
  bool has_options = true;
  Faults faults;

  // Init + Prepare of `reg` on a node built from the members; returns
  // Prepare's status (init failing to allocate is Prepare's to report).
  TfLiteStatus Prepare(const TFLMRegistration* reg);
  // After a successful Prepare: allocates the scratch buffers and the
  // tensors' data (contents from `seed`) and runs Invoke.  False (and
  // nothing run) when the tensors or scratch exceed the byte budget.
  bool Eval(const TFLMRegistration* reg, uint64_t seed, int64_t budget, TfLiteStatus* status);

  // Temp tensors allocated and not yet deallocated.
  int live_temps() const { return live_temps_; }
  // Total bytes of scratch requested in Prepare.
  int64_t scratch_bytes() const;

  // Context services (called through the MicroContext vtable).
  void* AllocatePersistent(size_t bytes);
  TfLiteStatus RequestScratch(size_t bytes, int* index);
  void* GetScratch(int index);
  TfLiteTensor* AllocateTemp(int tensor_index);
  void DeallocateTemp(TfLiteTensor* tensor);
  uint8_t* AllocateTempBuffer(size_t size, size_t alignment);
  void DeallocateTempBuffer(uint8_t* buffer);
  TfLiteEvalTensor* GetEval(int tensor_index);

 private:
  struct MicroContextObject {
    void* const* vtable;
    Host* host;
  };
  MicroContextObject object_;
  TfLiteContext context_;
  TfLiteNode node_;
  TfLiteIntArray* node_inputs_ = nullptr;
  TfLiteIntArray* node_outputs_ = nullptr;
  uint8_t* options_copy_ = nullptr;
  int persistent_count_ = 0;
  int temp_count_ = 0;
  int live_temps_ = 0;
  bool preparing_ = false;
  std::vector<void*> persistent_;
  std::vector<size_t> scratch_sizes_;
  std::vector<void*> scratch_;
  struct TempBlocks {
    TfLiteTensor* tensor;
    void* dims;
    void* scales;
    void* zero_points;
    void* affine;
    void* data;
  };
  std::vector<TempBlocks> temps_;
  std::vector<TfLiteEvalTensor*> eval_;
  std::vector<void*> eval_blocks_;
};

}  // namespace fuzz_host

#endif  // TFLM_CAPS_TESTS_FUZZ_FUZZ_HOST_H
