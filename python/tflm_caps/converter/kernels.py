"""Python kernels of the capsule custom ops for TensorFlow Lite's interpreter.

- ``float_kernels(recorder)``: float math of ``tflm_caps.reference.float_ref``
  for calibrating and running float graphs; the ClassCaps and
  SelfAttentionCaps kernels hand their float input capsules to ``recorder``
  (the routing intermediates are calibrated from them, see
  ``calibration.py``).
- ``int8_kernels()``: the numpy integer reference (``tflm_caps.reference.int8``),
  bit-exact with the C kernels, so a converted int8 model runs in ``tf.lite``
  exactly as the custom ops compute in TFLM (builtins use TFLite's kernels).

``make_interpreter(model_bytes)`` returns a ``tf.lite`` interpreter with the
kernel set the model needs.
"""
import warnings

import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps.converter import options as caps_options
from tflm_caps.converter import tflite_abi as abi
from tflm_caps.converter.python_kernels import KernelSet, PythonKernel
from tflm_caps.reference import float_ref, int8 as int8_ref, quant


def parse_options(op_name, raw):
    """Options of a node: our versioned map, or (float graphs straight from the
    TF converter) the fused function's attributes."""
    if not raw:
        return {}
    from flatbuffers import flexbuffers
    value = flexbuffers.GetRoot(raw).Value
    if isinstance(value, dict) and C.OPT_VERSION in value:
        return caps_options.decode(op_name, raw, allow_float_model=True)
    return dict(value)


def _shape(call, index, rank, op):
    shape = call.input_tensors[index].shape()
    if len(shape) != rank:
        raise ValueError(f"{op}: input {index} must have rank {rank}, got shape {shape}")
    return shape


def _check_class_caps_shapes(call, op):
    u = _shape(call, 0, 3, op)
    w = _shape(call, 1, 4, op)
    if u[1] != w[0] or u[2] != w[3]:
        raise ValueError(f"{op}: u {u} does not match W {w} "
                         "(expected u [B, N_in, D_in], W [N_in, N_out, D_out, D_in])")
    return u, w


class _Squash(PythonKernel):
    name = C.SQUASH

    def check(self, call):
        _shape(call, 0, 3, self.name)

    def output_shapes(self, call):
        return [call.input_tensors[0].shape()]


class _Length(PythonKernel):
    name = C.LENGTH

    def check(self, call):
        _shape(call, 0, 3, self.name)

    def output_shapes(self, call):
        return [call.input_tensors[0].shape()[:-1]]


class _ClassCaps(PythonKernel):
    name = C.CLASS_CAPS

    def check(self, call):
        _check_class_caps_shapes(call, self.name)

    def output_shapes(self, call):
        u, w = call.input_tensors[0].shape(), call.input_tensors[1].shape()
        return [(u[0], w[1], w[2])]


# ----------------------------------------------------------------------------- float

class FloatSquash(_Squash):
    def invoke(self, call):
        call.outputs[0][...] = float_ref.squash(call.inputs[0])


class FloatLength(_Length):
    def invoke(self, call):
        call.outputs[0][...] = float_ref.length(call.inputs[0])


class FloatClassCaps(_ClassCaps):
    def __init__(self, recorder=None):
        self.recorder = recorder

    def invoke(self, call):
        num_routing = int(call.options[C.OPT_NUM_ROUTING])
        u, w = call.inputs
        call.outputs[0][...] = float_ref.class_caps_float(u, w, num_routing,
                                                          return_intermediates=False)
        if self.recorder is not None:
            self.recorder(call.output_indices[0], np.array(u, np.float32))


class _EfficientSquash(_Squash):
    name = C.EFFICIENT_SQUASH


class _SelfAttention(PythonKernel):
    name = C.SELF_ATTENTION_CAPS

    def check(self, call):
        u = _shape(call, 0, 3, self.name)
        w = _shape(call, 1, 4, self.name)
        b = _shape(call, 2, 2, self.name)
        if u[1] != w[0] or u[2] != w[3] or tuple(b) != (w[0], w[1]):
            raise ValueError(f"{self.name}: u {u}, W {w} and bias {b} do not match (expected "
                             "u [B, N_in, D_in], W [N_in, N_out, D_out, D_in], bias [N_in, N_out])")

    def output_shapes(self, call):
        u, w = call.input_tensors[0].shape(), call.input_tensors[1].shape()
        return [(u[0], w[1], w[2])]


class FloatEfficientSquash(_EfficientSquash):
    def invoke(self, call):
        call.outputs[0][...] = float_ref.efficient_squash(call.inputs[0])


class FloatSelfAttention(_SelfAttention):
    def __init__(self, recorder=None):
        self.recorder = recorder

    def invoke(self, call):
        u, w, b = call.inputs
        call.outputs[0][...] = float_ref.self_attention_float(u, w, b,
                                                              return_intermediates=False)
        if self.recorder is not None:
            self.recorder(call.output_indices[0], np.array(u, np.float32))


def float_kernels(recorder=None):
    """Float kernels; ``recorder(output_tensor_index, u)`` sees every ClassCaps and
    SelfAttentionCaps input."""
    return KernelSet([FloatSquash(), FloatLength(), FloatClassCaps(recorder),
                      FloatEfficientSquash(), FloatSelfAttention(recorder)], parse_options)


# ----------------------------------------------------------------------------- int8

def _int8_input(call, index, op):
    t = call.input_tensors[index]
    if t.type != abi.TFLITE_INT8:
        raise ValueError(f"{op}: input {index} ({t.name.decode()}) must be int8, "
                         f"got TfLiteType {t.type}")
    scales, zps, _ = call.input_quant(index)
    return t.array(), float(scales[0]), int(zps[0])


def _check_output(call, op, scale, zero_point):
    t = call.output_tensors[0]
    scales, zps, _ = call.output_quant(0)
    if (t.type != abi.TFLITE_INT8 or len(scales) != 1 or float(scales[0]) != scale
            or int(zps[0]) != zero_point):
        raise ValueError(f"{op}: output {t.name.decode()} must be int8 with scale {scale} and "
                         f"zero point {zero_point}, got type {t.type}, scales {list(scales)}, "
                         f"zero points {list(zps)}")


class Int8Squash(_Squash):
    def invoke(self, call):
        x, scale, zp = _int8_input(call, 0, self.name)
        _check_output(call, self.name, *C.OUTPUT_QUANT[C.SQUASH])
        params = quant.squash_params(scale, zp)
        if len(call.input_tensors) > 1:
            # The kernel computes the gains itself; the model's table must be
            # the one the C op reads in their place.
            table = np.asarray(call.inputs[1]).reshape(-1)
            if not np.array_equal(table, int8_ref.squash_table(x.shape[-1], params)):
                raise ValueError(f"{self.name}: input 1 (gain table) was not written for "
                                 f"capsule dim {x.shape[-1]} and {params}")
        call.outputs[0][...] = int8_ref.squash_s8(x, params)


class Int8Length(_Length):
    def invoke(self, call):
        x, scale, zp = _int8_input(call, 0, self.name)
        _check_output(call, self.name, *C.OUTPUT_QUANT[C.LENGTH])
        call.outputs[0][...] = int8_ref.length_s8(x, quant.length_params(scale, zp))


def class_caps_quant_from_node(call, op=C.CLASS_CAPS):
    """ClassCapsQuant of an int8 ClassCaps node (tensors + custom options)."""
    _, scale, zp = _int8_input(call, 0, op)
    w_scales, w_zps, w_dim = call.input_quant(1)
    if call.input_tensors[1].type not in (abi.TFLITE_INT8, abi.TFLITE_INT4) or np.any(w_zps != 0):
        raise ValueError(f"{op}: W must be symmetric int8 or int4")
    if len(w_scales) > 1 and w_dim != 1:
        raise ValueError(f"{op}: per-capsule W scales need quantized_dimension 1, got {w_dim}")
    o = call.options
    if C.OPT_U_HAT_SCALE not in o:
        raise ValueError(f"{op}: custom options lack the calibrated scales (a float model?)")
    return quant.ClassCapsQuant(scale, zp, tuple(w_scales), o[C.OPT_U_HAT_SCALE],
                                tuple(o[C.OPT_S_SCALES]), tuple(o[C.OPT_B_SCALES]))


class Int8ClassCaps(_ClassCaps):
    def invoke(self, call):
        u = call.input_tensors[0].array()
        u_shape, w_shape = _check_class_caps_shapes(call, self.name)
        w_tensor = call.input_tensors[1]
        if w_tensor.type == abi.TFLITE_INT4:
            w = int8_ref.unpack_weights_s4(w_tensor.packed_bytes(), w_shape)
        else:
            w = w_tensor.array()
        _check_output(call, self.name, *C.OUTPUT_QUANT[C.CLASS_CAPS])
        q = class_caps_quant_from_node(call, self.name)
        if q.routings != int(call.options[C.OPT_NUM_ROUTING]):
            raise ValueError(f"{self.name}: num_routing {call.options[C.OPT_NUM_ROUTING]} but "
                             f"{q.routings} s_scales")
        dims = quant.ClassCapsDims.from_shapes(u_shape, w_shape)
        params = quant.class_caps_params(dims, q)
        call.outputs[0][...] = int8_ref.class_caps_s8(u, w, params)


class Int8EfficientSquash(_EfficientSquash):
    def invoke(self, call):
        x, scale, zp = _int8_input(call, 0, self.name)
        _check_output(call, self.name, *C.OUTPUT_QUANT[C.EFFICIENT_SQUASH])
        call.outputs[0][...] = int8_ref.efficient_squash_s8(
            x, quant.efficient_squash_params(scale, zp))


def self_attention_quant_from_node(call, op=C.SELF_ATTENTION_CAPS):
    """(SelfAttentionQuant, int32 bias) of an int8 SelfAttentionCaps node."""
    _, scale, zp = _int8_input(call, 0, op)
    w_scales, w_zps, w_dim = call.input_quant(1)
    if call.input_tensors[1].type != abi.TFLITE_INT8 or np.any(w_zps != 0):
        raise ValueError(f"{op}: W must be symmetric int8")
    if len(w_scales) > 1 and w_dim != 1:
        raise ValueError(f"{op}: per-capsule W scales need quantized_dimension 1, got {w_dim}")
    b_scales, b_zps, _ = call.input_quant(2)
    if (call.input_tensors[2].type != abi.TFLITE_INT32 or len(b_scales) != 1
            or float(b_scales[0]) != C.ATTENTION_BIAS_SCALE or int(b_zps[0]) != 0):
        raise ValueError(f"{op}: the bias must be int32 with scale 2^-15 and zero point 0")
    o = call.options
    if C.OPT_U_HAT_SCALE not in o:
        raise ValueError(f"{op}: custom options lack the calibrated scales (a float model?)")
    return (quant.SelfAttentionQuant(scale, zp, tuple(w_scales), o[C.OPT_U_HAT_SCALE],
                                     o[C.OPT_S_SCALE]), call.inputs[2])


class Int8SelfAttention(_SelfAttention):
    def invoke(self, call):
        u, w = call.inputs[0], call.inputs[1]
        self.check(call)
        _check_output(call, self.name, *C.OUTPUT_QUANT[C.SELF_ATTENTION_CAPS])
        q, bias = self_attention_quant_from_node(call, self.name)
        dims = quant.ClassCapsDims.from_shapes(u.shape, w.shape)
        params = quant.self_attention_params(dims, q, bias)
        call.outputs[0][...] = int8_ref.self_attention_s8(u, w, bias, params)


def int8_kernels():
    return KernelSet([Int8Squash(), Int8Length(), Int8ClassCaps(), Int8EfficientSquash(),
                      Int8SelfAttention()], parse_options)


def _is_int8_model(model_bytes):
    """True when the ClassCaps weights are int8 (a converted, not a float, model)."""
    from tflm_caps.tflite import check_model

    info = check_model(bytes(model_bytes))
    for op in info.ops_named(C.CLASS_CAPS) + info.ops_named(C.SELF_ATTENTION_CAPS):
        return info.tensors[op.inputs[1]].type_name in ("int8", "int4")
    return all(t.type_name == "int8" for t in info.input_tensors())


def make_interpreter(model_bytes, kernels=None, reference_builtins=True,
                     preserve_all_tensors=False):
    """A ``tf.lite`` interpreter running ``model_bytes`` with Python capsule kernels.

    The kernel set is chosen from the model (int8 kernels when the ClassCaps
    weights are int8, else float) unless ``kernels`` is given.
    ``reference_builtins`` selects TFLite's reference builtin kernels (the
    ones TFLM's are derived from) instead of the optimized/XNNPACK ones.
    Returns (interpreter, kernel_set); call ``kernel_set.raise_pending()``
    after ``invoke()`` to surface kernel errors.
    """
    from tensorflow.lite.python.interpreter import InterpreterWithCustomOps, OpResolverType

    if kernels is None:
        kernels = int8_kernels() if _is_int8_model(model_bytes) else float_kernels()
    resolver = (OpResolverType.BUILTIN_REF if reference_builtins
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    with warnings.catch_warnings():
        # tf.lite.Interpreter announces its move to ai_edge_litert (not on PyPI
        # for this TensorFlow pin); the pinned TensorFlow still ships it.
        warnings.simplefilter("ignore", UserWarning)
        interp = InterpreterWithCustomOps(
            model_content=bytes(model_bytes), custom_op_registerers=[kernels.registerer],
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=preserve_all_tensors)
    # The resolver keeps pointers to the kernels' ctypes callbacks: tie their
    # lifetime to the interpreter's.
    interp._tflm_caps_kernels = kernels
    interp.allocate_tensors()
    kernels.raise_pending()
    return interp, kernels


def run_model(model_bytes, images, *, kernels=None, reference_builtins=True, progress=False):
    """Run a converted (or float) model over ``images`` [N, H, W, C] in ``tf.lite``.

    Quantizes float images for an int8 input and dequantizes an int8 output;
    returns (float lengths [N, classes], raw outputs [N, classes]).  N must
    be a multiple of the model's batch size.
    """
    from tflm_caps.console import progress as progress_bar

    interp, kset = make_interpreter(model_bytes, kernels, reference_builtins)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    batch = int(inp["shape"][0])
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(inp["shape"][1:]):
        raise ValueError(f"images must be [N, {', '.join(map(str, inp['shape'][1:]))}], "
                         f"got {images.shape}")
    if len(images) % batch:
        raise ValueError(f"{len(images)} images are not a multiple of the batch size {batch}")
    raw = []
    for start in progress_bar(range(0, len(images), batch), enabled=progress, leave=False,
                              desc="tflite", unit="batch"):
        x = images[start:start + batch]
        if inp["dtype"] == np.int8:
            scale, zp = inp["quantization"]
            x = quant.quantize(x, scale, zp)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        kset.raise_pending()
        raw.append(interp.get_tensor(out["index"]).copy())
    raw = np.concatenate(raw)
    if out["dtype"] == np.int8:
        scale, zp = out["quantization"]
        return quant.dequantize(raw, scale, zp), raw
    return raw.astype(np.float64), raw
