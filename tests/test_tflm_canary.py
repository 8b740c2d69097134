"""Canary of the pinned tflite-micro wheel's binary interface.

tflm_caps_ops/host/tflm_host_abi.h describes the layout of one specific
wheel build (commit 8f6596d).  These tests fail loudly when another build
is installed or when any part of that description stops holding: the
resolver layout, the node/tensor/context layouts and MicroContext slots
(exercised by the host-only TFLMCaps_AbiProbe op), and registration of
the real capsule ops.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from support.model_builder import TensorSpec, single_op_model, squash_model
from tflm_caps.runtime import _library

PINNED_VERSION = "0.dev20261023182759"


def test_pinned_wheel_build():
    import importlib.metadata as md

    import tflite_micro
    assert md.version("tflite-micro") == PINNED_VERSION, (
        "tflm_caps_ops/host/tflm_host_abi.h describes tflite-micro==" + PINNED_VERSION +
        f" only; installed {md.version('tflite-micro')}")
    assert tflite_micro.__version__.endswith("g8f6596d"), (
        f"the wheel was built from another commit: {tflite_micro.__version__}")


def _probe_model(add=5, gain=0.75, version=1):
    x = TensorSpec("x", (1, 3, 5), "int8", scale=0.25, zero_point=-3)
    c = TensorSpec("c", (1, 3, 5), "int8", scale=0.25, zero_point=-3,
                   data=np.arange(15).reshape(1, 3, 5) - 7)
    out = TensorSpec("out", (1, 3, 5), "int8", scale=0.5, zero_point=4)
    return single_op_model("TFLMCaps_AbiProbe", [x, c], [out],
                           {"version": version, "add": add, "gain": gain})


def test_abi_probe_op_sees_what_the_model_holds():
    """Every field the operators read has the value the model stores."""
    from tflm_caps.runtime import TFLMRunner

    lib = _library.load_library()
    lib.TFLMCaps_AbiProbeReset()
    runner = TFLMRunner(_probe_model(add=-9, gain=0.375), registerers=[_library.PROBE_REGISTERER])
    x = np.random.default_rng(0).integers(-128, 128, (6, 3, 5)).astype(np.int8)
    y = runner.predict(x, dequantize=False)
    expected = np.clip(x.astype(np.int32) + (np.arange(15).reshape(1, 3, 5) - 7) - 9, -128, 127)
    np.testing.assert_array_equal(y, expected)

    rep = _library.probe_report()
    assert (rep.init_calls, rep.prepare_calls, rep.invoke_calls) == (1, 1, 6)
    assert rep.x_type == 9  # kTfLiteInt8
    assert rep.x_rank == 3 and list(rep.x_dims)[:3] == [1, 3, 5]
    assert rep.x_bytes == 15
    assert (rep.x_params_scale, rep.x_params_zero_point) == (0.25, -3)
    assert (rep.x_affine_count, rep.x_affine_scale, rep.x_affine_zero_point) == (1, 0.25, -3)
    assert (rep.out_params_scale, rep.out_params_zero_point) == (0.5, 4)
    assert rep.c_allocation_type == 1, "constant tensors must be kTfLiteMmapRo"
    assert rep.x_allocation_type != 1
    assert rep.add == -9 and rep.gain == 0.375
    assert rep.options_size > 0
    assert rep.scratch_ok == 1 and rep.persistent_ok == 1 and rep.eval_dims_match == 1


def test_resolver_layout_and_capsule_ops_registration():
    from tflm_caps.runtime import TFLMRunner

    lib = _library.load_library()
    runner = TFLMRunner(squash_model((1, 2, 4), 0.1, 0))
    assert lib.TFLMCaps_HostResolverCountSeen() == 118, (
        "the pinned wheel's PythonOpsResolver registers 118 builtins before custom ops")
    y = runner.predict(np.array([[[0, 0, 0, 0], [10, 0, 0, 0]]], np.int8))
    # |x| = 1 -> squash length 0.5, exactly 64/128
    np.testing.assert_allclose(y, [[[0, 0, 0, 0], [0.5, 0, 0, 0]]])


def test_registerer_reachable_by_name_from_a_fresh_process():
    """The wheel looks the registerer up with dlsym(RTLD_DEFAULT): it must be
    found after tflm_caps.native.load() in a process that never imported the
    runtime package."""
    code = textwrap.dedent("""
        import numpy as np
        from tflite_micro import runtime as tflm
        from tflm_caps import native
        from support.model_builder import squash_model
        native.load()
        it = tflm.Interpreter.from_bytes(squash_model((1, 1, 2), 0.5, 0),
                                         custom_op_registerers=["TFLMCaps_RegisterOps"],
                                         arena_size=20000)
        it.set_input(np.array([[[2, 0]]], np.int8), 0)
        it.invoke()
        print(it.get_output(0).tolist())
    """)
    # Run from tests/ so that the snippet imports the test support package.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, proc.stderr
    # |x| = 1 -> 0.5 -> 64
    assert proc.stdout.strip() == "[[[64, 0]]]"


@pytest.mark.parametrize("registerer", [_library.REGISTERER, _library.PROBE_REGISTERER])
def test_registerers_refuse_a_bad_resolver(registerer):
    """A resolver whose count is out of range is refused, not written to."""
    import ctypes

    lib = _library.load_library()
    fake = (ctypes.c_ubyte * 0x3538)()
    ctypes.memmove(ctypes.addressof(fake) + 0x2bc8, (ctypes.c_uint * 1)(100000), 4)
    _library.clear_error()
    assert not getattr(lib, registerer)(ctypes.addressof(fake))
    assert "layout" in _library.last_error()
    _library.clear_error()
