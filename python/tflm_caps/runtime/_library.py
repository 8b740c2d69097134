"""The host library's TFLM entry points (ctypes), loaded with RTLD_GLOBAL.

The tflite_micro wheel finds op registerers with dlsym(RTLD_DEFAULT), so
the library must be loaded globally before an interpreter is created;
tflm_caps.native.load() does that.  This module adds the prototypes of the
entry points in tflm_caps_ops/host/.
"""
import ctypes

from tflm_caps.ops_contract import CUSTOM_OPS

REGISTERER = "TFLMCaps_RegisterOps"
PROBE_REGISTERER = "TFLMCaps_RegisterAbiProbe"

# Custom ops provided by REGISTERER (docs/custom_ops.md).
PROVIDED_OPS = CUSTOM_OPS

_PROTOTYPES = {
    "TFLMCaps_LastError": (ctypes.c_char_p, []),
    "TFLMCaps_ClearLastError": (None, []),
    "TFLMCaps_HostResolverCountSeen": (ctypes.c_uint, []),
    "TFLMCaps_RegisterOps": (ctypes.c_bool, [ctypes.c_void_p]),
    "TFLMCaps_RegisterAbiProbe": (ctypes.c_bool, [ctypes.c_void_p]),
    "TFLMCaps_AbiProbeReset": (None, []),
    "TFLMCaps_AbiProbeReportSize": (ctypes.c_int32, []),
    "TFLMCaps_FlexbufMapInt": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_size_t,
                                                ctypes.c_char_p,
                                                ctypes.POINTER(ctypes.c_int64)]),
    "TFLMCaps_FlexbufMapNumber": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_size_t,
                                                   ctypes.c_char_p, ctypes.c_int32,
                                                   ctypes.POINTER(ctypes.c_double)]),
    "TFLMCaps_FlexbufMapVectorSize": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_size_t,
                                                       ctypes.c_char_p,
                                                       ctypes.POINTER(ctypes.c_int32)]),
}

_LIB = None


class AbiProbeReport(ctypes.Structure):
    """TFLMCapsAbiProbeReport (host/caps_abi_probe_op.cc)."""
    _fields_ = [
        ("init_calls", ctypes.c_int32), ("prepare_calls", ctypes.c_int32),
        ("invoke_calls", ctypes.c_int32), ("x_type", ctypes.c_int32),
        ("x_rank", ctypes.c_int32), ("x_dims", ctypes.c_int32 * 4),
        ("x_bytes", ctypes.c_int32), ("x_params_scale", ctypes.c_float),
        ("x_params_zero_point", ctypes.c_int32), ("x_affine_count", ctypes.c_int32),
        ("x_affine_scale", ctypes.c_float), ("x_affine_zero_point", ctypes.c_int32),
        ("x_allocation_type", ctypes.c_int32), ("c_allocation_type", ctypes.c_int32),
        ("out_params_scale", ctypes.c_float), ("out_params_zero_point", ctypes.c_int32),
        ("options_size", ctypes.c_int32), ("add", ctypes.c_int64), ("gain", ctypes.c_double),
        ("scratch_ok", ctypes.c_int32), ("persistent_ok", ctypes.c_int32),
        ("eval_dims_match", ctypes.c_int32),
    ]


def load_library():
    """The host library (loaded once, globally), with prototypes declared."""
    global _LIB
    if _LIB is None:
        from tflm_caps import native

        lib = native.load()
        # Promote to RTLD_GLOBAL even if another loader opened it first.
        ctypes.CDLL(native.library_path(), mode=ctypes.RTLD_GLOBAL)
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        lib.TFLMCaps_AbiProbeReport.restype = None
        lib.TFLMCaps_AbiProbeReport.argtypes = [ctypes.POINTER(AbiProbeReport)]
        _LIB = lib
    return _LIB


def last_error():
    """Messages the operators reported since the last clear_error()."""
    raw = load_library().TFLMCaps_LastError()
    return raw.decode("utf-8", errors="replace") if raw else ""


def clear_error():
    load_library().TFLMCaps_ClearLastError()


def probe_report():
    """What the canary op TFLMCaps_AbiProbe observed (AbiProbeReport)."""
    lib = load_library()
    if lib.TFLMCaps_AbiProbeReportSize() != ctypes.sizeof(AbiProbeReport):
        raise RuntimeError("TFLMCapsAbiProbeReport layout differs between C and Python")
    report = AbiProbeReport()
    lib.TFLMCaps_AbiProbeReport(ctypes.byref(report))
    return report
