/*
 * The fuzzing host of the capsule operators (see fuzz_host.h).
 */
#include "fuzz_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "fuzz_input.h"

namespace fuzz_host {
namespace {

// ---- the vtable the operators call through (slots of tflm_host_abi.h) ----

Host* Self(void* object) { return *reinterpret_cast<Host**>(static_cast<char*>(object) + sizeof(void*)); }

void Destructor(void*) {}
void* SlotAllocatePersistent(void* o, size_t bytes) { return Self(o)->AllocatePersistent(bytes); }
TfLiteStatus SlotRequestScratch(void* o, size_t bytes, int* index) {
  return Self(o)->RequestScratch(bytes, index);
}
void* SlotGetScratch(void* o, int index) { return Self(o)->GetScratch(index); }
TfLiteTensor* SlotAllocateTemp(void* o, int index) { return Self(o)->AllocateTemp(index); }
void SlotDeallocateTemp(void* o, TfLiteTensor* t) { Self(o)->DeallocateTemp(t); }
uint8_t* SlotAllocateTempBuffer(void* o, size_t size, size_t alignment) {
  return Self(o)->AllocateTempBuffer(size, alignment);
}
void SlotDeallocateTempBuffer(void* o, uint8_t* buffer) { Self(o)->DeallocateTempBuffer(buffer); }
TfLiteEvalTensor* SlotGetEval(void* o, int index) { return Self(o)->GetEval(index); }

void* const kVtable[] = {
    reinterpret_cast<void*>(&Destructor),
    reinterpret_cast<void*>(&Destructor),
    reinterpret_cast<void*>(&SlotAllocatePersistent),
    reinterpret_cast<void*>(&SlotRequestScratch),
    reinterpret_cast<void*>(&SlotGetScratch),
    reinterpret_cast<void*>(&SlotAllocateTemp),
    reinterpret_cast<void*>(&SlotDeallocateTemp),
    reinterpret_cast<void*>(&SlotAllocateTempBuffer),
    reinterpret_cast<void*>(&SlotDeallocateTempBuffer),
    reinterpret_cast<void*>(&SlotGetEval),
};
static_assert(sizeof(kVtable) / sizeof(kVtable[0]) == kSlotGetEvalTensor + 1,
              "one entry per MicroContext slot");

[[noreturn]] void Die(const char* what) {
  fprintf(stderr, "fuzz_host: %s\n", what);
  abort();
}

void* Block(size_t bytes) {
  void* p = malloc(bytes > 0 ? bytes : 1);
  if (p == nullptr) Die("out of memory");
  return p;
}

TfLiteIntArray* IntArray(const std::vector<int>& values) {
  auto* a = static_cast<TfLiteIntArray*>(Block(sizeof(int) * (1 + values.size())));
  a->size = static_cast<int>(values.size());
  std::copy(values.begin(), values.end(), a->data);
  return a;
}

TfLiteFloatArray* FloatArray(const std::vector<float>& values) {
  auto* a = static_cast<TfLiteFloatArray*>(Block(sizeof(float) * (1 + values.size())));
  a->size = static_cast<int>(values.size());
  std::copy(values.begin(), values.end(), a->data);
  return a;
}

// Writes the raw type code into the enum field (TFLM stores codes the
// host header's enum does not list).
void SetType(TfLiteType* field, int32_t code) { memcpy(field, &code, sizeof(code)); }

int64_t TypeBytes(int32_t code) {
  switch (code) {
    case kTfLiteInt8: case kTfLiteUInt8: case kTfLiteBool: return 1;
    case kTfLiteInt16: return 2;
    case kTfLiteInt64: return 8;
    default: return 4;
  }
}

// Elements of a shape, or -1 if a dim is negative or the count is absurd.
int64_t Elements(const TensorSpec& t) {
  if (!t.has_dims) return -1;
  int64_t n = 1;
  for (int d : t.dims) {
    if (d < 0 || (d > 0 && n > ((int64_t)1 << 40) / d)) return -1;
    n *= d;
  }
  return n;
}

// Bytes of a tensor of n elements: int4 packs two per byte (as TFLite
// stores an INT4 tensor), so the sanitizer sees a read past the packed size.
int64_t TensorBytes(const TensorSpec& t, int64_t n) {
  return t.type == kTfLiteInt4 ? (n + 1) / 2 : n * TypeBytes(t.type);
}

// A block of `bytes` holding the spec's constant contents, zero-padded.
void* ConstantBlock(const TensorSpec& t, size_t bytes) {
  void* p = Block(bytes);
  memset(p, 0, bytes);
  if (!t.data.empty()) memcpy(p, t.data.data(), std::min(bytes, t.data.size()));
  return p;
}

}  // namespace

// ---- FlexBuffer writer (every slot 8 bytes wide, float vectors 4 or 8) ----

namespace {

void PutUint(std::vector<uint8_t>* b, uint64_t v, int width) {
  for (int k = 0; k < width; ++k) b->push_back(static_cast<uint8_t>(v >> (8 * k)));
}

void Align(std::vector<uint8_t>* b, int width) {
  while (b->size() % width) b->push_back(0);
}

uint64_t DoubleBits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof(u));
  return u;
}

}  // namespace

std::vector<uint8_t> EncodeOptions(std::vector<OptionEntry> entries) {
  std::stable_sort(entries.begin(), entries.end(),
                   [](const OptionEntry& a, const OptionEntry& b) { return a.key < b.key; });
  std::vector<uint8_t> b;
  const size_t n = entries.size();
  std::vector<size_t> key_pos(n), data_pos(n);
  for (size_t k = 0; k < n; ++k) {
    key_pos[k] = b.size();
    b.insert(b.end(), entries[k].key.begin(), entries[k].key.end());
    b.push_back(0);
  }
  for (size_t k = 0; k < n; ++k) {
    const OptionEntry& e = entries[k];
    if (e.kind == OptionEntry::kFloatVector) {
      const int w = e.vector_width == 8 ? 8 : 4;
      Align(&b, w);
      PutUint(&b, e.vector.size(), w);
      data_pos[k] = b.size();
      for (double v : e.vector) {
        if (w == 8) {
          PutUint(&b, DoubleBits(v), 8);
        } else {
          const float f = static_cast<float>(v);
          uint32_t u;
          memcpy(&u, &f, sizeof(u));
          PutUint(&b, u, 4);
        }
      }
    } else if (e.kind == OptionEntry::kString) {
      b.push_back(static_cast<uint8_t>(e.text.size()));  // size, then the characters
      data_pos[k] = b.size();
      b.insert(b.end(), e.text.begin(), e.text.end());
      b.push_back(0);
    }
  }
  Align(&b, 8);
  PutUint(&b, n, 8);
  const size_t keys = b.size();
  for (size_t k = 0; k < n; ++k) PutUint(&b, b.size() - key_pos[k], 8);
  PutUint(&b, b.size() - keys, 8);  // keys vector offset
  PutUint(&b, 8, 8);                // keys byte width
  PutUint(&b, n, 8);                // map size
  const size_t map = b.size();
  std::vector<uint8_t> types(n);
  for (size_t k = 0; k < n; ++k) {
    const OptionEntry& e = entries[k];
    switch (e.kind) {
      case OptionEntry::kInt:
        PutUint(&b, static_cast<uint64_t>(e.int_value), 8);
        types[k] = (1 << 2) | 3;
        break;
      case OptionEntry::kFloat:
        PutUint(&b, DoubleBits(e.float_value), 8);
        types[k] = (3 << 2) | 3;
        break;
      case OptionEntry::kFloatVector:
        PutUint(&b, b.size() - data_pos[k], 8);
        types[k] = static_cast<uint8_t>((13 << 2) | (e.vector_width == 8 ? 3 : 2));
        break;
      case OptionEntry::kString:
        PutUint(&b, b.size() - data_pos[k], 8);
        types[k] = (5 << 2) | 0;
        break;
    }
  }
  b.insert(b.end(), types.begin(), types.end());
  const size_t root = b.size();
  PutUint(&b, root - map, 8);
  b.push_back((9 << 2) | 3);
  b.push_back(8);
  return b;
}

// ---- Host ---------------------------------------------------------------

Host::Host() {
  object_.vtable = kVtable;
  object_.host = this;
  context_.micro_context = &object_;
  memset(&node_, 0, sizeof(node_));
}

Host::~Host() {
  for (TempBlocks& t : temps_) {
    free(t.tensor);
    free(t.dims);
    free(t.scales);
    free(t.zero_points);
    free(t.affine);
    free(t.data);
  }
  for (void* p : persistent_) free(p);
  for (void* p : scratch_) free(p);
  for (TfLiteEvalTensor* e : eval_) free(e);
  for (void* p : eval_blocks_) free(p);
  free(node_inputs_);
  free(node_outputs_);
  free(options_copy_);
}

int64_t Host::scratch_bytes() const {
  int64_t total = 0;
  for (size_t s : scratch_sizes_) total += static_cast<int64_t>(s);
  return total;
}

void* Host::AllocatePersistent(size_t bytes) {
  if (persistent_count_++ == faults.persistent_fail_at) return nullptr;
  if (bytes > ((size_t)1 << 26)) return nullptr;  // beyond any arena
  void* p = Block(bytes);
  memset(p, 0xA5, bytes);  // arenas are not zeroed
  persistent_.push_back(p);
  return p;
}

TfLiteStatus Host::RequestScratch(size_t bytes, int* index) {
  if (!preparing_) Die("scratch requested outside Prepare");
  if (faults.scratch_request_fails || bytes > ((size_t)1 << 31)) return kTfLiteError;
  *index = static_cast<int>(scratch_sizes_.size());
  scratch_sizes_.push_back(bytes);
  return kTfLiteOk;
}

void* Host::GetScratch(int index) {
  if (preparing_) Die("scratch buffer read during Prepare");
  if (index < 0 || static_cast<size_t>(index) >= scratch_.size()) Die("bad scratch index");
  return scratch_[index];
}

TfLiteTensor* Host::AllocateTemp(int tensor_index) {
  if (!preparing_) Die("temp tensor outside Prepare");
  if (temp_count_++ == faults.temp_fail_at) return nullptr;
  if (tensor_index < 0 || static_cast<size_t>(tensor_index) >= tensors.size()) return nullptr;
  const TensorSpec& s = tensors[tensor_index];
  TempBlocks blocks = {};
  blocks.tensor = static_cast<TfLiteTensor*>(Block(sizeof(TfLiteTensor)));
  TfLiteTensor* t = blocks.tensor;
  memset(t, 0, sizeof(*t));
  SetType(&t->type, s.type);
  if (s.has_dims) {
    t->dims = IntArray(s.dims);
    blocks.dims = t->dims;
  }
  t->quantization.type = static_cast<TfLiteQuantizationType>(s.quant_type);
  if (s.has_affine) {
    auto* a = static_cast<TfLiteAffineQuantization*>(Block(sizeof(TfLiteAffineQuantization)));
    a->scale = s.has_scale ? FloatArray(s.scales) : nullptr;
    a->zero_point = s.has_zero_point ? IntArray(s.zero_points) : nullptr;
    a->quantized_dimension = s.quantized_dimension;
    blocks.affine = a;
    blocks.scales = a->scale;
    blocks.zero_points = a->zero_point;
    t->quantization.params = a;
  }
  if (!s.scales.empty()) t->params.scale = s.scales[0];
  if (!s.zero_points.empty()) t->params.zero_point = s.zero_points[0];
  const int64_t n = Elements(s);
  t->bytes = n >= 0 ? static_cast<size_t>(TensorBytes(s, n)) : 0;
  t->allocation_type = s.allocation_type;
  // constant tensors carry their data in Prepare (TFLM points at the model)
  if (s.allocation_type == 1 && n >= 0 && TensorBytes(s, n) <= ((int64_t)1 << 24)) {
    blocks.data = ConstantBlock(s, t->bytes);
    t->data.raw = blocks.data;
  }
  temps_.push_back(blocks);
  ++live_temps_;
  return t;
}

void Host::DeallocateTemp(TfLiteTensor* tensor) {
  for (size_t k = 0; k < temps_.size(); ++k) {
    if (temps_[k].tensor == tensor) {
      free(temps_[k].tensor);
      free(temps_[k].dims);
      free(temps_[k].scales);
      free(temps_[k].zero_points);
      free(temps_[k].affine);
      free(temps_[k].data);
      temps_.erase(temps_.begin() + static_cast<long>(k));
      --live_temps_;
      return;
    }
  }
  Die("deallocating a temp tensor that is not live");
}

uint8_t* Host::AllocateTempBuffer(size_t, size_t) { Die("unexpected temp buffer request"); }
void Host::DeallocateTempBuffer(uint8_t*) { Die("unexpected temp buffer release"); }

TfLiteEvalTensor* Host::GetEval(int tensor_index) {
  if (preparing_) Die("eval tensor read during Prepare");
  if (tensor_index < 0 || static_cast<size_t>(tensor_index) >= eval_.size() ||
      eval_[tensor_index] == nullptr) {
    Die("eval tensor that Prepare did not validate");
  }
  return eval_[tensor_index];
}

TfLiteStatus Host::Prepare(const TFLMRegistration* reg) {
  free(node_inputs_);
  free(node_outputs_);
  free(options_copy_);
  node_inputs_ = IntArray(inputs);
  node_outputs_ = IntArray(outputs);
  options_copy_ = nullptr;
  if (has_options) {
    options_copy_ = static_cast<uint8_t*>(Block(options.size()));
    if (!options.empty()) memcpy(options_copy_, options.data(), options.size());
  }
  memset(&node_, 0, sizeof(node_));
  node_.inputs = node_inputs_;
  node_.outputs = node_outputs_;
  node_.custom_initial_data = options_copy_;
  node_.custom_initial_data_size = has_options ? static_cast<int>(options.size()) : 0;
  node_.user_data = reg->init(&context_, reinterpret_cast<const char*>(options_copy_),
                              has_options ? options.size() : 0);
  preparing_ = true;
  const TfLiteStatus status = reg->prepare(&context_, &node_);
  preparing_ = false;
  return status;
}

bool Host::Eval(const TFLMRegistration* reg, uint64_t seed, int64_t budget,
                TfLiteStatus* status) {
  int64_t total = scratch_bytes();
  for (const TensorSpec& t : tensors) {
    const int64_t n = Elements(t);
    if (n > 0) total += TensorBytes(t, n);
  }
  if (total > budget) return false;
  for (size_t s : scratch_sizes_) scratch_.push_back(Block(s));
  eval_.assign(tensors.size(), nullptr);
  std::vector<int> used(inputs);
  used.insert(used.end(), outputs.begin(), outputs.end());
  for (int index : used) {
    if (index < 0 || static_cast<size_t>(index) >= tensors.size() || eval_[index] != nullptr)
      continue;
    const TensorSpec& s = tensors[index];
    const int64_t n = Elements(s);
    if (n < 0) Die("Prepare accepted a tensor with a negative dim");
    auto* e = static_cast<TfLiteEvalTensor*>(Block(sizeof(TfLiteEvalTensor)));
    const size_t bytes = static_cast<size_t>(TensorBytes(s, n));
    void* data;
    if (s.data.empty()) {
      data = Block(bytes);
      fz_fill_i8(static_cast<int8_t*>(data), bytes, static_cast<uint8_t>(seed >> 8),
                 seed + static_cast<uint64_t>(index));
    } else {
      data = ConstantBlock(s, bytes);  // what Prepare saw
    }
    eval_blocks_.push_back(data);
    e->data.raw = data;
    e->dims = IntArray(s.dims);
    eval_blocks_.push_back(e->dims);
    SetType(&e->type, s.type);
    eval_[index] = e;
  }
  *status = reg->invoke(&context_, &node_);
  return true;
}

}  // namespace fuzz_host

// ---- operator error messages ----------------------------------------------

namespace {
int g_error_count = 0;
char g_last_error[600];
}  // namespace

extern "C" void TFLMCaps_HostRecordError(const char* message) {
  const size_t n = strlen(message);  // the sanitizer checks it is terminated
  if (n == 0) {
    fprintf(stderr, "fuzz_host: empty operator error message\n");
    abort();
  }
  ++g_error_count;
  snprintf(g_last_error, sizeof(g_last_error), "%s", message);
}

namespace fuzz_host {
int ErrorCount() { return g_error_count; }
const char* LastError() { return g_last_error; }
void ClearErrors() {
  g_error_count = 0;
  g_last_error[0] = 0;
}
}  // namespace fuzz_host
