/*
 * Entry points of the host library for the pinned tflite-micro wheel.
 *
 * The wheel looks registerers up by name with dlsym(RTLD_DEFAULT) (load
 * the library with RTLD_GLOBAL first) and calls them as
 * bool fn(tflite::PythonOpsResolver*), expecting true on success:
 *   tflite_micro.runtime.Interpreter.from_bytes(
 *       model, custom_op_registerers=["TFLMCaps_RegisterOps"], ...)
 *
 * Operator errors are printed to stderr (as MicroPrintf would) and kept
 * here, because the wheel only raises a generic RuntimeError; the Python
 * runtime (tflm_caps.runtime) reads them with TFLMCaps_LastError().
 */
#include <stdio.h>
#include <string.h>

#include "host/caps_host_resolver.h"
#include "tflm/caps_ops.h"

namespace {

char g_last_error[4096];
size_t g_last_error_len = 0;
unsigned g_resolver_count_seen = 0;

}  // namespace

extern "C" {

void TFLMCaps_HostRecordError(const char* message) {
  fprintf(stderr, "%s\n", message);
  // Keep every message since the last clear, one per line (truncated).
  const size_t room = sizeof(g_last_error) - 1 - g_last_error_len;
  if (room < 2) return;
  size_t n = strlen(message);
  if (g_last_error_len > 0) {
    g_last_error[g_last_error_len++] = '\n';
  }
  const size_t left = sizeof(g_last_error) - 1 - g_last_error_len;
  if (n > left) n = left;
  memcpy(g_last_error + g_last_error_len, message, n);
  g_last_error_len += n;
  g_last_error[g_last_error_len] = 0;
}

const char* TFLMCaps_LastError(void) { return g_last_error; }

void TFLMCaps_ClearLastError(void) {
  g_last_error[0] = 0;
  g_last_error_len = 0;
}

// Registration count found in the last resolver handed to a registerer
// (the wheel's builtins), for the interface canary.
unsigned TFLMCaps_HostResolverCountSeen(void) { return g_resolver_count_seen; }

// Registers the capsule operators (tflm_caps::AddCapsOps).
bool TFLMCaps_RegisterOps(void* resolver) {
  tflm_caps_host::HostOpResolver adapter(resolver);
  if (!adapter.LayoutLooksValid()) {
    TFLMCaps_HostRecordError(
        "tflm-caps: the op resolver handed over by tflite-micro does not have the layout of "
        "the pinned wheel (tflite-micro==0.dev20261023182759); the host library cannot "
        "register its operators with this build");
    return false;
  }
  g_resolver_count_seen = adapter.count();
  return tflm_caps::AddCapsOps(adapter) == tflm_caps_host::kTfLiteOk;
}

}  // extern "C"
