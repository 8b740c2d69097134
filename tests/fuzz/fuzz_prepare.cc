/*
 * libFuzzer harness of the capsule operators' Prepare (and, when Prepare
 * accepts, Eval) over arbitrary tensor shapes, types, quantization
 * parameters, node arity, options and arena faults.
 *
 * An input first describes a valid node of one operator (all-zero bytes:
 * a small valid node), then a list of mutations of it.  Properties:
 *  - Prepare never touches memory outside what the host handed out, and
 *    deallocates every temp tensor it allocated;
 *  - a refusal reports a message naming the operator; success reports none;
 *  - after a successful Prepare, Eval on tensors of exactly the shapes
 *    Prepare saw, with exactly the scratch it requested, succeeds cleanly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_host.h"
#include "fuzz_input.h"
#include "tflm/caps_ops.h"
#include "tflm_caps/caps_nn_types.h"

using fuzz_host::Host;
using fuzz_host::OptionEntry;
using fuzz_host::TensorSpec;
using namespace tflm_caps_host;  // NOLINT

namespace {

enum { kSquash = 0, kClassCaps = 1, kLength = 2, kEfficientSquash = 3, kSelfAttention = 4 };
const char* const kOpNames[5] = {"TFLMCaps_Squash", "TFLMCaps_ClassCaps", "TFLMCaps_Length",
                                 "TFLMCaps_EfficientSquash", "TFLMCaps_SelfAttentionCaps"};

const TFLMRegistration* Registration(int op) {
  switch (op) {
    case kSquash: return tflm_caps::Register_TFLMCAPS_SQUASH();
    case kClassCaps: return tflm_caps::Register_TFLMCAPS_CLASS_CAPS();
    case kEfficientSquash: return tflm_caps::Register_TFLMCAPS_EFFICIENT_SQUASH();
    case kSelfAttention: return tflm_caps::Register_TFLMCAPS_SELF_ATTENTION_CAPS();
    default: return tflm_caps::Register_TFLMCAPS_LENGTH();
  }
}

// Bytes and multiply-adds an input may run in Eval.
constexpr int64_t kMaxBytes = (int64_t)1 << 22;
constexpr int64_t kMaxWork = (int64_t)1 << 19;
constexpr int kMaxMutations = 24;

// FUZZ_VERBOSE=1 in the environment: one line per input on stderr.
bool Verbose() {
  static const bool verbose = getenv("FUZZ_VERBOSE") != nullptr;
  return verbose;
}

[[noreturn]] void Fail(const char* op, const char* what) {
  fprintf(stderr, "fuzz_prepare: %s: %s (last message: %s)\n", op, what,
          fuzz_host::LastError());
  abort();
}

TensorSpec Int8(std::vector<int> dims, float scale, int zero_point) {
  TensorSpec t;
  t.dims = std::move(dims);
  t.scales = {scale};
  t.zero_points = {zero_point};
  return t;
}

OptionEntry IntOption(const char* key, int64_t v) {
  OptionEntry e;
  e.kind = OptionEntry::kInt;
  e.key = key;
  e.int_value = v;
  return e;
}

OptionEntry FloatOption(const char* key, double v) {
  OptionEntry e;
  e.kind = OptionEntry::kFloat;
  e.key = key;
  e.float_value = v;
  return e;
}

OptionEntry VectorOption(const char* key, std::vector<double> v, int width) {
  OptionEntry e;
  e.kind = OptionEntry::kFloatVector;
  e.key = key;
  e.vector = std::move(v);
  e.vector_width = width;
  return e;
}

struct Case {
  int op = kSquash;
  std::vector<OptionEntry> options;
  bool raw_options = false;  // host.options replaced by raw bytes
};

void BuildUnary(fz_input* in, Host* h, Case* c) {
  const int b = fz_int(in, 1, 16), n = fz_int(in, 1, 4096);
  const int d = fz_int(in, 1, CAPS_NN_MAX_CAPS_DIM);
  const float scale = fz_scale(in);
  const int zp = (int8_t)fz_u8(in);
  h->tensors.push_back(Int8({b, n, d}, scale, zp));
  if (c->op == kLength) {
    h->tensors.push_back(Int8({b, n}, 1.0f / 256.0f, CAPS_NN_LENGTH_OUT_ZERO_POINT));
  } else {
    h->tensors.push_back(Int8({b, n, d}, 1.0f / 128.0f, 0));
  }
  h->inputs = {0};
  h->outputs = {1};
  c->options.push_back(IntOption("version", 1));
}

// Weights [N_in, N_out, D_out, D_in]: constant, symmetric, sometimes one
// scale per output capsule; int4 (packed) or int8.
TensorSpec CapsuleWeights(fz_input* in, int n_in, int n_out, int d_out, int d_in, bool int4,
                          uint64_t seed) {
  TensorSpec w = Int8({n_in, n_out, d_out, d_in}, fz_scale(in), 0);
  if (int4) w.type = kTfLiteInt4;
  w.allocation_type = 1;  // constant
  if (fz_u8(in) & 1) {
    // one scale per output capsule, within a factor 4 of the first
    uint64_t s = seed;
    for (int j = 1; j < n_out && j < CAPS_NN_MAX_N_OUT; ++j)
      w.scales.push_back(w.scales[0] * (0.25f + (float)(fz_next(&s) % 1024) / 256.0f));
    w.zero_points.assign(w.scales.size(), 0);
    w.quantized_dimension = 1;
  }
  return w;
}

// Self-attention capsules: u [B, N_in, D_in], W, coupling bias int32
// [N_in, N_out] (constant, Q15, values from a pattern), v [B, N_out, D_out].
void BuildSelfAttention(fz_input* in, Host* h, Case* c, uint64_t seed) {
  const int b = fz_int(in, 1, 8);
  const int n_in = fz_int(in, 1, CAPS_NN_MAX_N_IN), d_in = fz_int(in, 1, CAPS_NN_MAX_DIM_IN);
  const int n_out = fz_int(in, 1, CAPS_NN_MAX_N_OUT);
  const int d_out = fz_int(in, 1, CAPS_NN_MAX_ATTENTION_DIM_OUT);
  const float u_scale = fz_scale(in);
  const int zp = (int8_t)fz_u8(in);
  h->tensors.push_back(Int8({b, n_in, d_in}, u_scale, zp));
  h->tensors.push_back(CapsuleWeights(in, n_in, n_out, d_out, d_in, false, seed));
  TensorSpec bias = Int8({n_in, n_out}, 1.0f / 32768.0f, 0);
  bias.type = kTfLiteInt32;
  bias.allocation_type = 1;
  const int64_t count = n_in > 0 && n_out > 0 ? (int64_t)n_in * n_out : 0;
  const uint8_t mode = fz_u8(in);
  if (count > 0 && count <= (1 << 16) && mode % 4 != 0) {  // else all zero
    uint64_t s = seed | 1u;
    const int32_t top = CAPS_NN_MAX_ATTENTION_BIAS;
    for (int64_t k = 0; k < count; ++k) {
      const uint64_t r = fz_next(&s);
      int32_t v;
      switch (mode % 4) {
        case 1: v = (int32_t)(r % (2u * (uint32_t)top + 1u)) - top; break;
        case 2: v = (k & 1) ? top : -top; break;
        default: v = k == (int64_t)(mode >> 2) ? top + 1 + (int32_t)(r % 4) : (int32_t)(r % 64); break;
      }
      for (int byte = 0; byte < 4; ++byte) bias.data.push_back((uint8_t)((uint32_t)v >> (8 * byte)));
    }
  }
  h->tensors.push_back(bias);
  h->tensors.push_back(Int8({b, n_out, d_out}, 1.0f / 128.0f, 0));
  h->inputs = {0, 1, 2};
  h->outputs = {3};
  c->options.push_back(IntOption("version", 1 + (fz_u8(in) & 1)));
  c->options.push_back(FloatOption("u_hat_scale", fz_scale(in)));
  c->options.push_back(FloatOption("s_scale", fz_scale(in)));
}

void BuildClassCaps(fz_input* in, Host* h, Case* c, uint64_t seed, bool int4) {
  const int b = fz_int(in, 1, 8);
  const int n_in = fz_int(in, 1, CAPS_NN_MAX_N_IN), d_in = fz_int(in, 1, CAPS_NN_MAX_DIM_IN);
  const int n_out = fz_int(in, 1, CAPS_NN_MAX_N_OUT);
  const int d_out = fz_int(in, 1, CAPS_NN_MAX_CAPS_DIM);
  const float u_scale = fz_scale(in);
  const int zp = (int8_t)fz_u8(in);
  h->tensors.push_back(Int8({b, n_in, d_in}, u_scale, zp));
  h->tensors.push_back(CapsuleWeights(in, n_in, n_out, d_out, d_in, int4, seed));
  h->tensors.push_back(Int8({b, n_out, d_out}, 1.0f / 128.0f, 0));
  h->inputs = {0, 1};
  h->outputs = {2};
  const int routings = fz_int(in, 1, CAPS_NN_MAX_ROUTINGS);
  c->options.push_back(IntOption("version", 1));
  c->options.push_back(IntOption("num_routing", routings));
  if (fz_u8(in) & 1) c->options.push_back(IntOption("store_predictions", fz_u8(in) & 1));
  c->options.push_back(FloatOption("u_hat_scale", fz_scale(in)));
  const int width = (fz_u8(in) & 1) ? 8 : 4;
  std::vector<double> s_scales, b_scales;
  for (int r = 0; r < routings && r < 64; ++r) s_scales.push_back(fz_scale(in));
  for (int r = 0; r + 1 < routings && r < 64; ++r) b_scales.push_back(fz_scale(in));
  c->options.push_back(VectorOption("s_scales", s_scales, width));
  if (routings > 1 || (fz_u8(in) & 1)) c->options.push_back(VectorOption("b_scales", b_scales, width));
}

// Raw int32 values for a dim, scale-array size or index: mostly small.
int FuzzDim(fz_input* in) { return fz_int(in, 0, CAPS_NN_MAX_N_IN); }

double FuzzDouble(fz_input* in) {
  const uint8_t sel = fz_u8(in);
  if (sel < 224) return (double)fz_scale(in);
  const uint64_t lo = fz_u32(in), hi = fz_u32(in);
  const uint64_t bits = lo | (hi << 32);
  double d;
  memcpy(&d, &bits, sizeof(d));
  return d;
}

void MutateTensor(fz_input* in, TensorSpec* t) {
  switch (fz_u8(in) % 12) {
    case 0: {  // any type code TFLM may pass (0..31), or raw
      const uint8_t s = fz_u8(in);
      t->type = s < 240 ? (int32_t)(s % 32) : fz_i32(in);
      break;
    }
    case 1: {  // rank
      const int rank = fz_u8(in) % 7;
      t->dims.resize((size_t)rank, 1);
      break;
    }
    case 2:
      if (!t->dims.empty()) t->dims[fz_u8(in) % t->dims.size()] = FuzzDim(in);
      break;
    case 3: t->has_dims = !t->has_dims; break;
    case 4: t->quant_type = t->quant_type ? kTfLiteNoQuantization : kTfLiteAffineQuantization; break;
    case 5: t->has_affine = !t->has_affine; break;
    case 6: {
      const uint8_t s = fz_u8(in);
      if (s < 32) {
        t->has_scale = !t->has_scale;
      } else {
        t->scales.resize((size_t)fz_int(in, 0, CAPS_NN_MAX_N_OUT + 1) & 0x7FF, 1.0f);
      }
      break;
    }
    case 7:
      if (!t->scales.empty()) t->scales[fz_u8(in) % t->scales.size()] = fz_scale(in);
      break;
    case 8: {
      const uint8_t s = fz_u8(in);
      if (s < 32) {
        t->has_zero_point = !t->has_zero_point;
      } else {
        t->zero_points.resize((size_t)fz_int(in, 0, CAPS_NN_MAX_N_OUT + 1) & 0x7FF, 0);
      }
      break;
    }
    case 9:
      if (!t->zero_points.empty())
        t->zero_points[fz_u8(in) % t->zero_points.size()] =
            fz_u8(in) < 200 ? (int8_t)fz_u8(in) : fz_i32(in);
      break;
    case 10: t->quantized_dimension = fz_int(in, 0, 4); break;
    default: t->allocation_type = fz_u8(in) % 5; break;
  }
}

void MutateOptions(fz_input* in, Host* h, Case* c) {
  std::vector<OptionEntry>& o = c->options;
  switch (fz_u8(in) % 8) {
    case 0:
      if (!o.empty()) o.erase(o.begin() + fz_u8(in) % o.size());
      break;
    case 1:
      if (!o.empty()) {  // same key, another kind
        OptionEntry& e = o[fz_u8(in) % o.size()];
        e.kind = static_cast<OptionEntry::Kind>(fz_u8(in) % 4);
        if (e.kind == OptionEntry::kString) e.text = "int8";
        if (e.kind == OptionEntry::kFloatVector && e.vector.empty()) e.vector = {1.0};
      }
      break;
    case 2:
      if (!o.empty()) {  // another value
        OptionEntry& e = o[fz_u8(in) % o.size()];
        const uint8_t s = fz_u8(in);
        e.int_value = s < 128 ? fz_int(in, 0, 16) : (int64_t)fz_i32(in) * (s & 1 ? 1 : 65536);
        e.float_value = FuzzDouble(in);
        if (!e.vector.empty()) e.vector[fz_u8(in) % e.vector.size()] = FuzzDouble(in);
      }
      break;
    case 3:
      if (!o.empty()) {  // vector length
        OptionEntry& e = o[fz_u8(in) % o.size()];
        e.vector.resize((size_t)(fz_u8(in) % 12), 0.5);
      }
      break;
    case 4: {  // a duplicate or unknown key
      OptionEntry e = o.empty() ? IntOption("version", 1) : o[fz_u8(in) % o.size()];
      if (fz_u8(in) & 1) e.key = "extra";
      o.push_back(e);
      break;
    }
    case 5: h->has_options = !h->has_options; break;
    case 6: {  // raw bytes in place of the map
      const size_t n = fz_u8(in);
      h->options.clear();
      for (size_t k = 0; k < n; ++k) h->options.push_back(fz_u8(in));
      c->raw_options = true;
      break;
    }
    default: {  // flip one byte of the encoded map
      c->raw_options = true;
      h->options = fuzz_host::EncodeOptions(o);
      if (!h->options.empty()) h->options[fz_u32(in) % h->options.size()] ^= (uint8_t)(1 + fz_u8(in) % 255);
      break;
    }
  }
}

void MutateNode(fz_input* in, Host* h) {
  std::vector<int>& list = (fz_u8(in) & 1) ? h->inputs : h->outputs;
  switch (fz_u8(in) % 3) {
    case 0: list.resize((size_t)(fz_u8(in) % 5), 0); break;
    case 1:
      if (!list.empty()) {
        const uint8_t s = fz_u8(in);
        list[fz_u8(in) % list.size()] = s < 200 ? (int)(s % 5) - 1 : fz_i32(in);
      }
      break;
    default: list.push_back((int)(fz_u8(in) % 4)); break;
  }
}

// Multiply-adds of an Eval, from the shapes Prepare accepted (saturating
// at 2^40).
int64_t EvalWork(const Host& h, const Case& c) {
  const int64_t kHuge = (int64_t)1 << 40;
  auto mul = [&](int64_t a, int64_t b) -> int64_t {
    if (a <= 0 || b <= 0) return 0;
    return a > kHuge / b ? kHuge : a * b;
  };
  auto elems = [&](int index) -> int64_t {
    if (index < 0 || (size_t)index >= h.tensors.size()) return 0;
    int64_t n = 1;
    for (int d : h.tensors[(size_t)index].dims) n = mul(n, d);
    return n;
  };
  if (h.inputs.empty()) return 0;
  if (c.op != kClassCaps && c.op != kSelfAttention) {  // + a gain or norm per capsule
    if (h.inputs[0] < 0 || (size_t)h.inputs[0] >= h.tensors.size()) return 0;
    const std::vector<int>& x = h.tensors[(size_t)h.inputs[0]].dims;
    const int64_t d = x.empty() ? 1 : x.back();
    return elems(h.inputs[0]) + mul(elems(h.inputs[0]) / (d > 0 ? d : 1), 64);
  }
  if (h.inputs.size() < 2 || h.inputs[0] < 0 || (size_t)h.inputs[0] >= h.tensors.size())
    return 0;
  const std::vector<int>& u = h.tensors[(size_t)h.inputs[0]].dims;
  const int64_t batch = u.empty() ? 1 : u[0];
  int64_t routings = c.op == kSelfAttention ? 2 : CAPS_NN_MAX_ROUTINGS;
  for (const OptionEntry& e : c.options)
    if (!c.raw_options && e.key == "num_routing" && e.kind == OptionEntry::kInt)
      routings = e.int_value;
  // stored or recomputed predictions: at most (1 + routings) passes, and
  // a fixed cost per sample and iteration (tables, softmax setup)
  return mul(batch, mul(elems(h.inputs[1]) + 2048, 2 * (1 + routings)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fz_input in = {data, size, 0};
  const uint64_t seed = fz_hash(data, size);
  Host host;
  Case c;
  // selector: 0..127 the first three operators (decoded as before the
  // Efficient-CapsNet operators and int4 weights, so older reproducers keep
  // their meaning), 128..255 EfficientSquash, SelfAttentionCaps and
  // ClassCaps with int4 W
  const uint8_t sel = fz_u8(&in);
  static const int kNewer[3] = {kEfficientSquash, kSelfAttention, kClassCaps};
  c.op = sel < 128 ? sel % 3 : kNewer[(sel - 128) % 3];
  if (c.op == kClassCaps) {
    BuildClassCaps(&in, &host, &c, seed, sel >= 128);
  } else if (c.op == kSelfAttention) {
    BuildSelfAttention(&in, &host, &c, seed);
  } else {
    BuildUnary(&in, &host, &c);
  }
  for (int m = 0; m < kMaxMutations && in.pos < in.size; ++m) {
    switch (fz_u8(&in) % 5) {
      case 0:
      case 1:
        MutateTensor(&in, &host.tensors[fz_u8(&in) % host.tensors.size()]);
        break;
      case 2: MutateOptions(&in, &host, &c); break;
      case 3: MutateNode(&in, &host); break;
      default: {  // arena faults
        const uint8_t s = fz_u8(&in);
        if (s < 96) {
          host.faults.persistent_fail_at = s % 4;
        } else if (s < 160) {
          host.faults.scratch_request_fails = true;
        } else {
          host.faults.temp_fail_at = s % 4;
        }
        break;
      }
    }
  }
  if (!c.raw_options) host.options = fuzz_host::EncodeOptions(c.options);

  const char* op = kOpNames[c.op];
  const TFLMRegistration* reg = Registration(c.op);
  fuzz_host::ClearErrors();
  const TfLiteStatus prepared = host.Prepare(reg);
  if (host.live_temps() != 0) Fail(op, "Prepare left temp tensors allocated");
  if (Verbose()) {
    fprintf(stderr, "%s: Prepare %s%s\n", op, prepared == kTfLiteOk ? "ok" : "refused: ",
            prepared == kTfLiteOk ? "" : fuzz_host::LastError());
  }
  if (prepared != kTfLiteOk) {
    if (fuzz_host::ErrorCount() == 0) Fail(op, "Prepare failed without a message");
    if (strncmp(fuzz_host::LastError(), op, strlen(op)) != 0)
      Fail(op, "Prepare's message does not name the operator");
    return 0;
  }
  if (fuzz_host::ErrorCount() != 0) Fail(op, "Prepare succeeded but reported an error");
  if (EvalWork(host, c) > kMaxWork) return 0;
  TfLiteStatus evaluated = kTfLiteError;
  if (!host.Eval(reg, seed, kMaxBytes, &evaluated)) return 0;
  if (Verbose()) {
    fprintf(stderr, "%s: Eval status %d (work %lld, scratch %lld)\n", op, (int)evaluated,
            (long long)EvalWork(host, c), (long long)host.scratch_bytes());
    for (const TensorSpec& t : host.tensors) {
      fprintf(stderr, "  tensor type %d dims", (int)t.type);
      for (int d : t.dims) fprintf(stderr, " %d", d);
      fprintf(stderr, "\n");
    }
  }
  if (evaluated != kTfLiteOk) Fail(op, "Eval failed after a successful Prepare");
  if (fuzz_host::ErrorCount() != 0) Fail(op, "Eval reported an error");
  return 0;
}
