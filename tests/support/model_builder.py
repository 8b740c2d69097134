"""Build small ``.tflite`` graphs directly from the TFLite schema (tests only).

Used to run one operator in TFLM (bit-exact tests of each custom op, the
interface canary, error-path tests) without going through TensorFlow.
Models are written with ``tflm_caps.tflite``.  Example::

    x = TensorSpec("x", (1, 4, 8), "int8", scale=0.05, zero_point=3)
    v = TensorSpec("v", (1, 4, 8), "int8", scale=1 / 128, zero_point=0)
    model = single_op_model("TFLMCaps_Squash", [x], [v], {"version": 1})
"""
import array
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps import tflite
from tflm_caps.reference import quant as ref_quant
from tflm_caps.tflite import tables


@dataclass
class TensorSpec:
    """One tensor: shape, dtype name, optional quantization and constant data.

    scale / zero_point: scalars (per tensor) or sequences (per channel along
    ``quantized_dimension``).  ``data``: constant contents (stored in a
    buffer of the model), cast to ``dtype``.
    """
    name: str
    shape: Sequence[int]
    dtype: str = "int8"
    scale: Optional[object] = None
    zero_point: Optional[object] = None
    quantized_dimension: int = 0
    data: Optional[np.ndarray] = None


@dataclass
class OpSpec:
    """An operator: builtin name (e.g. "QUANTIZE") or custom code, tensor
    indices (-1 for an omitted optional input) and custom options bytes."""
    code: str
    inputs: Sequence[int]
    outputs: Sequence[int]
    custom_options: bytes = b""
    custom: Optional[bool] = None  # None: custom unless code is a builtin name


def encode_options(options):
    """FlexBuffer map of a dict: ints (bools as ints), floats, float lists.

    Unlike the converter's writer this accepts any keys and values, so
    tests can build wrong or incomplete options on purpose.
    """
    from flatbuffers import flexbuffers

    fbb = flexbuffers.Builder()
    with fbb.Map():
        for key in sorted(options):
            value = options[key]
            if isinstance(value, (bool, np.bool_)):
                fbb.Int(key, int(value))
            elif isinstance(value, (int, np.integer)):
                fbb.Int(key, int(value))
            elif isinstance(value, (float, np.floating)):
                fbb.Float(key, float(value))
            elif isinstance(value, str):
                fbb.String(key, value)
            else:
                fbb.Key(key)
                fbb.TypedVectorFromElements(array.array("f", [float(v) for v in value]))
    return bytes(fbb.Finish())


def build_model(tensors, operators, inputs, outputs, description="tflm-caps test graph",
                metadata=None):
    """Serialize one subgraph; returns the .tflite bytes.

    metadata: optional {name: bytes} entries of the model's metadata table.
    """
    fb = tables.schema()
    model = fb.ModelT()
    model.version = tables.SCHEMA_VERSION
    model.description = description
    model.buffers = [fb.BufferT()]  # buffer 0: the empty sentinel
    sub = fb.SubGraphT()
    sub.tensors = []
    for spec in tensors:
        t = fb.TensorT()
        t.name = spec.name
        t.shape = [int(v) for v in spec.shape]
        t.type = tables.TENSOR_TYPES[spec.dtype]
        if spec.scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = [float(v) for v in np.atleast_1d(np.asarray(spec.scale, np.float32))]
            zp = 0 if spec.zero_point is None else spec.zero_point
            zps = [int(v) for v in np.atleast_1d(np.asarray(zp, np.int64))]
            q.zeroPoint = zps * len(q.scale) if len(zps) == 1 else zps
            q.quantizedDimension = int(spec.quantized_dimension)
            t.quantization = q
        if spec.data is not None:
            if spec.dtype == "int4":  # values in [-8, 7], packed two per byte
                values = np.asarray(spec.data)
                packed = ref_quant.pack_int4(values).tobytes()
            else:
                values = np.ascontiguousarray(np.asarray(spec.data).astype(spec.dtype))
                packed = values.tobytes()
            if values.size != int(np.prod(spec.shape)):
                raise ValueError(f"tensor {spec.name!r}: data has {values.size} elements, shape "
                                 f"{list(spec.shape)} needs {int(np.prod(spec.shape))}")
            buf = fb.BufferT()
            buf.data = packed
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        else:
            t.buffer = 0
        sub.tensors.append(t)
    codes, code_index = [], {}
    builtin = tables.builtin_codes()
    sub.operators = []
    for spec in operators:
        is_custom = spec.custom if spec.custom is not None else spec.code not in builtin
        key = (spec.code, is_custom)
        if key not in code_index:
            oc = fb.OperatorCodeT()
            if is_custom:
                oc.builtinCode = oc.deprecatedBuiltinCode = tables.BUILTIN_CUSTOM
                oc.customCode = spec.code
            else:
                code = builtin[spec.code]
                oc.builtinCode = code
                oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            code_index[key] = len(codes)
            codes.append(oc)
        op = fb.OperatorT()
        op.opcodeIndex = code_index[key]
        op.inputs = [int(v) for v in spec.inputs]
        op.outputs = [int(v) for v in spec.outputs]
        if spec.custom_options:
            op.customOptions = list(spec.custom_options)
            op.customOptionsFormat = tables.CUSTOM_OPTIONS_FLEXBUFFERS
        sub.operators.append(op)
    sub.inputs = [int(v) for v in inputs]
    sub.outputs = [int(v) for v in outputs]
    sub.name = "main"
    model.subgraphs = [sub]
    model.operatorCodes = codes
    if metadata:
        model.metadata = []
    for name, data in (metadata or {}).items():
        buf = fb.BufferT()
        buf.data = bytes(data)
        model.buffers.append(buf)
        entry = fb.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    return tflite.dump(model)


def single_op_model(code, inputs, outputs, options=None):
    """A graph of one operator; non-constant inputs become graph inputs.

    options: bytes (used as is), a dict (encoded with encode_options) or None.
    """
    if isinstance(options, dict):
        options = encode_options(options)
    tensors = list(inputs) + list(outputs)
    n_in = len(inputs)
    op = OpSpec(code, list(range(n_in)), list(range(n_in, len(tensors))), options or b"")
    graph_inputs = [k for k, t in enumerate(inputs) if t.data is None]
    return build_model(tensors, [op], graph_inputs, op.outputs)


# ----------------------------------------------------------------------------
# Single capsule-op models
# ----------------------------------------------------------------------------

_VERSION_ONLY = {C.OPT_VERSION: C.OPTIONS_VERSION}


def squash_model(shape, input_scale, input_zero_point=0, options=None, table="auto"):
    """TFLMCaps_Squash on an int8 [B, N, D] input.

    ``table``: its input 1, the gain table: "auto" (the reference table when
    the options' version is >= SQUASH_TABLE_VERSION, else none: a model
    converted before the table input existed), None (no input 1), or an
    array written as given with its dtype (malformed tables).
    """
    from tflm_caps.reference import int8 as int8_ref, quant as q

    scale, zp = C.OUTPUT_QUANT[C.SQUASH]
    x = TensorSpec("x", shape, "int8", scale=input_scale, zero_point=input_zero_point)
    v = TensorSpec("v", shape, "int8", scale=scale, zero_point=zp)
    options = _VERSION_ONLY if options is None else options
    if isinstance(table, str) and table == "auto":
        version = options.get(C.OPT_VERSION) if isinstance(options, dict) else None
        table = (int8_ref.squash_table(shape[-1], q.squash_params(input_scale, input_zero_point))
                 if isinstance(version, int) and version >= C.SQUASH_TABLE_VERSION else None)
    inputs = [x]
    if table is not None:
        table = np.asarray(table)
        inputs.append(TensorSpec("gain_table", table.shape, table.dtype.name, data=table))
    return single_op_model(C.SQUASH, inputs, [v], options)


def length_model(shape, input_scale, input_zero_point=0, options=None):
    """TFLMCaps_Length on an int8 [B, N, D] input."""
    scale, zp = C.OUTPUT_QUANT[C.LENGTH]
    x = TensorSpec("v", shape, "int8", scale=input_scale, zero_point=input_zero_point)
    out = TensorSpec("length", tuple(shape[:2]), "int8", scale=scale, zero_point=zp)
    return single_op_model(C.LENGTH, [x], [out], _VERSION_ONLY if options is None else options)


def class_caps_options(quant, store_predictions=True):
    """Options dict of TFLMCaps_ClassCaps from a reference ClassCapsQuant."""
    opts = {C.OPT_VERSION: C.OPTIONS_VERSION, C.OPT_NUM_ROUTING: quant.routings,
            C.OPT_STORE_PREDICTIONS: int(bool(store_predictions)),
            C.OPT_U_HAT_SCALE: quant.uhat_scale, C.OPT_S_SCALES: list(quant.s_scales)}
    if quant.b_scales:
        opts[C.OPT_B_SCALES] = list(quant.b_scales)
    return opts


def random_class_caps(seed, n_in, n_out, d_out, d_in, routings=3, samples=8):
    """Random W [N_in, N_out, D_out, D_in] and input capsules, quantized by the
    reference (per-capsule weight scales, input scale 1/128, zero point 0):
    returns (int8 W, ClassCapsQuant) for ``class_caps_model``."""
    from tflm_caps.reference import quant as q

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (n_in, n_out, d_out, d_in))
    ws = q.weight_scales(w, per_capsule=True)
    quant = q.calibrate_class_caps(rng.normal(0, 0.4, (samples, n_in, d_in)), w, routings,
                                   1 / 128, 0, w_scales=ws)
    return q.quantize_weights(w, ws), quant


def class_caps_model(batch, weights_q, quant, store_predictions=True, options=None,
                     weight_dtype="int8"):
    """TFLMCaps_ClassCaps with weights [N_in, N_out, D_out, D_in] (``weight_dtype``
    int8, or int4: values in [-8, 7] stored packed) and the quantization of a
    reference ClassCapsQuant (1 or N_out weight scales)."""
    n_in, n_out, d_out, d_in = np.asarray(weights_q).shape
    u = TensorSpec("u", (batch, n_in, d_in), "int8", scale=quant.input_scale,
                   zero_point=quant.input_zero_point)
    scales = list(quant.weight_scales)
    w = TensorSpec("W", (n_in, n_out, d_out, d_in), weight_dtype,
                   scale=scales if len(scales) > 1 else scales[0], zero_point=0,
                   quantized_dimension=1 if len(scales) > 1 else 0, data=weights_q)
    scale, zp = C.OUTPUT_QUANT[C.CLASS_CAPS]
    v = TensorSpec("v", (batch, n_out, d_out), "int8", scale=scale, zero_point=zp)
    if options is None:
        options = class_caps_options(quant, store_predictions)
    return single_op_model(C.CLASS_CAPS, [u, w], [v], options)


def efficient_squash_model(shape, input_scale, input_zero_point=0, options=None):
    """TFLMCaps_EfficientSquash on an int8 [B, N, D] input."""
    scale, zp = C.OUTPUT_QUANT[C.EFFICIENT_SQUASH]
    x = TensorSpec("x", shape, "int8", scale=input_scale, zero_point=input_zero_point)
    v = TensorSpec("v", shape, "int8", scale=scale, zero_point=zp)
    return single_op_model(C.EFFICIENT_SQUASH, [x], [v],
                           _VERSION_ONLY if options is None else options)


def self_attention_options(quant):
    """Options dict of TFLMCaps_SelfAttentionCaps from a reference SelfAttentionQuant."""
    return {C.OPT_VERSION: C.OPTIONS_VERSION, C.OPT_U_HAT_SCALE: quant.uhat_scale,
            C.OPT_S_SCALE: quant.s_scale}


def self_attention_tensors(batch, weights_q, bias_q15, quant):
    """[u, W, bias, v] TensorSpecs of a TFLMCaps_SelfAttentionCaps op."""
    n_in, n_out, d_out, d_in = np.asarray(weights_q).shape
    u = TensorSpec("u", (batch, n_in, d_in), "int8", scale=quant.input_scale,
                   zero_point=quant.input_zero_point)
    scales = list(quant.weight_scales)
    w = TensorSpec("W", (n_in, n_out, d_out, d_in), "int8",
                   scale=scales if len(scales) > 1 else scales[0], zero_point=0,
                   quantized_dimension=1 if len(scales) > 1 else 0, data=weights_q)
    b = TensorSpec("b", (n_in, n_out), "int32", scale=C.ATTENTION_BIAS_SCALE,
                   zero_point=C.ATTENTION_BIAS_ZERO_POINT, data=bias_q15)
    scale, zp = C.OUTPUT_QUANT[C.SELF_ATTENTION_CAPS]
    v = TensorSpec("v", (batch, n_out, d_out), "int8", scale=scale, zero_point=zp)
    return [u, w, b, v]


def self_attention_model(batch, weights_q, bias_q15, quant, options=None):
    """TFLMCaps_SelfAttentionCaps with int8 weights [N_in, N_out, D_out, D_in], an
    int32 Q15 bias [N_in, N_out] and the quantization of a SelfAttentionQuant."""
    u, w, b, v = self_attention_tensors(batch, weights_q, bias_q15, quant)
    return single_op_model(C.SELF_ATTENTION_CAPS, [u, w, b], [v],
                           self_attention_options(quant) if options is None else options)
