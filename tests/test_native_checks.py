"""Inputs the native fuzzers (tests/fuzz) found misbehaving, kept as
regression tests on every kernel backend:

- layers whose scratch or weights do not fit int32 passed the dims check
  and a scratch size of -1 compared as enough, so the kernels wrote past
  a 64-byte scratch (tests/c/size_limits_main.c, ASan);
- extreme but finite routing scales overflowed a signed shift in the
  optimized backends' requantization set-up (UBSan);
- squash exponents far outside what frexp returns overflowed the gain
  arithmetic (UBSan);
- the same statuses through the host library (ctypes).

The drivers are built with gcc under AddressSanitizer + UBSan with each
backend (portable, Cortex-M and RISC-V C code, compiled for the host).
"""
import ctypes
import glob
import os
import shutil
import subprocess

import numpy as np
import pytest

from tflm_caps import native
from tflm_caps.reference import quant as q
from tflm_caps.baremetal import vectors as V
from tflm_caps.baremetal.build import HARNESS_DIR
from support.toolchains import require_tools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = os.path.join(ROOT, "tflm_caps_ops")
INCLUDE = os.path.join(OPS, "include")
BACKENDS = {"portable": (), "cortex_m": (), "riscv": ("-DCAPS_NN_NUM_CORES=8",)}
SANITIZE = ["-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all"]
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _sources(backend):
    return (sorted(glob.glob(os.path.join(OPS, "src", "common", "*.c"))) +
            sorted(glob.glob(os.path.join(OPS, "src", backend, "*.c"))))


def _build(driver, backend, out):
    require_tools("gcc")
    cmd = ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", *SANITIZE, "-I", INCLUDE,
           "-I", str(HARNESS_DIR / "common"),
           *BACKENDS[backend], os.path.join(ROOT, "tests", "c", driver), *_sources(backend),
           "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return str(out)


def _clean(res):
    assert "runtime error" not in res.stderr and "Sanitizer" not in res.stderr, \
        res.stderr[-4000:]


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def vectors_driver(backend, tmp_path_factory):
    return _build("kernel_vectors_main.c", backend,
                  tmp_path_factory.mktemp(f"vec-{backend}") / "kernel_vectors")


def _run_vectors(exe, cases, tmp_path):
    vin, vout = str(tmp_path / "in.bin"), str(tmp_path / "out.bin")
    V.write_vectors(vin, cases)
    res = subprocess.run([exe, vin, vout, "3"], capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    _clean(res)
    return V.read_outputs(vout, cases)


def test_sizes_beyond_int32_are_refused_without_touching_buffers(backend, tmp_path):
    exe = _build("size_limits_main.c", backend, tmp_path / "size_limits")
    res = subprocess.run([exe], capture_output=True, text=True, env=ENV, timeout=120)
    _clean(res)
    assert res.returncode == 0 and "0 failure(s)" in res.stdout, res.stdout + res.stderr[-4000:]


def test_extreme_routing_scales_run_clean_and_bit_exact(vectors_driver, tmp_path):
    """u_hat scale 1, logit scales 2^23 and 2^-34: the second logit update
    has a carry shift of 30 and an agreement shift of 28."""
    rng = np.random.default_rng(17)
    cases = []
    for n_in, dim_in, n_out, dim_out in ((4, 3, 2, 8), (9, 2, 3, 16), (300, 1, 2, 5)):
        quant = q.ClassCapsQuant(1.0 / 128, 0, [0.02] * n_out, 1.0, [0.1, 0.2, 0.3],
                                 [2.0 ** 23, 2.0 ** -34])
        params = q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)
        assert params.routing.carry[1][1] == 30 and params.routing.agree[1][1] == 28
        for fill in (None, 127, -128):
            u = (rng.integers(-128, 128, (n_in, dim_in)) if fill is None
                 else np.full((n_in, dim_in), fill)).astype(np.int8)
            W = (rng.integers(-128, 128, (n_in, n_out, dim_out, dim_in)) if fill is None
                 else np.full((n_in, n_out, dim_out, dim_in), fill)).astype(np.int8)
            cases.append(("class_caps", u, W, params, V.ALL_CLASS_CAPS))
    for calls, case in zip(_run_vectors(vectors_driver, cases, tmp_path), cases):
        for (status, got), want in zip(calls, V.expected_outputs(case)):
            assert status == 0
            np.testing.assert_array_equal(got, want)


def test_squash_exponent_outside_frexp_range_is_refused(vectors_driver, tmp_path):
    x = np.array([[1, -2, 3, -4], [127, -128, 127, -128]], np.int8)
    refused = (INT32_MIN, INT32_MIN + 1, -1022, 1026, INT32_MAX)
    edges = (-1021, 1025, -62, 62, 0)
    cases = [("squash", x, q.SquashParams(0, 1 << 30, e)) for e in refused + edges]
    outputs = _run_vectors(vectors_driver, cases, tmp_path)
    for (calls, case), e in zip(zip(outputs, cases), refused + edges):
        statuses = [status for status, _ in calls]
        if e in refused:
            assert statuses == [-1, -1], e
        else:
            assert statuses == [0, 0], e
            for (_, got), want in zip(calls, V.expected_outputs(case)):
                np.testing.assert_array_equal(got, want, err_msg=str(e))


# ---- the same statuses through the host library --------------------------

def _lib():
    lib = native.load()
    lib.caps_class_caps_dims_check.restype = ctypes.c_int32
    lib.caps_class_caps_dims_check.argtypes = [ctypes.POINTER(native.ClassCapsDimsC)]
    lib.caps_squash_params_check.restype = ctypes.c_int32
    lib.caps_squash_params_check.argtypes = [ctypes.POINTER(native.SquashParamsC)]
    return lib


@pytest.mark.parametrize("dims", [(1048500, 1, 1024, 1), (1048576, 1, 1024, 1),
                                  (1048576, 16384, 1, 1), (65536, 16384, 2, 1)])
def test_host_library_refuses_layers_beyond_int32(dims):
    lib = _lib()
    d = native.ClassCapsDimsC(*dims)
    assert lib.caps_class_caps_dims_check(ctypes.byref(d)) == -1
    for store in (0, 1):
        assert lib.caps_class_caps_s8_get_buffer_size(ctypes.byref(d), store) == -1
    assert lib.caps_predictions_s8_get_buffer_size(ctypes.byref(d)) == -1
    assert lib.caps_dynamic_routing_s8_get_buffer_size(ctypes.byref(d)) == -1
    # a 64-byte scratch is not "at least -1 bytes"
    scratch = (ctypes.c_uint8 * 64)()
    ctx = native.Context(ctypes.cast(scratch, ctypes.c_void_p), 64)
    params = q.class_caps_params((4, 1, 2, 1), q.ClassCapsQuant(0.1, 0, [0.1], 0.1, [0.1]))
    holder = native._PredictionsHolder(params.pred)
    tiny = np.zeros(64, np.int8)
    ptr = tiny.ctypes.data_as(native._P_i8)
    assert lib.caps_predictions_s8(ctypes.byref(ctx), ctypes.byref(d), ctypes.byref(holder.c),
                                   ptr, ptr, ptr) == -1


@pytest.mark.parametrize("exponent,status", [(INT32_MIN, -1), (INT32_MIN + 1, -1), (-1022, -1),
                                             (-1021, 0), (1025, 0), (1026, -1),
                                             (INT32_MAX, -1)])
def test_host_library_bounds_the_squash_exponent(exponent, status):
    p = native.SquashParamsC(0, 1 << 30, exponent)
    assert _lib().caps_squash_params_check(ctypes.byref(p)) == status


def test_squash_params_from_any_float_scale_pass_the_check():
    """The bound covers every exponent a float32 scale can produce."""
    lib = _lib()
    for scale in (1.4e-45, 1e-38, 1e-10, 1.0, 3e38, 3.4028234663852886e38):
        p = native.SquashParamsC()
        assert lib.caps_squash_params_init(ctypes.c_float(scale), 0, ctypes.byref(p)) == 0
        assert lib.caps_squash_params_check(ctypes.byref(p)) == 0, scale
