"""Bounds-checked reader of ``.tflite`` flatbuffers: the check TFLM needs.

TFLM trusts the flatbuffer: a truncated or corrupt model makes the native
interpreter read out of bounds and crash the Python process.  This module
walks every table, vector and string TFLM reads (file identifier, vtables,
offsets and lengths all inside the buffer) and then checks the graph's
consistency (tensor, buffer and operator-code indices, constant data sizes,
quantization arrays).  Any problem raises :class:`ModelFormatError` naming
the offending table or tensor.

The result, :class:`ModelInfo`, is a light description of the graph (tensor
shapes, dtypes, quantization, operators and their custom options) used by
the runner, the validation and :func:`tflm_caps.tflite.summarize`.  Reading
needs neither TensorFlow nor the schema module (but for builtin op names).
"""
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from tflm_caps.tflite.tables import (BUILTIN_CUSTOM, FILE_IDENTIFIER, NUMPY_DTYPES, data_bytes,
                                     SCHEMA_VERSION, TENSOR_TYPE_NAMES, builtin_name, type_name)


class ModelFormatError(ValueError):
    """The bytes are not a well-formed .tflite model."""


def check_identifier(data, what="model"):
    """ModelFormatError unless ``data`` starts like a TFLite flatbuffer ('TFL3' at byte 4)."""
    n = len(data)
    if n < 8:
        raise ModelFormatError(f"{what}: {n} bytes is too short to be a .tflite model")
    if bytes(data[4:8]) != FILE_IDENTIFIER:
        raise ModelFormatError(f"{what}: not a .tflite model (file identifier "
                               f"{bytes(data[4:8])!r} at byte 4, expected {FILE_IDENTIFIER!r})")


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: Tuple[int, ...]
    type_code: int
    buffer: int
    scale: np.ndarray  # float32, possibly empty
    zero_point: np.ndarray  # int64, possibly empty
    quantized_dimension: int
    data: Optional[bytes] = None  # constant data, if the tensor has any

    @property
    def dtype(self):
        return NUMPY_DTYPES.get(self.type_code)

    @property
    def type_name(self):
        return type_name(self.type_code)

    @property
    def is_constant(self):
        return self.data is not None

    @property
    def quantization(self):
        """(scale, zero_point) of a per-tensor quantized tensor, else None."""
        if self.scale.size == 1 and self.zero_point.size >= 1:
            return float(self.scale[0]), int(self.zero_point[0])
        return None

    @property
    def bits(self):
        """Bits per element (4 for int4, 8 for int8, ...), or None when variable."""
        return data_bytes(self.type_code, 8)  # the bytes of 8 elements

    @property
    def nbytes(self):
        elements = int(np.prod(self.shape, dtype=np.int64))
        nbytes = data_bytes(self.type_code, elements)
        return elements if nbytes is None else nbytes


@dataclass
class OperatorInfo:
    index: int
    op_name: str  # builtin name (e.g. CONV_2D) or the custom code
    custom_code: Optional[str]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    custom_options: bytes = b""
    options_type: int = 0  # BuiltinOptions union code (0: none)
    builtin_options: dict = field(default_factory=dict)  # fields read of known option types


@dataclass
class ModelInfo:
    size: int
    description: str
    tensors: List[TensorInfo]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    operators: List[OperatorInfo]
    num_subgraphs: int = 1
    metadata_names: List[str] = field(default_factory=list)

    @property
    def custom_codes(self):
        return sorted({op.custom_code for op in self.operators if op.custom_code})

    def input_tensors(self):
        return [self.tensors[i] for i in self.inputs]

    def output_tensors(self):
        return [self.tensors[i] for i in self.outputs]

    def ops_named(self, name):
        return [op for op in self.operators if op.op_name == name]


# ----------------------------------------------------------------------------
# Generic flatbuffer walking with bounds checks
# ----------------------------------------------------------------------------

_SCALAR = "scalar"   # (kind, struct format)
_STRING = "string"
_VECTOR = "vector"   # (kind, struct format of the element)
_TABLE = "table"     # (kind, spec)
_TABLES = "tables"   # vector of tables: (kind, spec)
_ANY_TABLE = "any"   # union member / unknown table: bounds only
_ANY_TABLES = "anys"
_OPTIONS_TABLE = "options"  # builtin options: spec chosen by builtin_options_type

_GENERIC = {}

# Builtin options tables whose fields are read (union code -> spec), so a
# field pointing past its table is refused and the shape checks below get
# strides and paddings.  Other option types are bounds-checked generically.
_PADDING_STRIDES = {0: ("padding", _SCALAR, "b"), 1: ("stride_w", _SCALAR, "i"),
                    2: ("stride_h", _SCALAR, "i")}
_BUILTIN_OPTIONS = {
    1: {**_PADDING_STRIDES, 3: ("fused_activation_function", _SCALAR, "b"),  # Conv2D
        4: ("dilation_w_factor", _SCALAR, "i"),
        5: ("dilation_h_factor", _SCALAR, "i"),
        6: ("quantized_bias_type", _SCALAR, "b")},
    2: {**_PADDING_STRIDES, 3: ("depth_multiplier", _SCALAR, "i"),  # DepthwiseConv2D
        4: ("fused_activation_function", _SCALAR, "b"),
        5: ("dilation_w_factor", _SCALAR, "i"),
        6: ("dilation_h_factor", _SCALAR, "i")},
    5: {**_PADDING_STRIDES, 3: ("filter_width", _SCALAR, "i"),  # Pool2D
        4: ("filter_height", _SCALAR, "i"),
        5: ("fused_activation_function", _SCALAR, "b")},
    8: {0: ("fused_activation_function", _SCALAR, "b"), 1: ("weights_format", _SCALAR, "b"),
        2: ("keep_num_dims", _SCALAR, "?"), 3: ("asymmetric_quantize_inputs", _SCALAR, "?"),
        4: ("quantized_bias_type", _SCALAR, "b")},  # FullyConnected
    9: {0: ("beta", _SCALAR, "f")},  # Softmax
    10: {0: ("axis", _SCALAR, "i"), 1: ("fused_activation_function", _SCALAR, "b")},
    11: {0: ("fused_activation_function", _SCALAR, "b"), 1: ("pot_scale_int16", _SCALAR, "?")},
    17: {0: ("new_shape", _VECTOR, "i")},  # Reshape
    21: {0: ("fused_activation_function", _SCALAR, "b")},  # Mul
    27: {0: ("keep_dims", _SCALAR, "?")},  # Reducer
    30: {0: ("squeeze_dims", _VECTOR, "i")},  # Squeeze
}

_QUANT = {0: ("min", _VECTOR, "f"), 1: ("max", _VECTOR, "f"), 2: ("scale", _VECTOR, "f"),
          3: ("zero_point", _VECTOR, "q"), 4: ("details_type", _SCALAR, "B"),
          5: ("details", _ANY_TABLE, None), 6: ("quantized_dimension", _SCALAR, "i")}
_TENSOR = {0: ("shape", _VECTOR, "i"), 1: ("type", _SCALAR, "b"), 2: ("buffer", _SCALAR, "I"),
           3: ("name", _STRING, None), 4: ("quantization", _TABLE, _QUANT),
           5: ("is_variable", _SCALAR, "?"), 6: ("sparsity", _ANY_TABLE, None),
           7: ("shape_signature", _VECTOR, "i"), 8: ("has_rank", _SCALAR, "?"),
           9: ("variant_tensors", _ANY_TABLES, None)}
_OPERATOR = {0: ("opcode_index", _SCALAR, "I"), 1: ("inputs", _VECTOR, "i"),
             2: ("outputs", _VECTOR, "i"), 3: ("builtin_options_type", _SCALAR, "B"),
             4: ("builtin_options", _OPTIONS_TABLE, None), 5: ("custom_options", _VECTOR, "B"),
             6: ("custom_options_format", _SCALAR, "b"),
             7: ("mutating_variable_inputs", _VECTOR, "?"), 8: ("intermediates", _VECTOR, "i"),
             9: ("large_custom_options_offset", _SCALAR, "Q"),
             10: ("large_custom_options_size", _SCALAR, "Q"),
             11: ("builtin_options_2_type", _SCALAR, "B"),
             12: ("builtin_options_2", _ANY_TABLE, None)}
_SUBGRAPH = {0: ("tensors", _TABLES, _TENSOR), 1: ("inputs", _VECTOR, "i"),
             2: ("outputs", _VECTOR, "i"), 3: ("operators", _TABLES, _OPERATOR),
             4: ("name", _STRING, None)}
_OPCODE = {0: ("deprecated_builtin_code", _SCALAR, "b"), 1: ("custom_code", _STRING, None),
           2: ("version", _SCALAR, "i"), 3: ("builtin_code", _SCALAR, "i")}
_BUFFER = {0: ("data", _VECTOR, "B"), 1: ("offset", _SCALAR, "Q"), 2: ("size", _SCALAR, "Q")}
_METADATA = {0: ("name", _STRING, None), 1: ("buffer", _SCALAR, "I")}
_TENSORMAP = {0: ("name", _STRING, None), 1: ("tensor_index", _SCALAR, "I")}
_SIGNATURE = {0: ("inputs", _TABLES, _TENSORMAP), 1: ("outputs", _TABLES, _TENSORMAP),
              2: ("signature_key", _STRING, None), 4: ("subgraph_index", _SCALAR, "I")}
_MODEL = {0: ("version", _SCALAR, "I"), 1: ("operator_codes", _TABLES, _OPCODE),
          2: ("subgraphs", _TABLES, _SUBGRAPH), 3: ("description", _STRING, None),
          4: ("buffers", _TABLES, _BUFFER), 5: ("metadata_buffer", _VECTOR, "i"),
          6: ("metadata", _TABLES, _METADATA), 7: ("signature_defs", _TABLES, _SIGNATURE),
          8: ("external_buffer_groups", _ANY_TABLES, None),
          9: ("external_buffers", _ANY_TABLES, None)}


class _Walker:
    """Reads tables of a flatbuffer, checking every offset and length."""

    def __init__(self, buf):
        self.buf = buf
        self.n = len(buf)

    def _fail(self, path, what):
        raise ModelFormatError(f"malformed .tflite: {path}: {what} (file is {self.n} bytes; "
                               "truncated or corrupt?)")

    def _get(self, fmt, pos, path):
        size = struct.calcsize("<" + fmt)
        if pos < 0 or pos + size > self.n:
            self._fail(path, f"value at offset {pos} lies outside the file")
        return struct.unpack_from("<" + fmt, self.buf, pos)[0]

    def _deref(self, pos, path):
        off = self._get("I", pos, path)
        target = pos + off
        if target >= self.n:
            self._fail(path, f"offset {off} at {pos} points outside the file")
        return target

    def table(self, pos, spec, path):
        soff = self._get("i", pos, path)
        vt = pos - soff
        if vt < 0 or vt + 4 > self.n:
            self._fail(path, f"vtable of the table at {pos} lies outside the file")
        vt_size = self._get("H", vt, path)
        tbl_size = self._get("H", vt + 2, path)
        if vt_size < 4 or vt_size % 2 or vt + vt_size > self.n:
            self._fail(path, f"vtable size {vt_size} at {vt} is invalid")
        if tbl_size < 4 or pos + tbl_size > self.n:
            self._fail(path, f"table size {tbl_size} at {pos} runs past the end of the file")
        out = {}
        for slot in range((vt_size - 4) // 2):
            fo = self._get("H", vt + 4 + 2 * slot, path)
            if fo == 0:
                continue
            name, kind, arg = spec.get(slot, (f"field{slot}", None, None))
            fpath = f"{path}.{name}"
            # An unknown field (of a newer schema) is at least one byte.
            size = struct.calcsize("<" + arg) if kind == _SCALAR else 4 if kind else 1
            if fo < 4 or fo + size > tbl_size:
                self._fail(fpath, f"field offset {fo} outside the table of {tbl_size} bytes")
            fpos = pos + fo
            if kind is None:
                continue  # unknown field: in bounds is enough
            if kind == _SCALAR:
                out[name] = self._get(arg, fpos, fpath)
                continue
            target = self._deref(fpos, fpath)
            if kind == _STRING:
                out[name] = self.string(target, fpath)
            elif kind == _VECTOR:
                out[name] = self.vector(target, arg, fpath)
            elif kind == _TABLE:
                out[name] = self.table(target, arg, fpath)
            elif kind == _ANY_TABLE:
                self.table(target, _GENERIC, fpath)
                out[name] = True
            elif kind == _OPTIONS_TABLE:
                sub = _BUILTIN_OPTIONS.get(out.get("builtin_options_type"), _GENERIC)
                out[name] = self.table(target, sub, fpath)
            elif kind in (_TABLES, _ANY_TABLES):
                n = self._vector_len(target, 4, fpath)
                sub = arg if kind == _TABLES else _GENERIC
                items = []
                for k in range(n):
                    epos = target + 4 + 4 * k
                    items.append(self.table(self._deref(epos, f"{fpath}[{k}]"), sub,
                                            f"{fpath}[{k}]"))
                out[name] = items
        return out

    def _vector_len(self, target, elem_size, path):
        n = self._get("I", target, path)
        if n * elem_size > self.n - target - 4:
            self._fail(path, f"vector of {n} elements at {target} runs past the end of the file")
        return n

    def vector(self, target, fmt, path):
        size = struct.calcsize("<" + fmt)
        n = self._vector_len(target, size, path)
        if fmt == "B":
            return (target + 4, n)  # raw bytes: (offset, length)
        return np.frombuffer(self.buf, dtype=np.dtype("<" + fmt), count=n,
                             offset=target + 4).copy()

    def string(self, target, path):
        n = self._vector_len(target, 1, path)
        end = target + 4 + n
        if end >= self.n or self.buf[end] != 0:
            self._fail(path, "string is not NUL-terminated inside the file")
        try:
            return bytes(self.buf[target + 4:end]).decode("utf-8")
        except UnicodeDecodeError:
            self._fail(path, "string is not valid UTF-8")


# ----------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------

def _as_bytes(model):
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    raise TypeError(f"model must be bytes, got {type(model).__name__}")


class _GraphCheck:
    """Consistency checks of a walked model; each failure names ``what``."""

    def __init__(self, buf, what):
        self.buf, self.what = buf, what

    def fail(self, msg):
        raise ModelFormatError(f"{self.what}: {msg}")

    def buffer_data(self, buffers):
        """Bytes of every buffer (None when empty), in the file or after it."""
        out = []
        for k, b in enumerate(buffers):
            off, length = b.get("data", (0, 0))
            big_off, big_size = b.get("offset", 0), b.get("size", 0)
            if big_off > 1:  # large-model layout: data outside the flatbuffer
                if big_off + big_size > len(self.buf):
                    self.fail(f"buffer {k} (offset {big_off}, size {big_size}) lies outside "
                              "the file")
                off, length = big_off, big_size
            out.append(bytes(self.buf[off:off + length]) if length else None)
        return out

    def opcodes(self, operator_codes):
        """(op name, custom code or None) of every operator code."""
        out = []
        for k, oc in enumerate(operator_codes):
            code = max(oc.get("deprecated_builtin_code", 0), oc.get("builtin_code", 0))
            custom = oc.get("custom_code")
            if code == BUILTIN_CUSTOM:
                if not custom:
                    self.fail(f"operator code {k} is CUSTOM but has no custom_code")
                out.append((custom, custom))
            else:
                out.append((builtin_name(code), None))
        return out

    def tensor(self, k, t, buffer_data):
        name = t.get("name", f"tensor{k}")
        label = f"tensor {k} ({name!r})"
        shape = tuple(int(v) for v in t.get("shape", np.zeros(0, np.int32)))
        if any(v < 0 for v in shape):
            self.fail(f"{label} has a dynamic or negative shape {list(shape)}; TFLM needs "
                      "static shapes")
        type_code = int(t.get("type", 0))
        if type_code not in TENSOR_TYPE_NAMES:
            self.fail(f"{label} has unknown type code {type_code}")
        itemsize = NUMPY_DTYPES[type_code].itemsize if type_code in NUMPY_DTYPES else 1
        nbytes = np.prod(shape, dtype=np.float64) * itemsize
        if nbytes > MAX_TENSOR_BYTES:
            self.fail(f"{label} would take {int(nbytes)} bytes (shape {list(shape)}), above "
                      f"the limit of {MAX_TENSOR_BYTES} bytes (corrupt shape?)")
        bidx = int(t.get("buffer", 0))
        if bidx >= len(buffer_data):
            self.fail(f"{label} refers to buffer {bidx}, but the model has "
                      f"{len(buffer_data)} buffers")
        q = t.get("quantization", {})
        scale = np.asarray(q.get("scale", np.zeros(0)), np.float32)
        zp = np.asarray(q.get("zero_point", np.zeros(0)), np.int64)
        qdim = int(q.get("quantized_dimension", 0))
        if scale.size and zp.size and scale.size != zp.size:
            self.fail(f"{label} has {scale.size} quantization scales but {zp.size} zero points")
        if scale.size > 1 and (qdim < 0 or qdim >= len(shape) or shape[qdim] != scale.size):
            self.fail(f"{label} has {scale.size} scales along dimension {qdim} of shape "
                      f"{list(shape)}")
        data = buffer_data[bidx]
        info = TensorInfo(k, name, shape, type_code, bidx, scale, zp, qdim, data)
        if data is not None and info.bits is not None and len(data) != info.nbytes:
            self.fail(f"{label} has {len(data)} bytes of constant data, expected {info.nbytes} "
                      f"for {info.type_name} {list(shape)}")
        return info

    def indices(self, values, where, count, allow_optional):
        out = tuple(int(v) for v in values)
        for v in out:
            if not (0 <= v < count or (allow_optional and v == -1)):
                self.fail(f"{where} refers to tensor {v}, but the subgraph has {count} tensors")
        return out

    def subgraph(self, sg, sgi, buffer_data, opcodes):
        """(tensors, inputs, outputs, operators) of one subgraph."""
        tensors = [self.tensor(k, t, buffer_data) for k, t in enumerate(sg.get("tensors", []))]
        nt = len(tensors)
        inputs = self.indices(sg.get("inputs", []), "subgraph inputs", nt, False)
        outputs = self.indices(sg.get("outputs", []), "subgraph outputs", nt, False)
        if sgi == 0 and (not inputs or not outputs):
            self.fail("the subgraph has no inputs or no outputs")
        operators = []
        for k, op in enumerate(sg.get("operators", [])):
            oi = int(op.get("opcode_index", 0))
            if oi >= len(opcodes):
                self.fail(f"operator {k} uses operator code {oi}, but the model has "
                          f"{len(opcodes)}")
            op_name, custom = opcodes[oi]
            where = f"operator {k} ({op_name})"
            ins = self.indices(op.get("inputs", []), f"{where} inputs", nt, True)
            outs = self.indices(op.get("outputs", []), f"{where} outputs", nt, True)
            off, length = op.get("custom_options", (0, 0))
            info = OperatorInfo(k, op_name, custom, ins, outs,
                                bytes(self.buf[off:off + length]) if length else b"",
                                int(op.get("builtin_options_type", 0)),
                                op.get("builtin_options") or {})
            if custom is None:
                _BuiltinCheck(self, info, tensors).run()
            operators.append(info)
        return tensors, inputs, outputs, operators


# Limits of the pre-check (docs/runtime.md): far above any model that fits a
# microcontroller, low enough that the host never allocates gigabytes or
# spends minutes in one reference kernel on a corrupted shape.
MAX_TENSOR_BYTES = 256 << 20
MAX_OP_MACS = 1 << 31

# Builtin options union codes (schema BuiltinOptions) the shape checks read.
_CONV_OPTIONS, _DEPTHWISE_OPTIONS, _POOL_OPTIONS, _FC_OPTIONS = 1, 2, 5, 8
_MAX_BROADCAST_RANK = 6


class _BuiltinCheck:
    """Shape consistency of the builtins whose TFLM reference kernels trust
    the shapes (a wrong channel count divides by zero, a corrupted size
    runs for minutes).  Failures name the operator and tensor."""

    def __init__(self, graph, op, tensors):
        self.graph, self.op, self.tensors = graph, op, tensors
        self.where = f"operator {op.index} ({op.op_name})"

    def fail(self, msg):
        self.graph.fail(f"{self.where}: {msg}")

    def run(self):
        check = getattr(self, "_" + self.op.op_name.lower(), None)
        if check is not None:
            check()

    def tensor(self, slot, kind, ndim=None, optional=False):
        ids = self.op.inputs if kind == "input" else self.op.outputs
        if slot >= len(ids) or ids[slot] < 0:
            if optional:
                return None
            self.fail(f"has no {kind} {slot}")
        t = self.tensors[ids[slot]]
        if ndim is not None and len(t.shape) != ndim:
            self.fail(f"{kind} {slot} tensor {t.index} ({t.name!r}) has shape {list(t.shape)}, "
                      f"expected {ndim} dimensions")
        return t

    def options(self, code, name):
        if self.op.options_type != code:
            self.fail(f"has builtin options of type {self.op.options_type}, expected {name}")
        return self.op.builtin_options

    def expect(self, t, dim, want, what):
        if t.shape[dim] != want:
            self.fail(f"tensor {t.index} ({t.name!r}) shape {list(t.shape)}: {what} is "
                      f"{t.shape[dim]}, expected {want}")

    def macs(self, count):
        if count > MAX_OP_MACS:
            self.fail(f"needs {count} multiply-accumulates, above the limit of {MAX_OP_MACS} "
                      "(corrupt shapes?)")

    def spatial(self, opts, x, kernel_hw, out):
        """Strides, dilations and the output height/width of a 2-D window op."""
        strides = opts.get("stride_h", 0), opts.get("stride_w", 0)
        dilations = opts.get("dilation_h_factor", 1), opts.get("dilation_w_factor", 1)
        padding = opts.get("padding", 0)
        if min(strides) < 1 or min(dilations) < 1 or padding not in (0, 1):
            self.fail(f"strides {list(strides)}, dilations {list(dilations)} and padding "
                      f"{padding} must be >= 1, >= 1 and SAME (0) or VALID (1)")
        for dim, size, k, s, d in zip((1, 2), x.shape[1:3], kernel_hw, strides, dilations):
            span = (k - 1) * d + 1
            want = -(-size // s) if padding == 0 else max(-(-(size - span + 1) // s), 0)
            self.expect(out, dim, want, "output height" if dim == 1 else "output width")
        self.expect(out, 0, x.shape[0], "batch")

    def bias(self, channels):
        b = self.tensor(2, "input", optional=True)
        if b is not None and int(np.prod(b.shape)) != channels:
            self.fail(f"bias tensor {b.index} ({b.name!r}) has shape {list(b.shape)}, "
                      f"expected {channels} values")

    def _conv_2d(self):
        x, w = self.tensor(0, "input", 4), self.tensor(1, "input", 4)
        out = self.tensor(0, "output", 4)
        opts = self.options(_CONV_OPTIONS, "Conv2DOptions")
        cin, cf = x.shape[3], w.shape[3]
        # Grouped convolution: the groups divide the input channels and the filters.
        if cf < 1 or cin % cf or cin < 1 or w.shape[0] % (cin // cf):
            self.fail(f"input tensor {x.index} ({x.name!r}) has {cin} channels, filter tensor "
                      f"{w.index} ({w.name!r}) {list(w.shape)} takes {cf}")
        self.spatial(opts, x, w.shape[1:3], out)
        self.expect(out, 3, w.shape[0], "output channel count (filters)")
        self.bias(w.shape[0])
        self.macs(int(np.prod(out.shape, dtype=np.float64) * w.shape[1] * w.shape[2] * cf))

    def _depthwise_conv_2d(self):
        x, w = self.tensor(0, "input", 4), self.tensor(1, "input", 4)
        out = self.tensor(0, "output", 4)
        opts = self.options(_DEPTHWISE_OPTIONS, "DepthwiseConv2DOptions")
        cin, cout = x.shape[3], w.shape[3]
        if w.shape[0] != 1 or cin < 1 or cout % cin:
            self.fail(f"filter tensor {w.index} ({w.name!r}) {list(w.shape)} does not fit "
                      f"input tensor {x.index} ({x.name!r}) with {cin} channels")
        self.spatial(opts, x, w.shape[1:3], out)
        self.expect(out, 3, cout, "output channel count")
        self.bias(cout)
        self.macs(int(np.prod(out.shape, dtype=np.float64) * w.shape[1] * w.shape[2]))

    def _fully_connected(self):
        x, w = self.tensor(0, "input"), self.tensor(1, "input", 2)
        out = self.tensor(0, "output")
        self.options(_FC_OPTIONS, "FullyConnectedOptions")
        units, depth = w.shape
        n_in = int(np.prod(x.shape, dtype=np.float64))
        if depth < 1 or n_in % depth:
            self.fail(f"input tensor {x.index} ({x.name!r}) {list(x.shape)} is not a whole "
                      f"number of rows of {depth} for filter tensor {w.index} ({w.name!r}) "
                      f"{list(w.shape)}")
        if not out.shape or out.shape[-1] != units or \
                int(np.prod(out.shape, dtype=np.float64)) != n_in // depth * units:
            self.fail(f"output tensor {out.index} ({out.name!r}) has shape {list(out.shape)}, "
                      f"expected {n_in // depth} rows of {units}")
        self.bias(units)
        self.macs(n_in * units)

    def _average_pool_2d(self):
        x, out = self.tensor(0, "input", 4), self.tensor(0, "output", 4)
        opts = self.options(_POOL_OPTIONS, "Pool2DOptions")
        kernel = opts.get("filter_height", 0), opts.get("filter_width", 0)
        if min(kernel) < 1:
            self.fail(f"pool size {list(kernel)} must be >= 1")
        self.spatial(opts, x, kernel, out)
        self.expect(out, 3, x.shape[3], "output channel count")
        self.macs(int(np.prod(out.shape, dtype=np.float64) * kernel[0] * kernel[1]))

    _max_pool_2d = _average_pool_2d

    def _add(self):
        """Elementwise binary ops: same types, shapes that broadcast to the output
        (TFLM's broadcast aborts the process on shapes that do not)."""
        a, b = self.tensor(0, "input"), self.tensor(1, "input")
        out = self.tensor(0, "output")
        if a.type_code != b.type_code:
            self.fail(f"input tensors {a.index} ({a.name!r}) and {b.index} ({b.name!r}) have "
                      f"types {a.type_name} and {b.type_name}")
        rank = max(len(a.shape), len(b.shape))
        if rank > _MAX_BROADCAST_RANK:
            self.fail(f"inputs of rank {rank}; TFLM broadcasts up to {_MAX_BROADCAST_RANK}")
        pa = (1,) * (rank - len(a.shape)) + tuple(a.shape)
        pb = (1,) * (rank - len(b.shape)) + tuple(b.shape)
        if any(x != y and 1 not in (x, y) for x, y in zip(pa, pb)):
            self.fail(f"input shapes {list(a.shape)} and {list(b.shape)} of tensors {a.index} "
                      f"and {b.index} do not broadcast")
        want = [max(x, y) if min(x, y) else 0 for x, y in zip(pa, pb)]
        if list(out.shape) != want:
            self.fail(f"output tensor {out.index} ({out.name!r}) has shape {list(out.shape)}, "
                      f"expected {want}")

    _sub = _mul = _squared_difference = _maximum = _minimum = _div = _add


def check_model(model, what="model"):
    """Check a .tflite flatbuffer; returns a :class:`ModelInfo`.

    ``what`` names the model in error messages (e.g. its file name).
    Raises :class:`ModelFormatError` on any structural or consistency problem.
    """
    buf = _as_bytes(model)
    check_identifier(buf, what)
    walker = _Walker(buf)
    try:
        root = walker.table(walker._deref(0, "root"), _MODEL, "Model")
    except ModelFormatError as exc:
        raise ModelFormatError(f"{what}: {exc}") from None
    check = _GraphCheck(buf, what)
    if root.get("version", 0) != SCHEMA_VERSION:
        check.fail(f"schema version {root.get('version', 0)} is not supported (expected "
                   f"{SCHEMA_VERSION})")
    subgraphs = root.get("subgraphs", [])
    if not subgraphs:
        check.fail("the model has no subgraph")
    buffer_data = check.buffer_data(root.get("buffers", []))
    opcodes = check.opcodes(root.get("operator_codes", []))
    described = [check.subgraph(sg, sgi, buffer_data, opcodes)
                 for sgi, sg in enumerate(subgraphs)]
    tensors, inputs, outputs, operators = described[0]
    metadata = root.get("metadata", [])
    for m in metadata:
        if int(m.get("buffer", 0)) >= len(buffer_data):
            check.fail(f"metadata {m.get('name', '')!r} refers to a missing buffer")
    return ModelInfo(len(buf), root.get("description", ""), tensors, inputs, outputs, operators,
                     len(subgraphs), [m.get("name", "") for m in metadata])
