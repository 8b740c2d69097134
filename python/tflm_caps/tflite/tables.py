"""Constants and tables of the TFLite flatbuffer format.

Shared by the bounds-checked reader, the object-API model module and the
summaries.  No TensorFlow: builtin operator names come from the schema module
of the pinned tflite-micro wheel, imported on first use.
"""
import functools

import numpy as np

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
# Weight data alignment the TF converter writes (schema: force_align 16).
BUFFER_ALIGNMENT = 16
BUILTIN_CUSTOM = 32
CUSTOM_OPTIONS_FLEXBUFFERS = 0
# Metadata entry of tflite-support (its associated files are zipped after
# the flatbuffer).
TFLITE_METADATA = "TFLITE_METADATA"

# TensorType code -> name (the schema's names in lower case).
TENSOR_TYPE_NAMES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
    19: "int2", 20: "uint4", 21: "float8_e4m3fn", 22: "float8_e5m2",
}
TENSOR_TYPES = {name: code for code, name in TENSOR_TYPE_NAMES.items()}
FLOAT32, INT32, INT8 = TENSOR_TYPES["float32"], TENSOR_TYPES["int32"], TENSOR_TYPES["int8"]
INT4 = TENSOR_TYPES["int4"]  # packed two per byte (low nibble first)
# Bits per element of the types whose elements are packed below a byte.
PACKED_BITS = {INT4: 4, TENSOR_TYPES["uint4"]: 4, TENSOR_TYPES["int2"]: 2}
# TensorType code -> numpy dtype, for the types whose element size is fixed.
NUMPY_DTYPES = {code: np.dtype(TENSOR_TYPE_NAMES[code]) for code in
                (0, 1, 2, 3, 4, 6, 7, 9, 10, 12, 15, 16)}


def type_name(code):
    """Name of a TensorType code ('int8'), or 'type<code>' for an unknown one."""
    return TENSOR_TYPE_NAMES.get(int(code), f"type{int(code)}")


def schema():
    """The TFLite schema's generated Python module (object API) of the tflite-micro wheel."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated
    return schema_py_generated


@functools.lru_cache(maxsize=None)
def builtin_names():
    """BuiltinOperator code -> schema name (3 -> 'CONV_2D')."""
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_name(code):
    return builtin_names().get(int(code), f"BUILTIN_{int(code)}")


@functools.lru_cache(maxsize=None)
def builtin_codes():
    """Schema name -> BuiltinOperator code ('CONV_2D' -> 3)."""
    return {name: code for code, name in builtin_names().items()}


def data_bytes(type_code, elements):
    """Bytes of ``elements`` values of a type (packed types rounded up to a
    byte); None for variable-size types (string, resource, variant)."""
    bits = PACKED_BITS.get(int(type_code))
    if bits is not None:
        return (int(elements) * bits + 7) // 8
    dt = NUMPY_DTYPES.get(int(type_code))
    return None if dt is None else int(elements) * dt.itemsize
