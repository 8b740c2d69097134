"""Run capsule custom ops inside TensorFlow Lite's interpreter with Python kernels.

Used by the calibrator (float kernels, which also record the routing
intermediates) and by ``tf.lite`` interpreters that evaluate our int8 models
on the host (int8 kernels from the numpy integer reference).  A registerer is
a Python callable receiving the MutableOpResolver's address, which is what
``target_spec._experimental_custom_op_registerers`` and
``InterpreterWithCustomOps(custom_op_registerers=...)`` accept.

Exceptions raised in a kernel cannot cross the C boundary: they are stored,
the kernel returns kTfLiteError and ``KernelSet.raise_pending()`` re-raises
the first one in Python.
"""
import ctypes

import numpy as np

from tflm_caps.converter import tflite_abi as abi


class KernelCall:
    """What a kernel sees for one node: numpy views and quantization of its tensors."""

    def __init__(self, context, node, options):
        tensors = context.contents.tensors
        self.input_tensors = [tensors[i] if i >= 0 else None
                              for i in node.contents.inputs.contents.values()]
        self.output_tensors = [tensors[i] for i in node.contents.outputs.contents.values()]
        self.output_indices = tuple(node.contents.outputs.contents.values())
        self.options = options

    @property
    def inputs(self):
        return [t.array() if t is not None else None for t in self.input_tensors]

    @property
    def outputs(self):
        return [t.array() for t in self.output_tensors]

    def input_quant(self, i):
        t = self.input_tensors[i]
        return abi_quant(t)

    def output_quant(self, i):
        return abi_quant(self.output_tensors[i])


def abi_quant(tensor):
    """(scales array, zero points array, quantized_dimension) of a TfLiteTensor."""
    q = tensor.affine_quantization()
    if q is None:
        return (np.array([tensor.params.scale], np.float64),
                np.array([tensor.params.zero_point], np.int64), 0)
    return q


class PythonKernel:
    """Base class: override ``output_shapes`` and ``invoke``."""

    name = None

    def output_shapes(self, call):
        raise NotImplementedError

    def check(self, call):
        """Validate input types/shapes in Prepare; raise ValueError."""

    def invoke(self, call):
        raise NotImplementedError


class KernelSet:
    """A set of Python kernels and the registerer callable that installs them."""

    def __init__(self, kernels, parse_options=None):
        self.kernels = {k.name: k for k in kernels}
        self._parse_options = parse_options
        self._keepalive = []
        self._options = {}  # user_data slot -> parsed options of one node
        self._next_slot = 0
        self.errors = []

    def _wrap(self, kernel):
        def init(context, buffer, length):
            try:
                raw = ctypes.string_at(buffer, length) if buffer and length else b""
                options = self._parse_options(kernel.name, raw) if self._parse_options else raw
                self._next_slot += 1  # node user_data: a non-zero slot number
                self._options[self._next_slot] = options
                return self._next_slot
            except Exception as exc:  # noqa: BLE001 - re-raised by raise_pending
                self.errors.append(exc)
                return 0

        def free(context, user_data):
            if user_data:
                self._options.pop(user_data, None)

        def prepare(context, node):
            try:
                call = KernelCall(context, node, self._options.get(node.contents.user_data))
                kernel.check(call)
                for tensor, shape in zip(call.output_tensors, kernel.output_shapes(call)):
                    if tensor.shape() != tuple(shape):
                        status = abi.resize_tensor(context, ctypes.pointer(tensor), shape)
                        if status != abi.K_TFLITE_OK:
                            raise RuntimeError(f"{kernel.name}: cannot resize output to {shape}")
                return abi.K_TFLITE_OK
            except Exception as exc:  # noqa: BLE001
                self.errors.append(exc)
                return abi.K_TFLITE_ERROR

        def invoke(context, node):
            try:
                call = KernelCall(context, node, self._options.get(node.contents.user_data))
                kernel.invoke(call)
                return abi.K_TFLITE_OK
            except Exception as exc:  # noqa: BLE001
                self.errors.append(exc)
                return abi.K_TFLITE_ERROR

        return init, free, prepare, invoke

    def registerer(self, resolver_address):
        """Install every kernel into the resolver (called by TFLite's Python wrappers)."""
        for name, kernel in self.kernels.items():
            init, free, prepare, invoke = self._wrap(kernel)
            fns = (abi.INIT_FN(init), abi.FREE_FN(free), abi.PREPARE_FN(prepare),
                   abi.INVOKE_FN(invoke))
            reg = abi.TfLiteRegistration()
            reg.init, reg.free, reg.prepare, reg.invoke = fns
            name_buf = ctypes.create_string_buffer(name.encode())
            reg.custom_name = ctypes.cast(name_buf, ctypes.c_char_p).value
            # The resolver copies the registration but keeps the name pointer and
            # calls the function pointers later: keep all of them alive.
            self._keepalive.append((fns, reg, name_buf))
            abi.add_custom(resolver_address, name_buf, reg, 1)

    def raise_pending(self):
        """Re-raise the first error recorded inside a kernel, if any."""
        if self.errors:
            exc = self.errors[0]
            self.errors = []
            raise exc
