/*
 * Adapter that performs TFLM's MicroMutableOpResolver::AddCustom on the
 * pinned wheel's tflite::PythonOpsResolver, whose memory layout is stated in
 * tflm_host_abi.h (AddCustom itself is an inline template there and not
 * exported).  tflm_caps::AddCapsOps() works with it like with a firmware's
 * resolver.
 */
#ifndef TFLM_CAPS_HOST_CAPS_HOST_RESOLVER_H
#define TFLM_CAPS_HOST_CAPS_HOST_RESOLVER_H

#include <string.h>

#include "host/tflm_host_abi.h"

extern "C" void TFLMCaps_HostRecordError(const char* message);

namespace tflm_caps_host {

class HostOpResolver {
 public:
  explicit HostOpResolver(void* resolver) : base_(static_cast<unsigned char*>(resolver)) {}

  unsigned count() const {
    unsigned n;
    memcpy(&n, base_ + kResolverCountOffset, sizeof(n));
    return n;
  }

  // Cheap consistency check of the layout assumption before writing into
  // the resolver: a sane count and well-formed registrations below it.
  bool LayoutLooksValid() const {
    if (base_ == nullptr) return false;
    const unsigned n = count();
    if (n > kResolverCapacity) return false;
    for (unsigned i = 0; i < n; ++i) {
      const TFLMRegistration& r = registrations()[i];
      if (r.invoke == nullptr || r.builtin_code < 0 || r.builtin_code > 1024) return false;
      if (r.builtin_code == kBuiltinOperatorCustom && r.custom_name == nullptr) return false;
    }
    return true;
  }

  // Same contract as MicroMutableOpResolver::AddCustom: copies the
  // registration, keeps the name pointer (it must outlive the resolver).
  TfLiteStatus AddCustom(const char* name, const TFLMRegistration* registration) {
    const unsigned n = count();
    if (n >= kResolverCapacity) {
      TFLMCaps_HostRecordError("tflm-caps: the wheel's op resolver is full, cannot add ops");
      return kTfLiteError;
    }
    for (unsigned i = 0; i < n; ++i) {
      const TFLMRegistration& r = registrations()[i];
      if (r.builtin_code == kBuiltinOperatorCustom && strcmp(r.custom_name, name) == 0) {
        TFLMCaps_HostRecordError("tflm-caps: custom op registered twice with the same resolver");
        return kTfLiteError;
      }
    }
    TFLMRegistration* slot = registrations() + n;
    *slot = *registration;
    slot->builtin_code = kBuiltinOperatorCustom;
    slot->custom_name = name;
    const unsigned next = n + 1;
    memcpy(base_ + kResolverCountOffset, &next, sizeof(next));
    return kTfLiteOk;
  }

 private:
  TFLMRegistration* registrations() const {
    return reinterpret_cast<TFLMRegistration*>(base_ + kResolverRegistrationsOffset);
  }
  unsigned char* base_;
};

}  // namespace tflm_caps_host

#endif /* TFLM_CAPS_HOST_CAPS_HOST_RESOLVER_H */
