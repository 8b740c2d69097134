"""Guards on the internal TFLite interface the converter relies on.

Calibration runs our Python kernels inside TensorFlow's calibrator through
the exported C++ symbol tflite::MutableOpResolver::AddCustom and the classic
TfLiteRegistration/TfLiteTensor/TfLiteNode layouts (described with ctypes in
tflm_caps/converter/tflite_abi.py).  If TensorFlow changes them, these tests
fail first and loudly.
"""
import ctypes

import numpy as np
import pytest

from tflm_caps.converter import tflite_abi as abi


def test_struct_layout_lp64():
    assert ctypes.sizeof(ctypes.c_void_p) == 8
    assert abi.TfLiteTensor.data.offset == 8
    assert abi.TfLiteTensor.dims.offset == 16
    assert abi.TfLiteTensor.params.offset == 24
    assert abi.TfLiteTensor.bytes.offset == 40
    assert abi.TfLiteTensor.name.offset == 56
    assert abi.TfLiteTensor.quantization.offset == 80
    assert ctypes.sizeof(abi.TfLiteTensor) == 112
    assert abi.TfLiteNode.custom_initial_data.offset == 48
    assert abi.TfLiteNode.custom_initial_data_size.offset == 56
    assert abi.TfLiteContext.tensors.offset == 16
    assert abi.TfLiteContext.ResizeTensor.offset == 32
    assert abi.TfLiteRegistration.builtin_code.offset == 40
    assert abi.TfLiteRegistration.custom_name.offset == 48


def test_add_custom_symbol_exported():
    lib = abi.tensorflow_library()
    assert getattr(lib, abi.ADD_CUSTOM_SYMBOL)
    assert lib.TfLiteIntArrayCreate


def _smoke_model():
    """A float graph with one TFLMCaps_Squash op, made by the TF converter."""
    import tensorflow as tf

    from tflm_caps.converter import composites

    squash = composites.squash_fn()

    @tf.function(input_signature=[tf.TensorSpec([2, 3, 4], tf.float32)])
    def f(x):
        return squash(x * 2.0)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()],
                                                           tf.Module())
    conv.allow_custom_ops = True
    return conv.convert()


def test_python_kernel_runs_in_tflite_and_sees_tensors():
    from tflm_caps.converter import kernels
    from tflm_caps.reference import float_ref

    model = _smoke_model()
    interp, kset = kernels.make_interpreter(model, kernels.float_kernels(),
                                            reference_builtins=False)
    x = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    kset.raise_pending()
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(y, float_ref.squash(2.0 * x), rtol=1e-6, atol=1e-7)


def test_kernel_exception_becomes_tflite_error_and_is_reraised():
    from tflm_caps.converter import kernels
    from tflm_caps.converter.python_kernels import KernelSet

    class Broken(kernels.FloatSquash):
        def invoke(self, call):
            raise ArithmeticError("deliberate failure inside the kernel")

    kset = KernelSet([Broken()], kernels.parse_options)
    interp, _ = kernels.make_interpreter(_smoke_model(), kset, reference_builtins=False)
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ones((2, 3, 4), np.float32))
    with pytest.raises(RuntimeError):
        interp.invoke()
    with pytest.raises(ArithmeticError, match="deliberate"):
        kset.raise_pending()


def test_prepare_resizes_outputs_with_the_input():
    """The kernel's Prepare computes output shapes (ResizeTensor through the context)."""
    from tflm_caps.converter import kernels
    from tflm_caps.reference import float_ref

    interp, kset = kernels.make_interpreter(_smoke_model(), kernels.float_kernels(),
                                            reference_builtins=False)
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, [5, 3, 4])
    interp.allocate_tensors()
    kset.raise_pending()
    x = np.linspace(-1, 1, 60, dtype=np.float32).reshape(5, 3, 4)
    interp.set_tensor(index, x)
    interp.invoke()
    kset.raise_pending()
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert y.shape == (5, 3, 4)
    np.testing.assert_allclose(y, float_ref.squash(2.0 * x), rtol=1e-6, atol=1e-7)
