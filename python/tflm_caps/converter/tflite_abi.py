"""ctypes description of the TensorFlow Lite C kernel interface.

The TensorFlow wheel ships no TFLite headers, yet the converter's calibrator
(and ``tf.lite``'s interpreter) must run our custom ops.  The only entry
point is the exported C++ symbol ``tflite::MutableOpResolver::AddCustom`` in
``libtensorflow_cc.so.2`` together with the classic ``TfLiteRegistration``
layout.  The structures below describe that layout for x86-64/aarch64
(LP64) as found in TFLite's ``tensorflow/lite/core/c/common.h`` of the pinned
TensorFlow; tests/test_converter_abi.py guards it.  Only the fields we use
are named; the rest is padding of the right size.
"""
import ctypes
import os

import numpy as np

K_TFLITE_OK = 0
K_TFLITE_ERROR = 1

# TfLiteType values used here.
TFLITE_FLOAT32 = 1
TFLITE_INT32 = 2
TFLITE_INT8 = 9
TFLITE_INT4 = 18  # packed two per byte
_NP_TYPES = {TFLITE_FLOAT32: np.float32, TFLITE_INT32: np.int32, TFLITE_INT8: np.int8}

ADD_CUSTOM_SYMBOL = "_ZN6tflite17MutableOpResolver9AddCustomEPKcPK18TfLiteRegistrationi"


class TfLiteIntArray(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int)]  # followed by int data[size]

    def values(self):
        base = ctypes.addressof(self) + ctypes.sizeof(ctypes.c_int)
        return list((ctypes.c_int * self.size).from_address(base))


class TfLiteQuantizationParams(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_float), ("zero_point", ctypes.c_int32)]


class TfLiteQuantization(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("params", ctypes.c_void_p)]


class TfLiteFloatArray(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int)]

    def values(self):
        base = ctypes.addressof(self) + ctypes.sizeof(ctypes.c_int)
        return list((ctypes.c_float * self.size).from_address(base))


class TfLiteAffineQuantization(ctypes.Structure):
    _fields_ = [("scale", ctypes.POINTER(TfLiteFloatArray)),
                ("zero_point", ctypes.POINTER(TfLiteIntArray)),
                ("quantized_dimension", ctypes.c_int32)]


class TfLiteTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("dims", ctypes.POINTER(TfLiteIntArray)),
        ("params", TfLiteQuantizationParams),
        ("allocation_type", ctypes.c_int),
        ("bytes", ctypes.c_size_t),
        ("allocation", ctypes.c_void_p),
        ("name", ctypes.c_char_p),
        ("delegate", ctypes.c_void_p),
        ("buffer_handle", ctypes.c_int),
        ("data_is_stale", ctypes.c_bool),
        ("is_variable", ctypes.c_bool),
        ("quantization", TfLiteQuantization),
        ("sparsity", ctypes.c_void_p),
        ("dims_signature", ctypes.c_void_p),
    ]

    def shape(self):
        return tuple(self.dims.contents.values())

    def array(self):
        """A numpy view (no copy) of the tensor's data."""
        if self.type not in _NP_TYPES:
            raise TypeError(f"tensor {self.name!r}: unsupported TfLiteType {self.type}")
        dtype = np.dtype(_NP_TYPES[self.type])
        shape = self.shape()
        count = int(np.prod(shape)) if shape else 1
        if count * dtype.itemsize > self.bytes:
            raise ValueError(f"tensor {self.name!r}: {self.bytes} bytes for shape {shape}")
        if count == 0:
            return np.zeros(shape, dtype)
        buf = (ctypes.c_char * (count * dtype.itemsize)).from_address(self.data)
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def packed_bytes(self):
        """The bytes of a packed int4 tensor (two values per byte, rounded up)."""
        if self.type != TFLITE_INT4:
            raise TypeError(f"tensor {self.name!r}: TfLiteType {self.type} is not int4")
        shape = self.shape()
        n = (int(np.prod(shape)) + 1) // 2 if shape else 1
        if n > self.bytes:
            raise ValueError(f"tensor {self.name!r}: {self.bytes} bytes for int4 shape {shape}")
        return ctypes.string_at(self.data, n)

    def affine_quantization(self):
        """(scales, zero_points, quantized_dimension) or None."""
        if self.quantization.type != 1 or not self.quantization.params:
            return None
        aq = TfLiteAffineQuantization.from_address(self.quantization.params)
        return (np.array(aq.scale.contents.values(), np.float64),
                np.array(aq.zero_point.contents.values(), np.int64),
                int(aq.quantized_dimension))


class TfLiteNode(ctypes.Structure):
    _fields_ = [
        ("inputs", ctypes.POINTER(TfLiteIntArray)),
        ("outputs", ctypes.POINTER(TfLiteIntArray)),
        ("intermediates", ctypes.POINTER(TfLiteIntArray)),
        ("temporaries", ctypes.POINTER(TfLiteIntArray)),
        ("user_data", ctypes.c_void_p),
        ("builtin_data", ctypes.c_void_p),
        ("custom_initial_data", ctypes.c_void_p),
        ("custom_initial_data_size", ctypes.c_int),
    ]


_RESIZE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(TfLiteTensor),
                              ctypes.POINTER(TfLiteIntArray))


class TfLiteContext(ctypes.Structure):
    _fields_ = [
        ("tensors_size", ctypes.c_size_t),
        ("GetExecutionPlan", ctypes.c_void_p),
        ("tensors", ctypes.POINTER(TfLiteTensor)),
        ("impl_", ctypes.c_void_p),
        ("ResizeTensor", _RESIZE_FN),
    ]


INIT_FN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(TfLiteContext), ctypes.c_void_p,
                           ctypes.c_size_t)
FREE_FN = ctypes.CFUNCTYPE(None, ctypes.POINTER(TfLiteContext), ctypes.c_void_p)
PREPARE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(TfLiteContext),
                              ctypes.POINTER(TfLiteNode))
INVOKE_FN = PREPARE_FN


class TfLiteRegistration(ctypes.Structure):
    _fields_ = [
        ("init", INIT_FN),
        ("free", FREE_FN),
        ("prepare", PREPARE_FN),
        ("invoke", INVOKE_FN),
        ("profiling_string", ctypes.c_void_p),
        ("builtin_code", ctypes.c_int32),
        ("custom_name", ctypes.c_char_p),
        ("version", ctypes.c_int),
        ("registration_external", ctypes.c_void_p),
        ("async_kernel", ctypes.c_void_p),
        ("inplace_operator", ctypes.c_uint64),
    ]


_LIB = None


def tensorflow_library():
    """The loaded ``libtensorflow_cc.so.2`` of the installed TensorFlow."""
    global _LIB
    if _LIB is None:
        import tensorflow as tf
        path = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
        if not os.path.exists(path):
            raise RuntimeError(f"TensorFlow library not found at {path}: cannot register "
                               "calibration kernels for the capsule custom ops")
        lib = ctypes.CDLL(path)
        try:
            add = getattr(lib, ADD_CUSTOM_SYMBOL)
        except AttributeError as exc:
            raise RuntimeError(
                "libtensorflow_cc.so.2 does not export tflite::MutableOpResolver::AddCustom; "
                "the TensorFlow version is not the pinned one") from exc
        add.restype = None
        add.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(TfLiteRegistration),
                        ctypes.c_int]
        lib.TfLiteIntArrayCreate.restype = ctypes.POINTER(TfLiteIntArray)
        lib.TfLiteIntArrayCreate.argtypes = [ctypes.c_int]
        _LIB = lib
    return _LIB


def add_custom(resolver_address, name_buffer, registration, version=1):
    """Register ``registration`` under ``name_buffer`` (kept alive by the caller:
    the resolver stores the pointer) in the MutableOpResolver at the address."""
    lib = tensorflow_library()
    getattr(lib, ADD_CUSTOM_SYMBOL)(ctypes.c_void_p(resolver_address), name_buffer,
                                   ctypes.byref(registration), version)


def resize_tensor(context, tensor, shape):
    """context->ResizeTensor(context, tensor, dims) with a fresh TfLiteIntArray."""
    lib = tensorflow_library()
    dims = lib.TfLiteIntArrayCreate(len(shape))
    data = (ctypes.c_int * len(shape)).from_address(
        ctypes.addressof(dims.contents) + ctypes.sizeof(ctypes.c_int))
    for i, d in enumerate(shape):
        data[i] = int(d)
    return context.contents.ResizeTensor(ctypes.addressof(context.contents), tensor, dims)
