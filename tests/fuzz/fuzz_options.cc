/*
 * libFuzzer harness of the custom-options path: the input is a node's
 * custom options (normally a FlexBuffer map written by the converter).
 *
 *  1. The FlexBuffer reader walks it: root, every vector element (nested
 *     up to three levels), the keys the operators read, each value as an
 *     integer, a number and a vector.  Every read must stay inside the
 *     buffer (a copy of exactly its size).
 *  2. Each operator's Init and Prepare run on a small valid node carrying
 *     these options (ClassCaps twice: int8 and packed int4 W); a refusal must report a message naming the operator,
 *     and an accepted node must Eval cleanly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "fuzz_host.h"
#include "fuzz_input.h"
#include "tflm/caps_flexbuffer.h"
#include "tflm/caps_ops.h"

using fuzz_host::Host;
using fuzz_host::TensorSpec;
using namespace tflm_caps_host;  // NOLINT

namespace {

const char* const kKeys[] = {"version", "num_routing", "store_predictions", "u_hat_scale",
                             "s_scales", "b_scales", "s_scale", "",
                             "a_key_longer_than_any_in_the_map"};

int g_budget;  // reads left for this input (bounds nested vectors)

void Walk(const caps_flexbuf_ref* ref, int depth) {
  if (--g_budget < 0) return;
  int64_t i;
  double d;
  int32_t n = -1;
  (void)caps_flexbuf_as_int(ref, &i);
  (void)caps_flexbuf_as_double(ref, &d);
  if (caps_flexbuf_vector_size(ref, &n) == CAPS_FLEXBUF_OK) {
    if (n < 0) abort();
    for (int32_t k = 0; k < n && k < 64 && depth < 3; ++k) {
      caps_flexbuf_ref elem;
      if (caps_flexbuf_vector_at(ref, k, &elem) != CAPS_FLEXBUF_OK) abort();  // in range
      Walk(&elem, depth + 1);
    }
    caps_flexbuf_ref past;
    if (caps_flexbuf_vector_at(ref, n, &past) != CAPS_FLEXBUF_NOT_FOUND) abort();
  }
  for (const char* key : kKeys) {
    caps_flexbuf_ref value;
    if (caps_flexbuf_map_get(ref, key, &value) == CAPS_FLEXBUF_OK && depth < 3) Walk(&value, depth + 1);
  }
}

TensorSpec Int8(std::vector<int> dims, float scale, int zero_point) {
  TensorSpec t;
  t.dims = std::move(dims);
  t.scales = {scale};
  t.zero_points = {zero_point};
  return t;
}

void RunOperator(const TFLMRegistration* reg, const char* op, int which,
                 const uint8_t* data, size_t size) {
  Host host;
  host.options.assign(data, data + size);
  if (which == 1 || which == 3) {
    // class capsules (3: int4 W): u [1, 6, 3], W [6, 4, 2, 3], v [1, 4, 2]
    host.tensors.push_back(Int8({1, 6, 3}, 1.0f / 128.0f, 0));
    TensorSpec w = Int8({6, 4, 2, 3}, 0.01f, 0);
    w.allocation_type = 1;
    if (which == 3) w.type = kTfLiteInt4;
    host.tensors.push_back(w);
    host.tensors.push_back(Int8({1, 4, 2}, 1.0f / 128.0f, 0));
    host.inputs = {0, 1};
    host.outputs = {2};
  } else if (which == 4) {
    // self-attention capsules: u [2, 6, 3], W [6, 4, 2, 3], bias int32
    // [6, 4] (Q15, constant), v [2, 4, 2]
    host.tensors.push_back(Int8({2, 6, 3}, 1.0f / 128.0f, 0));
    TensorSpec w = Int8({6, 4, 2, 3}, 0.01f, 0);
    w.allocation_type = 1;
    host.tensors.push_back(w);
    TensorSpec bias = Int8({6, 4}, 1.0f / 32768.0f, 0);
    bias.type = kTfLiteInt32;
    bias.allocation_type = 1;
    for (int k = 0; k < 24; ++k) {
      const int32_t v = (k * 977) % 6000 - 3000;
      for (int byte = 0; byte < 4; ++byte) bias.data.push_back((uint8_t)((uint32_t)v >> (8 * byte)));
    }
    host.tensors.push_back(bias);
    host.tensors.push_back(Int8({2, 4, 2}, 1.0f / 128.0f, 0));
    host.inputs = {0, 1, 2};
    host.outputs = {3};
  } else {
    host.tensors.push_back(Int8({2, 5, 4}, 0.05f, 3));
    host.tensors.push_back(which == 2 ? Int8({2, 5}, 1.0f / 256.0f, -128)
                                     : Int8({2, 5, 4}, 1.0f / 128.0f, 0));
    host.inputs = {0};
    host.outputs = {1};
  }
  fuzz_host::ClearErrors();
  const TfLiteStatus prepared = host.Prepare(reg);
  if (host.live_temps() != 0) {
    fprintf(stderr, "fuzz_options: %s: Prepare left temp tensors allocated\n", op);
    abort();
  }
  if (getenv("FUZZ_VERBOSE") != nullptr) {
    fprintf(stderr, "%s: Prepare %s%s\n", op, prepared == kTfLiteOk ? "ok" : "refused: ",
            prepared == kTfLiteOk ? "" : fuzz_host::LastError());
  }
  if (prepared != kTfLiteOk) {
    if (fuzz_host::ErrorCount() == 0 || strncmp(fuzz_host::LastError(), op, strlen(op)) != 0) {
      fprintf(stderr, "fuzz_options: %s: refusal without a message naming it (got '%s')\n", op,
              fuzz_host::LastError());
      abort();
    }
    return;
  }
  TfLiteStatus evaluated = kTfLiteError;
  if (!host.Eval(reg, fz_hash(data, size), (int64_t)1 << 20, &evaluated) ||
      evaluated != kTfLiteOk) {
    fprintf(stderr, "fuzz_options: %s: Eval failed after a successful Prepare (%s)\n", op,
            fuzz_host::LastError());
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // an exact-size copy: the sanitizer then sees any read past the end
  uint8_t* buf = static_cast<uint8_t*>(malloc(size > 0 ? size : 1));
  if (size > 0) memcpy(buf, data, size);
  caps_flexbuf_ref root;
  if (caps_flexbuf_root(buf, size, &root) == CAPS_FLEXBUF_OK) {
    g_budget = 512;
    Walk(&root, 0);
  }
  RunOperator(tflm_caps::Register_TFLMCAPS_SQUASH(), "TFLMCaps_Squash", 0, buf, size);
  RunOperator(tflm_caps::Register_TFLMCAPS_CLASS_CAPS(), "TFLMCaps_ClassCaps", 1, buf, size);
  RunOperator(tflm_caps::Register_TFLMCAPS_LENGTH(), "TFLMCaps_Length", 2, buf, size);
  RunOperator(tflm_caps::Register_TFLMCAPS_CLASS_CAPS(), "TFLMCaps_ClassCaps", 3, buf, size);
  RunOperator(tflm_caps::Register_TFLMCAPS_EFFICIENT_SQUASH(), "TFLMCaps_EfficientSquash", 0,
              buf, size);
  RunOperator(tflm_caps::Register_TFLMCAPS_SELF_ATTENTION_CAPS(), "TFLMCaps_SelfAttentionCaps", 4,
              buf, size);
  free(buf);
  return 0;
}
