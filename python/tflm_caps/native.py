"""ctypes bindings of the host native library (``tflm_caps/_libtflm_caps*.so``).

The library is loaded with RTLD_GLOBAL so that the TFLM op registerers it
also contains are visible to the tflite_micro wheel's ``dlsym``.  The
wrappers call the C kernels directly on numpy arrays, take the parameter
dataclasses of tflm_caps.reference.quant, check shapes and dtypes
(ValueError) and raise NativeError when a kernel returns an error status.
"""
import ctypes
import glob
import os

import numpy as np

from tflm_caps.ops_contract import MAX_ROUTINGS
from tflm_caps.reference import quant as q

STATUS_NAMES = {0: "CAPS_NN_SUCCESS", -1: "CAPS_NN_ARG_ERROR", -2: "CAPS_NN_NO_IMPL_ERROR"}

_i32 = ctypes.c_int32
_P_i8 = ctypes.POINTER(ctypes.c_int8)
_P_i32 = ctypes.POINTER(ctypes.c_int32)
_P_u32 = ctypes.POINTER(ctypes.c_uint32)
_P_f32 = ctypes.POINTER(ctypes.c_float)


class NativeError(RuntimeError):
    """A C kernel returned a non-success caps_nn_status."""


# ----------------------------------------------------------------------------
# C structs (caps_nn_types.h)
# ----------------------------------------------------------------------------

class Context(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("size", _i32)]


class Requant(ctypes.Structure):
    _fields_ = [("multiplier", _i32), ("shift", _i32)]


class CapsDims(ctypes.Structure):
    _fields_ = [("n_caps", _i32), ("dim", _i32)]


class ClassCapsDimsC(ctypes.Structure):
    _fields_ = [("n_in", _i32), ("dim_in", _i32), ("n_out", _i32), ("dim_out", _i32)]


class SquashParamsC(ctypes.Structure):
    _fields_ = [("input_zp", _i32), ("sq_multiplier", _i32), ("sq_exponent", _i32)]


class LengthParamsC(ctypes.Structure):
    _fields_ = [("input_zp", _i32), ("out", Requant)]


class PredictionsParamsC(ctypes.Structure):
    _fields_ = [("input_zp", _i32), ("num_scales", _i32), ("multipliers", _P_i32),
                ("shifts", _P_i32)]


class RoutingParamsC(ctypes.Structure):
    _fields_ = [("n_in", _i32), ("n_out", _i32), ("dim_out", _i32), ("routings", _i32),
                ("s", Requant * MAX_ROUTINGS), ("squash", SquashParamsC * MAX_ROUTINGS),
                ("agree", Requant * (MAX_ROUTINGS - 1)), ("carry", Requant * (MAX_ROUTINGS - 1)),
                ("exp_beta", Requant * (MAX_ROUTINGS - 1))]


class ClassCapsParamsC(ctypes.Structure):
    _fields_ = [("pred", PredictionsParamsC), ("routing", RoutingParamsC)]


class ClassCapsQuantC(ctypes.Structure):
    _fields_ = [("input_scale", ctypes.c_float), ("input_zp", _i32),
                ("weight_scales", _P_f32), ("num_weight_scales", _i32),
                ("uhat_scale", ctypes.c_float), ("routings", _i32),
                ("s_scales", _P_f32), ("b_scales", _P_f32)]


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------

_LIB = None

_SIGNATURES = {
    "caps_nn_version": (_i32, []),
    "caps_quantize_multiplier": (_i32, [ctypes.c_double, _P_i32, _P_i32]),
    "caps_frexp_q31": (_i32, [ctypes.c_double, _P_i32, _P_i32]),
    "caps_squash_params_init": (_i32, [ctypes.c_float, _i32, ctypes.POINTER(SquashParamsC)]),
    "caps_length_params_init": (_i32, [ctypes.c_float, _i32, ctypes.POINTER(LengthParamsC)]),
    "caps_predictions_params_init": (_i32, [ctypes.c_float, _i32, _P_f32, _i32, _i32,
                                            ctypes.c_float, _P_i32, _P_i32,
                                            ctypes.POINTER(PredictionsParamsC)]),
    "caps_routing_params_init": (_i32, [ctypes.POINTER(ClassCapsDimsC), _i32, ctypes.c_float,
                                        _P_f32, _P_f32, ctypes.POINTER(RoutingParamsC)]),
    "caps_class_caps_params_init": (_i32, [ctypes.POINTER(ClassCapsDimsC),
                                           ctypes.POINTER(ClassCapsQuantC), _P_i32, _P_i32,
                                           ctypes.POINTER(ClassCapsParamsC)]),
    "caps_predictions_s8_get_buffer_size": (_i32, [ctypes.POINTER(ClassCapsDimsC)]),
    "caps_dynamic_routing_s8_get_buffer_size": (_i32, [ctypes.POINTER(ClassCapsDimsC)]),
    "caps_class_caps_s8_get_buffer_size": (_i32, [ctypes.POINTER(ClassCapsDimsC), _i32]),
    "caps_squash_s8_get_buffer_size": (_i32, [ctypes.POINTER(CapsDims),
                                              ctypes.POINTER(SquashParamsC)]),
    "caps_squash_s8_table_words": (_i32, [ctypes.POINTER(CapsDims),
                                          ctypes.POINTER(SquashParamsC)]),
    "caps_squash_s8_init_table": (_i32, [ctypes.POINTER(Context), ctypes.POINTER(CapsDims),
                                         ctypes.POINTER(SquashParamsC)]),
    "caps_squash_s8": (_i32, [ctypes.POINTER(Context), ctypes.POINTER(CapsDims),
                              ctypes.POINTER(SquashParamsC), _P_i8, _P_i8]),
    "caps_length_s8": (_i32, [ctypes.POINTER(CapsDims), ctypes.POINTER(LengthParamsC),
                              _P_i8, _P_i8]),
    "caps_predictions_s8": (_i32, [ctypes.POINTER(Context), ctypes.POINTER(ClassCapsDimsC),
                                   ctypes.POINTER(PredictionsParamsC), _P_i8, _P_i8, _P_i8]),
    "caps_dynamic_routing_s8": (_i32, [ctypes.POINTER(Context), ctypes.POINTER(ClassCapsDimsC),
                                       ctypes.POINTER(RoutingParamsC), _P_i8, _P_i8]),
    "caps_class_caps_s8": (_i32, [ctypes.POINTER(Context), ctypes.POINTER(ClassCapsDimsC),
                                  ctypes.POINTER(ClassCapsParamsC), _i32, _P_i8, _P_i8, _P_i8]),
    "caps_predictions_s4_get_buffer_size": (_i32, [ctypes.POINTER(ClassCapsDimsC)]),
    "caps_class_caps_s4_get_buffer_size": (_i32, [ctypes.POINTER(ClassCapsDimsC), _i32]),
    "caps_predictions_s4": (_i32, [ctypes.POINTER(Context), ctypes.POINTER(ClassCapsDimsC),
                                   ctypes.POINTER(PredictionsParamsC), _P_i8, _P_i8, _P_i8]),
    "caps_class_caps_s4": (_i32, [ctypes.POINTER(Context), ctypes.POINTER(ClassCapsDimsC),
                                  ctypes.POINTER(ClassCapsParamsC), _i32, _P_i8, _P_i8, _P_i8]),
    "caps_nn_requantize_export": (_i32, [_i32, _i32, _i32]),
    "caps_nn_isqrt_u64_export": (ctypes.c_uint64, [ctypes.c_uint64]),
    "caps_nn_exp2_neg_q30_export": (ctypes.c_uint32, [_i32]),
    "caps_nn_exp_table_export": (None, [ctypes.POINTER(Requant), _P_u32]),
    "caps_nn_squash_gain_export": (ctypes.c_uint32, [ctypes.c_uint32, _i32, _i32]),
    "caps_nn_squash_table_gain_export": (_i32, [ctypes.c_uint32, _i32, _i32]),
}


def library_path():
    """Path of the host library: $TFLM_CAPS_LIB, else next to this package."""
    env = os.environ.get("TFLM_CAPS_LIB")
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"TFLM_CAPS_LIB points to a missing file: {env}")
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "_libtflm_caps*.so")) +
                   glob.glob(os.path.join(here, "_libtflm_caps*.dylib")))
    if not found:
        raise FileNotFoundError(
            f"tflm-caps native library not found in {here}; build it with "
            "`python3 setup.py build_ext --inplace` (or reinstall the package)")
    return found[0]


def load():
    """Load (once) and return the ctypes library, with prototypes declared."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(library_path(), mode=ctypes.RTLD_GLOBAL)
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        _LIB = lib
    return _LIB


def _ok(status, what):
    if status != 0:
        raise NativeError(f"{what} failed: {STATUS_NAMES.get(status, status)}")


def version():
    return int(load().caps_nn_version())


# ----------------------------------------------------------------------------
# Parameters: Python dataclasses <-> C structs
# ----------------------------------------------------------------------------

def _dims_c(dims):
    dims = q.ClassCapsDims(*dims)
    return ClassCapsDimsC(int(dims.n_in), int(dims.dim_in), int(dims.n_out), int(dims.dim_out))


def _squash_c(p):
    return SquashParamsC(p.input_zp, p.sq_multiplier, p.sq_exponent)


def _squash_py(c):
    return q.SquashParams(int(c.input_zp), int(c.sq_multiplier), int(c.sq_exponent))


class _PredictionsHolder:
    """A PredictionsParamsC with the arrays it points to kept alive."""

    def __init__(self, p):
        self.mult = np.ascontiguousarray(p.multipliers, dtype=np.int32)
        self.shift = np.ascontiguousarray(p.shifts, dtype=np.int32)
        self.c = PredictionsParamsC(p.input_zp, len(self.mult), self.mult.ctypes.data_as(_P_i32),
                                    self.shift.ctypes.data_as(_P_i32))


def _routing_c(p):
    c = RoutingParamsC()
    c.n_in, c.n_out, c.dim_out, c.routings = p.n_in, p.n_out, p.dim_out, p.routings
    if not 1 <= p.routings <= MAX_ROUTINGS:
        raise ValueError(f"routing params: routings must be 1..{MAX_ROUTINGS}, got {p.routings}")
    for r in range(p.routings):
        c.s[r] = Requant(*p.s[r])
        c.squash[r] = _squash_c(p.squash[r])
    for u in range(p.routings - 1):
        c.agree[u] = Requant(*p.agree[u])
        c.carry[u] = Requant(*p.carry[u])
        c.exp_beta[u] = Requant(*p.exp_beta[u])
    return c


def _routing_py(c):
    n = int(c.routings)
    pair = lambda x: (int(x.multiplier), int(x.shift))  # noqa: E731
    return q.RoutingParams(int(c.n_in), int(c.n_out), int(c.dim_out), n,
                           tuple(pair(c.s[r]) for r in range(n)),
                           tuple(_squash_py(c.squash[r]) for r in range(n)),
                           tuple(pair(c.agree[u]) for u in range(n - 1)),
                           tuple(pair(c.carry[u]) for u in range(n - 1)),
                           tuple(pair(c.exp_beta[u]) for u in range(n - 1)))


def quantize_multiplier(real):
    m, s = _i32(), _i32()
    _ok(load().caps_quantize_multiplier(float(real), ctypes.byref(m), ctypes.byref(s)),
        f"caps_quantize_multiplier({real!r})")
    return int(m.value), int(s.value)


def frexp_q31(real):
    m, e = _i32(), _i32()
    _ok(load().caps_frexp_q31(float(real), ctypes.byref(m), ctypes.byref(e)),
        f"caps_frexp_q31({real!r})")
    return int(m.value), int(e.value)


def squash_params(input_scale, input_zp=0):
    """caps_squash_params_init -> reference SquashParams."""
    c = SquashParamsC()
    _ok(load().caps_squash_params_init(float(input_scale), int(input_zp), ctypes.byref(c)),
        "caps_squash_params_init")
    return _squash_py(c)


def length_params(input_scale, input_zp=0):
    """caps_length_params_init -> reference LengthParams."""
    c = LengthParamsC()
    _ok(load().caps_length_params_init(float(input_scale), int(input_zp), ctypes.byref(c)),
        "caps_length_params_init")
    return q.LengthParams(int(c.input_zp), int(c.out.multiplier), int(c.out.shift))


def _f32_array(values):
    return np.ascontiguousarray(np.atleast_1d(np.asarray(values, dtype=np.float32)))


def predictions_params(input_scale, input_zp, w_scales, uhat_scale, n_out):
    """caps_predictions_params_init -> reference PredictionsParams."""
    ws = _f32_array(w_scales)
    mult = np.zeros(ws.size, dtype=np.int32)
    shift = np.zeros(ws.size, dtype=np.int32)
    c = PredictionsParamsC()
    _ok(load().caps_predictions_params_init(
        float(input_scale), int(input_zp), ws.ctypes.data_as(_P_f32), ws.size, int(n_out),
        float(uhat_scale), mult.ctypes.data_as(_P_i32), shift.ctypes.data_as(_P_i32),
        ctypes.byref(c)), "caps_predictions_params_init")
    return q.PredictionsParams(int(c.input_zp), tuple(int(v) for v in mult),
                               tuple(int(v) for v in shift))


def routing_params(dims, uhat_scale, s_scales, b_scales=()):
    """caps_routing_params_init -> reference RoutingParams."""
    ss = _f32_array(s_scales)
    bs = _f32_array(b_scales) if len(np.atleast_1d(b_scales)) else None
    dc = _dims_c(dims)
    c = RoutingParamsC()
    _ok(load().caps_routing_params_init(
        ctypes.byref(dc), ss.size, float(uhat_scale), ss.ctypes.data_as(_P_f32),
        bs.ctypes.data_as(_P_f32) if bs is not None else None, ctypes.byref(c)),
        "caps_routing_params_init")
    return _routing_py(c)


def class_caps_params(dims, quant):
    """caps_class_caps_params_init -> reference ClassCapsParams."""
    ws = _f32_array(quant.weight_scales)
    ss = _f32_array(quant.s_scales)
    bs = _f32_array(quant.b_scales) if len(quant.b_scales) else None
    cq = ClassCapsQuantC(quant.input_scale, quant.input_zero_point, ws.ctypes.data_as(_P_f32),
                         ws.size, quant.uhat_scale, ss.size, ss.ctypes.data_as(_P_f32),
                         bs.ctypes.data_as(_P_f32) if bs is not None else None)
    mult = np.zeros(ws.size, dtype=np.int32)
    shift = np.zeros(ws.size, dtype=np.int32)
    dc = _dims_c(dims)
    c = ClassCapsParamsC()
    _ok(load().caps_class_caps_params_init(ctypes.byref(dc), ctypes.byref(cq),
                                           mult.ctypes.data_as(_P_i32),
                                           shift.ctypes.data_as(_P_i32), ctypes.byref(c)),
        "caps_class_caps_params_init")
    pred = q.PredictionsParams(int(c.pred.input_zp), tuple(int(v) for v in mult),
                               tuple(int(v) for v in shift))
    return q.ClassCapsParams(pred, _routing_py(c.routing))


# ----------------------------------------------------------------------------
# Scratch sizes
# ----------------------------------------------------------------------------

def predictions_buffer_size(dims):
    return int(load().caps_predictions_s8_get_buffer_size(ctypes.byref(_dims_c(dims))))


def routing_buffer_size(dims):
    return int(load().caps_dynamic_routing_s8_get_buffer_size(ctypes.byref(_dims_c(dims))))


def class_caps_buffer_size(dims, store_predictions=True, weight_bits=8):
    fn = load().caps_class_caps_s4_get_buffer_size if weight_bits == 4 else \
        load().caps_class_caps_s8_get_buffer_size
    return int(fn(ctypes.byref(_dims_c(dims)), 1 if store_predictions else 0))


def predictions_s4_buffer_size(dims):
    return int(load().caps_predictions_s4_get_buffer_size(ctypes.byref(_dims_c(dims))))


def _context(size):
    if size < 0:
        raise ValueError("dims outside the kernel limits (buffer size -1)")
    buf = np.zeros(max(int(size), 1), dtype=np.uint8)
    return buf, Context(buf.ctypes.data_as(ctypes.c_void_p), int(size))


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------

def _int8_c(x, what):
    from tflm_caps.reference.int8 import as_int8
    return np.ascontiguousarray(as_int8(x, what))


def _p8(a):
    return a.ctypes.data_as(_P_i8)


def _need(params, cls, what):
    if not isinstance(params, cls):
        raise ValueError(f"{what} must be {cls.__name__}, got {type(params).__name__}")


def squash_buffer_size(dim, params):
    """caps_squash_s8_get_buffer_size: bytes of the gain table for capsules
    of `dim` elements (-1 for invalid dims or params)."""
    _need(params, q.SquashParams, "squash params")
    dims = CapsDims(0, int(dim))
    return int(load().caps_squash_s8_get_buffer_size(ctypes.byref(dims),
                                                      ctypes.byref(_squash_c(params))))


def squash_table(dim, params):
    """The gain table bytes caps_squash_s8_init_table fills for `dim`."""
    size = squash_buffer_size(dim, params)
    if size < 0:
        raise ValueError(f"no squash table for dim {dim} and {params}")
    buf = np.zeros(size, dtype=np.uint8)
    ctx = Context(buf.ctypes.data_as(ctypes.c_void_p), size)
    _ok(load().caps_squash_s8_init_table(ctypes.byref(ctx), ctypes.byref(CapsDims(0, int(dim))),
                                         ctypes.byref(_squash_c(params))),
        "caps_squash_s8_init_table")
    return buf


def squash(x, params, use_table=True, table=None):
    """caps_squash_s8 on int8 capsules [..., D]: with a gain table filled by
    caps_squash_s8_init_table (or the given `table` bytes), else with each
    capsule's gain computed on the fly."""
    _need(params, q.SquashParams, "squash params")
    x = _int8_c(x, "squash input")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"squash input must be [..., D] with D >= 1, got shape {x.shape}")
    out = np.empty_like(x)
    dims = CapsDims(int(x.size // x.shape[-1]), int(x.shape[-1]))
    pc = _squash_c(params)
    ctx = None
    if table is not None or use_table:
        buf = np.ascontiguousarray(table if table is not None else squash_table(dims.dim, params),
                                   dtype=np.uint8)
        ctx = ctypes.byref(Context(buf.ctypes.data_as(ctypes.c_void_p), buf.size))
    _ok(load().caps_squash_s8(ctx, ctypes.byref(dims), ctypes.byref(pc), _p8(x), _p8(out)),
        f"caps_squash_s8(shape {x.shape})")
    return out


def length(x, params):
    """caps_length_s8 on int8 capsules [..., D] -> [...]."""
    _need(params, q.LengthParams, "length params")
    x = _int8_c(x, "length input")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"length input must be [..., D] with D >= 1, got shape {x.shape}")
    out = np.empty(x.shape[:-1], dtype=np.int8)
    dims = CapsDims(int(x.size // x.shape[-1]), int(x.shape[-1]))
    pc = LengthParamsC(params.input_zp, Requant(params.multiplier, params.shift))
    _ok(load().caps_length_s8(ctypes.byref(dims), ctypes.byref(pc), _p8(x), _p8(out)),
        f"caps_length_s8(shape {x.shape})")
    return out


def predictions(u, W, params):
    """caps_predictions_s8: u [N_in, D_in], W [N_in, N_out, D_out, D_in] -> u_hat."""
    _need(params, q.PredictionsParams, "predictions params")
    u = _int8_c(u, "predictions input u")
    W = _int8_c(W, "predictions weights W")
    if u.ndim != 2:
        raise ValueError(f"predictions input u must be one sample [N_in, D_in], got shape {u.shape}")
    dims = q.ClassCapsDims.from_shapes(u.shape, W.shape)
    holder = _PredictionsHolder(params)
    buf, ctx = _context(predictions_buffer_size(dims))
    out = np.empty((dims.n_in, dims.n_out, dims.dim_out), dtype=np.int8)
    dc = _dims_c(dims)
    _ok(load().caps_predictions_s8(ctypes.byref(ctx), ctypes.byref(dc), ctypes.byref(holder.c),
                                   _p8(u), _p8(W), _p8(out)), f"caps_predictions_s8({dims})")
    return out


def _packed_c(W_packed, w_shape):
    """Contiguous int8 view of packed int4 weights of shape w_shape (size checked)."""
    if len(tuple(w_shape)) != 4:
        raise ValueError(f"W must be [N_in, N_out, D_out, D_in], got shape {tuple(w_shape)}")
    raw = np.frombuffer(bytes(W_packed), np.uint8) if isinstance(
        W_packed, (bytes, bytearray, memoryview)) else np.asarray(W_packed)
    from tflm_caps.reference.int8 import unpack_weights_s4
    unpack_weights_s4(raw.reshape(-1).astype(np.uint8), w_shape)  # the layout's checks
    need = q.int4_packed_size(int(np.prod(w_shape, dtype=np.int64)))
    if raw.size != need:
        raise ValueError(f"packed int4 W of shape {tuple(w_shape)} needs {need} bytes, "
                         f"got {raw.size}")
    return np.ascontiguousarray(raw.reshape(-1).astype(np.uint8).view(np.int8))


def predictions_s4(u, W_packed, w_shape, params):
    """caps_predictions_s4: u [N_in, D_in], W packed int4 of shape w_shape -> u_hat."""
    _need(params, q.PredictionsParams, "predictions params")
    u = _int8_c(u, "predictions input u")
    if u.ndim != 2:
        raise ValueError(f"predictions input u must be one sample [N_in, D_in], "
                         f"got shape {u.shape}")
    dims = q.ClassCapsDims.from_shapes(u.shape, w_shape)
    W = _packed_c(W_packed, w_shape)
    holder = _PredictionsHolder(params)
    buf, ctx = _context(predictions_s4_buffer_size(dims))
    out = np.empty((dims.n_in, dims.n_out, dims.dim_out), dtype=np.int8)
    dc = _dims_c(dims)
    _ok(load().caps_predictions_s4(ctypes.byref(ctx), ctypes.byref(dc), ctypes.byref(holder.c),
                                   _p8(u), _p8(W), _p8(out)), f"caps_predictions_s4({dims})")
    return out


def dynamic_routing(u_hat, params):
    """caps_dynamic_routing_s8: u_hat [N_in, N_out, D_out] -> v [N_out, D_out]."""
    _need(params, q.RoutingParams, "routing params")
    u_hat = _int8_c(u_hat, "routing u_hat")
    if u_hat.ndim != 3:
        raise ValueError(f"routing u_hat must be [N_in, N_out, D_out], got shape {u_hat.shape}")
    n_in, n_out, dim_out = u_hat.shape
    dims = q.ClassCapsDims(n_in, 1, n_out, dim_out).check()
    buf, ctx = _context(routing_buffer_size(dims))
    pc = _routing_c(params)
    dc = _dims_c(dims)
    out = np.empty((n_out, dim_out), dtype=np.int8)
    _ok(load().caps_dynamic_routing_s8(ctypes.byref(ctx), ctypes.byref(dc), ctypes.byref(pc),
                                       _p8(u_hat), _p8(out)),
        f"caps_dynamic_routing_s8(u_hat {u_hat.shape}, params for "
        f"[{params.n_in}, {params.n_out}, {params.dim_out}])")
    return out


def _class_caps(u, W, w_shape, params, store_predictions, weight_bits):
    _need(params, q.ClassCapsParams, "class-caps params")
    u = _int8_c(u, "class-caps input u")
    dims = q.ClassCapsDims.from_shapes(u.shape, w_shape)
    if u.ndim not in (2, 3):
        raise ValueError(f"class-caps input u must be [N_in, D_in] or [B, N_in, D_in], got {u.shape}")
    batch = u.reshape(-1, dims.n_in, dims.dim_in)
    holder = _PredictionsHolder(params.pred)
    cp = ClassCapsParamsC(holder.c, _routing_c(params.routing))
    buf, ctx = _context(class_caps_buffer_size(dims, store_predictions, weight_bits))
    dc = _dims_c(dims)
    out = np.empty((batch.shape[0], dims.n_out, dims.dim_out), dtype=np.int8)
    lib = load()
    kernel = lib.caps_class_caps_s4 if weight_bits == 4 else lib.caps_class_caps_s8
    name = "caps_class_caps_s4" if weight_bits == 4 else "caps_class_caps_s8"
    for b in range(batch.shape[0]):
        x = np.ascontiguousarray(batch[b])
        o = out[b]
        _ok(kernel(ctypes.byref(ctx), ctypes.byref(dc), ctypes.byref(cp),
                   1 if store_predictions else 0, _p8(x), _p8(W), _p8(o)),
            f"{name}({dims}, store_predictions={bool(store_predictions)})")
    return out if u.ndim == 3 else out[0]


def class_caps(u, W, params, store_predictions=True):
    """caps_class_caps_s8 for u [N_in, D_in] or a batch [B, N_in, D_in]."""
    W = _int8_c(W, "class-caps weights W")
    return _class_caps(u, W, W.shape, params, store_predictions, 8)


def class_caps_s4(u, W_packed, w_shape, params, store_predictions=True):
    """caps_class_caps_s4: class_caps with W packed as int4 (shape ``w_shape``)."""
    return _class_caps(u, _packed_c(W_packed, w_shape), tuple(w_shape), params,
                       store_predictions, 4)


# ----------------------------------------------------------------------------
# Fixed-point primitives (exported copies, for tests)
# ----------------------------------------------------------------------------

def requantize(x, multiplier, shift):
    lib = load()
    return int(lib.caps_nn_requantize_export(int(x), int(multiplier), int(shift)))


def isqrt_u64(n):
    return int(load().caps_nn_isqrt_u64_export(int(n)))


def exp2_neg_q30(w_q16):
    return int(load().caps_nn_exp2_neg_q30_export(int(w_q16)))


def exp_table(beta_multiplier, beta_shift):
    table = np.zeros(256, dtype=np.uint32)
    beta = Requant(int(beta_multiplier), int(beta_shift))
    load().caps_nn_exp_table_export(ctypes.byref(beta), table.ctypes.data_as(_P_u32))
    return table


def squash_gain(sq, sq_multiplier, sq_exponent):
    return int(load().caps_nn_squash_gain_export(int(sq), int(sq_multiplier), int(sq_exponent)))


def squash_table_gain(sq, sq_multiplier, sq_exponent):
    return int(load().caps_nn_squash_table_gain_export(int(sq), int(sq_multiplier),
                                                       int(sq_exponent)))


# ----------------------------------------------------------------------------
# Efficient-CapsNet: exponential squash and self-attention capsules
# ----------------------------------------------------------------------------

class EfficientSquashParamsC(ctypes.Structure):
    _fields_ = [("input_zp", _i32), ("exp", Requant)]


class SelfAttentionParamsC(ctypes.Structure):
    _fields_ = [("pred", PredictionsParamsC), ("n_in", _i32), ("n_out", _i32),
                ("dim_out", _i32), ("acc_shift", _i32), ("coupling_shift", _i32),
                ("exp_beta", Requant), ("s", Requant), ("squash_exp", Requant)]


class SelfAttentionQuantC(ctypes.Structure):
    _fields_ = [("input_scale", ctypes.c_float), ("input_zp", _i32),
                ("weight_scales", _P_f32), ("num_weight_scales", _i32),
                ("uhat_scale", ctypes.c_float), ("s_scale", ctypes.c_float)]


_P_ESQ = ctypes.POINTER(EfficientSquashParamsC)
_P_SA = ctypes.POINTER(SelfAttentionParamsC)
_P_DIMS = ctypes.POINTER(ClassCapsDimsC)
_SIGNATURES.update({
    "caps_efficient_squash_params_init": (_i32, [ctypes.c_float, _i32, _P_ESQ]),
    "caps_self_attention_params_init": (_i32, [_P_DIMS, ctypes.POINTER(SelfAttentionQuantC),
                                               _P_i32, _P_i32, _P_i32, _P_SA]),
    "caps_efficient_squash_s8_get_buffer_size": (_i32, [ctypes.POINTER(CapsDims), _P_ESQ]),
    "caps_efficient_squash_s8_init_table": (_i32, [ctypes.POINTER(Context),
                                                   ctypes.POINTER(CapsDims), _P_ESQ]),
    "caps_efficient_squash_s8": (_i32, [ctypes.POINTER(Context), ctypes.POINTER(CapsDims),
                                        _P_ESQ, _P_i8, _P_i8]),
    "caps_self_attention_s8_get_buffer_size": (_i32, [_P_DIMS]),
    "caps_self_attention_s8": (_i32, [ctypes.POINTER(Context), _P_DIMS, _P_SA, _P_i8, _P_i8,
                                      _P_i32, _P_i8]),
    "caps_nn_efficient_squash_gain_export": (ctypes.c_uint32, [ctypes.c_uint32, _i32, _i32]),
    "caps_nn_inv_sqrt_q30_export": (ctypes.c_uint32, [ctypes.c_uint32]),
})


def _efficient_squash_c(p):
    return EfficientSquashParamsC(p.input_zp, Requant(p.exp_multiplier, p.exp_shift))


def _efficient_squash_py(c):
    return q.EfficientSquashParams(int(c.input_zp), int(c.exp.multiplier), int(c.exp.shift))


def efficient_squash_params(input_scale, input_zp=0):
    """caps_efficient_squash_params_init -> reference EfficientSquashParams."""
    c = EfficientSquashParamsC()
    _ok(load().caps_efficient_squash_params_init(float(input_scale), int(input_zp),
                                                 ctypes.byref(c)),
        "caps_efficient_squash_params_init")
    return _efficient_squash_py(c)


def _bias_c(bias, n_in, n_out):
    b = np.asarray(bias)
    if b.shape != (n_in, n_out) or not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"self-attention bias must be integer [N_in, N_out] = [{n_in}, {n_out}], "
                         f"got {b.dtype} {b.shape}")
    if b.size and (b.min() < -(1 << 31) or b.max() >= 1 << 31):
        raise ValueError("self-attention bias has values outside int32")
    return np.ascontiguousarray(b, dtype=np.int32)


def self_attention_params(dims, quant, bias):
    """caps_self_attention_params_init -> reference SelfAttentionParams."""
    dims = q.ClassCapsDims(*dims)
    ws = _f32_array(quant.weight_scales)
    cq = SelfAttentionQuantC(quant.input_scale, quant.input_zero_point,
                             ws.ctypes.data_as(_P_f32), ws.size, quant.uhat_scale, quant.s_scale)
    b = _bias_c(bias, dims.n_in, dims.n_out)
    mult = np.zeros(ws.size, dtype=np.int32)
    shift = np.zeros(ws.size, dtype=np.int32)
    dc = _dims_c(dims)
    c = SelfAttentionParamsC()
    _ok(load().caps_self_attention_params_init(
        ctypes.byref(dc), ctypes.byref(cq), b.ctypes.data_as(_P_i32),
        mult.ctypes.data_as(_P_i32), shift.ctypes.data_as(_P_i32), ctypes.byref(c)),
        "caps_self_attention_params_init")
    pred = q.PredictionsParams(int(c.pred.input_zp), tuple(int(v) for v in mult),
                               tuple(int(v) for v in shift))
    pair = lambda x: (int(x.multiplier), int(x.shift))  # noqa: E731
    return q.SelfAttentionParams(pred, int(c.n_in), int(c.n_out), int(c.dim_out),
                                 int(c.acc_shift), int(c.coupling_shift), pair(c.exp_beta),
                                 pair(c.s), pair(c.squash_exp))


def _self_attention_c(p):
    holder = _PredictionsHolder(p.pred)
    c = SelfAttentionParamsC(holder.c, p.n_in, p.n_out, p.dim_out, p.acc_shift,
                             p.coupling_shift, Requant(*p.exp_beta), Requant(*p.s),
                             Requant(*p.squash_exp))
    return holder, c


def efficient_squash_buffer_size(dim, params):
    """caps_efficient_squash_s8_get_buffer_size: bytes of the gain table (-1 if invalid)."""
    _need(params, q.EfficientSquashParams, "efficient squash params")
    dims = CapsDims(0, int(dim))
    return int(load().caps_efficient_squash_s8_get_buffer_size(
        ctypes.byref(dims), ctypes.byref(_efficient_squash_c(params))))


def efficient_squash_table(dim, params):
    """The gain table bytes caps_efficient_squash_s8_init_table fills for `dim`."""
    size = efficient_squash_buffer_size(dim, params)
    if size < 0:
        raise ValueError(f"no efficient squash table for dim {dim} and {params}")
    buf = np.zeros(size, dtype=np.uint8)
    ctx = Context(buf.ctypes.data_as(ctypes.c_void_p), size)
    _ok(load().caps_efficient_squash_s8_init_table(
        ctypes.byref(ctx), ctypes.byref(CapsDims(0, int(dim))),
        ctypes.byref(_efficient_squash_c(params))), "caps_efficient_squash_s8_init_table")
    return buf


def efficient_squash(x, params, use_table=True, table=None):
    """caps_efficient_squash_s8 on int8 capsules [..., D] (with a gain table
    filled by caps_efficient_squash_s8_init_table, the given `table` bytes,
    or each capsule's gain computed on the fly)."""
    _need(params, q.EfficientSquashParams, "efficient squash params")
    x = _int8_c(x, "efficient squash input")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"efficient squash input must be [..., D] with D >= 1, got shape "
                         f"{x.shape}")
    out = np.empty_like(x)
    dims = CapsDims(int(x.size // x.shape[-1]), int(x.shape[-1]))
    ctx = None
    if table is not None or use_table:
        buf = np.ascontiguousarray(
            table if table is not None else efficient_squash_table(dims.dim, params),
            dtype=np.uint8)
        ctx = ctypes.byref(Context(buf.ctypes.data_as(ctypes.c_void_p), buf.size))
    _ok(load().caps_efficient_squash_s8(ctx, ctypes.byref(dims),
                                        ctypes.byref(_efficient_squash_c(params)), _p8(x),
                                        _p8(out)),
        f"caps_efficient_squash_s8(shape {x.shape})")
    return out


def self_attention_buffer_size(dims):
    return int(load().caps_self_attention_s8_get_buffer_size(ctypes.byref(_dims_c(dims))))


def self_attention(u, W, bias, params, scratch_size=None):
    """caps_self_attention_s8 for u [N_in, D_in] or a batch [B, N_in, D_in];
    bias int32 [N_in, N_out] (Q15).  scratch_size: bytes given to the kernel
    (default: its buffer size)."""
    _need(params, q.SelfAttentionParams, "self-attention params")
    u = _int8_c(u, "self-attention input u")
    W = _int8_c(W, "self-attention weights W")
    if u.ndim not in (2, 3):
        raise ValueError(f"self-attention input u must be [N_in, D_in] or [B, N_in, D_in], "
                         f"got {u.shape}")
    dims = q.ClassCapsDims.from_shapes(u.shape, W.shape)
    b = _bias_c(bias, dims.n_in, dims.n_out)
    holder, pc = _self_attention_c(params)
    size = self_attention_buffer_size(dims) if scratch_size is None else int(scratch_size)
    buf, ctx = _context(size)
    dc = _dims_c(dims)
    batch = u.reshape(-1, dims.n_in, dims.dim_in)
    out = np.empty((batch.shape[0], dims.n_out, dims.dim_out), dtype=np.int8)
    lib = load()
    for k in range(batch.shape[0]):
        x = np.ascontiguousarray(batch[k])
        o = out[k]
        _ok(lib.caps_self_attention_s8(ctypes.byref(ctx), ctypes.byref(dc), ctypes.byref(pc),
                                       _p8(x), _p8(W), b.ctypes.data_as(_P_i32), _p8(o)),
            f"caps_self_attention_s8({dims})")
    return out if u.ndim == 3 else out[0]


def efficient_squash_gain(sq, exp_multiplier, exp_shift):
    return int(load().caps_nn_efficient_squash_gain_export(int(sq), int(exp_multiplier),
                                                           int(exp_shift)))


def inv_sqrt_q30(n):
    return int(load().caps_nn_inv_sqrt_q30_export(int(n)))
