"""The C kernels under AddressSanitizer + UndefinedBehaviorSanitizer, and
warning-free builds for the host and both MCU targets.

tests/c/kernel_vectors_main.c runs kernel calls from a vector file, with
every buffer (scratch included) an exact-size heap block, aligned or
deliberately misaligned; any sanitizer report aborts it.  The outputs must
also equal the numpy reference.
"""
import os
import subprocess

import numpy as np
import pytest
from support.kernel_cases import random_self_attention
from support.toolchains import require_tools

from tflm_caps import ops_sources
from tflm_caps.baremetal import cases as B
from tflm_caps.baremetal import vectors as V
from tflm_caps.baremetal.build import HARNESS_DIR
from tflm_caps.reference import float_ref
from tflm_caps.reference import quant as q

OPS = ops_sources()
INCLUDE = str(OPS / "include")
COMMON = sorted(str(p) for p in (OPS / "src" / "common").glob("*.c"))
PORTABLE = sorted(str(p) for p in (OPS / "src" / "portable").glob("*.c"))
# the portable library: src/common without the optimized backends' fast math
PORTABLE_LIB = [p for p in COMMON if os.path.basename(p) != "caps_nn_backend_math.c"] + PORTABLE
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", "kernel_vectors_main.c")
WARN = ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Wshadow", "-Werror"]

TARGETS = {
    "host": ["gcc"],
    "cortex-m4": ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                  "-mfpu=fpv4-sp-d16"],
    "cortex-m0": ["arm-none-eabi-gcc", "-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"],
    "rv32imac": ["riscv64-unknown-elf-gcc", "--specs=picolibc.specs", "-march=rv32imac",
                 "-mabi=ilp32"],
}


@pytest.fixture(scope="session")
def sanitized_driver(tmp_path_factory):
    require_tools("gcc")
    exe = str(tmp_path_factory.mktemp("asan") / "kernel_vectors")
    cmd = ["gcc", *WARN, "-g", "-O1", "-fno-omit-frame-pointer",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-I", INCLUDE,
           "-I", str(HARNESS_DIR / "common"), DRIVER, *PORTABLE_LIB, "-o", exe]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return exe


def _run(exe, cases, tmp_path, offset):
    vin, vout = str(tmp_path / "in.bin"), str(tmp_path / f"out{offset}.bin")
    V.write_vectors(vin, cases)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    res = subprocess.run([exe, vin, vout, str(offset)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0 and "runtime error" not in res.stderr and \
        "Sanitizer" not in res.stderr, res.stderr[-4000:]
    return V.read_outputs(vout, cases)


def _check(outputs, cases):
    for k, (calls, case) in enumerate(zip(outputs, cases)):
        for (status, got), expect in zip(calls, V.expected_outputs(case)):
            assert status == 0, f"case {k} ({case[0]}): status {status}"
            np.testing.assert_array_equal(got, expect, err_msg=f"case {k} ({case[0]})")


def _edge_caps_cases():
    cases = []
    for dim in (1, 3, 4, 7, 16384):
        x = np.stack([np.full(dim, -128), np.full(dim, 127), np.zeros(dim),
                      np.resize([127, -128], dim)]).astype(np.int8)
        for scale, zp in ((1.0 / 128, 0), (1e-6, -128), (1e3, 127), (1e-30, 127), (3e38, -128)):
            cases.append(("squash", x, q.squash_params(scale, zp)))
            cases.append(("length", x, q.length_params(scale, zp)))
    cases.append(("squash", np.zeros((0, 5), np.int8), q.squash_params(0.1, 0)))
    return cases


def _edge_layer_cases():
    rng = np.random.default_rng(0)
    cases = []
    shapes = [(1, 1, 1, 1), (1, 3, 2, 5), (9, 5, 4, 6), (300, 7, 3, 9), (2049, 2, 2, 3)]
    for n_in, dim_in, n_out, dim_out in shapes:
        for zp, fill, w_fill in ((-128, 127, -128), (127, -128, -128), (127, 127, 127),
                                 (0, None, None)):
            u = (np.full((n_in, dim_in), fill) if fill is not None
                 else rng.integers(-128, 128, (n_in, dim_in))).astype(np.int8)
            W = (np.full((n_in, n_out, dim_out, dim_in), w_fill) if w_fill is not None
                 else rng.integers(-128, 128, (n_in, n_out, dim_out, dim_in))).astype(np.int8)
            for routings, tiny in ((1, False), (3, True), (5, False)):
                s = 1e-4 if tiny else 10.0
                quant = q.ClassCapsQuant(1.0 if tiny else 0.01, zp, [1.0] * n_out,
                                         1e-4 if tiny else 1.0, [s] * routings,
                                         [1e-4 if tiny else 0.5] * (routings - 1))
                params = q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)
                cases.append(("class_caps", u, W, params, V.ALL_CLASS_CAPS))
    return cases


def _realistic_layer_cases():
    rng = np.random.default_rng(1)
    cases = []
    for n_in, dim_in, n_out, dim_out, routings in ((128, 4, 10, 4, 3), (64, 4, 10, 5, 5),
                                                    (33, 8, 7, 16, 2)):
        u = float_ref.squash(rng.normal(size=(2, n_in, dim_in)))
        W = rng.normal(size=(n_in, n_out, dim_out, dim_in)) / np.sqrt(dim_in)
        quant = q.calibrate_class_caps(u, W, routings, 1.0 / 128, 0)
        params = q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)
        cases.append(("class_caps", q.quantize(u[0], 1.0 / 128),
                      q.quantize_weights(W, quant.weight_scales), params, V.ALL_CLASS_CAPS))
    return cases


def _int4_layer_cases():
    """Packed int4 weights (a block of exactly the packed size) over every
    kernel path: dim_in 4 with even dim_out, 8, 16, odd dims, N_out > 32."""
    rng = np.random.default_rng(2)
    cases = []
    for n_in, dim_in, n_out, dim_out, zp in ((37, 4, 10, 6, 0), (9, 8, 3, 16, -3),
                                             (5, 16, 2, 3, 5), (11, 3, 4, 5, 0),
                                             (3, 2, 40, 1, 7), (300, 4, 3, 2, 0)):
        u = rng.integers(-128, 128, (n_in, dim_in)).astype(np.int8)
        W = rng.integers(-8, 8, (n_in, n_out, dim_out, dim_in)).astype(np.int8)
        quant = q.ClassCapsQuant(0.01, zp, list(rng.uniform(0.05, 0.2, n_out)), 0.3,
                                 [0.05, 0.1, 0.1], [0.5, 0.5])
        params = q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)
        cases.append(("class_caps", u, W, params, V.ALL_CLASS_CAPS | V.F_INT4))
    return cases


def _efficient_cases():
    """Efficient-CapsNet ops: exponential squash at edge inputs, scales and
    dims (D up to 16384, zero capsules), self-attention layers calibrated and
    random, at D_out 1 and its limit of 128, N_in beyond one 255-capsule
    block, biases from zero to the limit."""
    rng = np.random.default_rng(3)
    cases = []
    for dim in (1, 3, 4, 16, 16384):
        x = np.stack([np.full(dim, -128), np.full(dim, 127), np.zeros(dim),
                      np.resize([127, -128], dim)]).astype(np.int8)
        for scale, zp in ((1.0 / 128, 0), (1e-6, -128), (1e3, 127), (1e-30, 127), (3e38, -128)):
            cases.append(("efficient_squash", x, q.efficient_squash_params(scale, zp)))
    cases.append(("efficient_squash", np.zeros((0, 5), np.int8),
                  q.efficient_squash_params(0.1, 0)))
    for n_caps, dim, scale, zp in ((33, 5, 0.05, 3), (7, 16, 2.0, 127), (13, 4, 3e-4, -128)):
        cases.append(B.efficient_squash_case(rng, n_caps, dim, scale=scale, zp=zp))
    for dims, per_capsule in (((21, 8, 4, 16), False), ((13, 5, 3, 7), True)):
        cases.append(("self_attention", *B.calibrated_self_attention(rng, *dims,
                                                                      per_capsule=per_capsule)))
    for dims, per_capsule, bias_kind in (((37, 5, 7, 9), True, 2), ((3, 1, 1, 1), True, 3),
                                         ((300, 4, 3, 6), False, 1), ((5, 8, 17, 128), True, 1),
                                         ((2, 16, 5, 33), False, 0)):
        cases.append(("self_attention", *random_self_attention(
            rng, *dims, per_capsule=per_capsule, bias_kind=bias_kind)))
    return cases


@pytest.mark.parametrize("offset", [0, 3])
def test_kernels_clean_under_asan_ubsan(sanitized_driver, tmp_path, offset):
    cases = (_edge_caps_cases() + _edge_layer_cases() + _realistic_layer_cases()
             + _int4_layer_cases() + _efficient_cases())
    _check(_run(sanitized_driver, cases, tmp_path, offset), cases)


def test_driver_reports_bad_arguments_without_crashing(sanitized_driver, tmp_path):
    """Out-of-range shifts and zero points: error status, no sanitizer report."""
    u = np.zeros((4, 2), np.int8)
    W = np.zeros((4, 3, 2, 2), np.int8)
    good = q.class_caps_params((4, 2, 3, 2), q.ClassCapsQuant(0.1, 0, [0.1], 0.1, [0.1] * 2,
                                                              [0.1]))
    bad_pred = q.ClassCapsParams(q.PredictionsParams(0, (1 << 30,), (-40,)), good.routing)
    bad_zp = q.ClassCapsParams(q.PredictionsParams(200, (1 << 30,), (0,)), good.routing)
    bad_agree = q.ClassCapsParams(good.pred, q.RoutingParams(
        **{**good.routing.__dict__, "agree": ((1 << 30, 31),)}))
    cases = [("class_caps", u, W, p, V.ALL_CLASS_CAPS) for p in (bad_pred, bad_zp)]
    cases.append(("class_caps", u, W, bad_agree, V.F_STORE | V.F_RECOMPUTE))
    outputs = _run(sanitized_driver, cases, tmp_path, 0)
    assert [[status for status, _ in calls] for calls in outputs] == \
        [[-1, 0, -1, -1], [-1, 0, -1, -1], [-1, -1]]  # routing alone has valid params


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_sources_compile_warning_free(target, tmp_path):
    cc = TARGETS[target]
    require_tools(cc[0])
    for src in COMMON + PORTABLE:
        obj = str(tmp_path / (os.path.basename(src) + ".o"))
        res = subprocess.run([*cc, *WARN, "-O2", "-I", INCLUDE, "-c", src, "-o", obj],
                             capture_output=True, text=True)
        assert res.returncode == 0, f"{target}: {src}\n{res.stderr}"


def test_portable_kernels_use_no_float_heap_or_libm(tmp_path):
    """On a soft-float core every float/double operation is a library call:
    the kernel objects must reference none, nor malloc/free or libm."""
    cc = TARGETS["cortex-m0"]
    require_tools(cc[0], "arm-none-eabi-nm")
    forbidden = ("__aeabi_f", "__aeabi_d", "__aeabi_i2f", "__aeabi_i2d", "__aeabi_l2f",
                 "__aeabi_l2d", "malloc", "calloc", "realloc", "free", "sqrt", "exp", "log",
                 "pow", "frexp", "ldexp")
    for src in PORTABLE:
        obj = str(tmp_path / (os.path.basename(src) + ".o"))
        subprocess.run([*cc, *WARN, "-O2", "-I", INCLUDE, "-c", src, "-o", obj], check=True)
        undefined = subprocess.run(["arm-none-eabi-nm", "-u", obj], capture_output=True,
                                   text=True, check=True).stdout.split()
        bad = [s for s in undefined if s.startswith(forbidden)]
        assert not bad, f"{os.path.basename(src)} references {bad}"
