"""Python kernels of the capsule custom ops for TensorFlow Lite's interpreter.

- ``float_kernels(recorder)``: float math of ``tflm_caps.reference.float_ref``
  for calibrating and running float graphs; the ClassCaps kernel hands its
  float input capsules to ``recorder`` (the routing intermediates are
  calibrated from them, see ``calibration.py``).
- ``int8_kernels()``: the numpy integer reference (``tflm_caps.reference.int8``),
  bit-exact with the C kernels, so a converted int8 model runs in ``tf.lite``
  exactly as the custom ops compute in TFLM (builtins use TFLite's kernels).

``make_interpreter(model_bytes)`` returns a ``tf.lite`` interpreter with the
kernel set the model needs.
"""
import warnings

import numpy as np

from tflm_caps.converter import composites
from tflm_caps.converter import options as caps_options
from tflm_caps.converter.python_kernels import KernelSet, PythonKernel
from tflm_caps.reference import float_ref, int8 as int8_ref, quant


def parse_options(op_name, raw):
    """Options of a node: our versioned map, or (float graphs straight from the
    TF converter) the fused function's attributes."""
    if not raw:
        return {}
    from flatbuffers import flexbuffers
    value = flexbuffers.GetRoot(raw).Value
    if isinstance(value, dict) and "version" in value:
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
    name = composites.SQUASH

    def check(self, call):
        _shape(call, 0, 3, self.name)

    def output_shapes(self, call):
        return [call.input_tensors[0].shape()]


class _Length(PythonKernel):
    name = composites.LENGTH

    def check(self, call):
        _shape(call, 0, 3, self.name)

    def output_shapes(self, call):
        return [call.input_tensors[0].shape()[:-1]]


class _ClassCaps(PythonKernel):
    name = composites.CLASS_CAPS

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
        num_routing = int(call.options["num_routing"])
        u, w = call.inputs
        call.outputs[0][...] = float_ref.class_caps_float(u, w, num_routing,
                                                          return_intermediates=False)
        if self.recorder is not None:
            self.recorder(call.output_indices[0], np.array(u, np.float32))


def float_kernels(recorder=None):
    """Float kernels; ``recorder(output_tensor_index, u)`` sees every ClassCaps input."""
    return KernelSet([FloatSquash(), FloatLength(), FloatClassCaps(recorder)], parse_options)


# ----------------------------------------------------------------------------- int8

def _int8_input(call, index, op):
    t = call.input_tensors[index]
    if t.type != 9:
        raise ValueError(f"{op}: input {index} ({t.name.decode()}) must be int8, "
                         f"got TfLiteType {t.type}")
    scales, zps, _ = call.input_quant(index)
    return call.inputs[index], float(scales[0]), int(zps[0])


def _check_output(call, op, scale, zero_point):
    t = call.output_tensors[0]
    scales, zps, _ = call.output_quant(0)
    if t.type != 9 or len(scales) != 1 or float(scales[0]) != scale or int(zps[0]) != zero_point:
        raise ValueError(f"{op}: output {t.name.decode()} must be int8 with scale {scale} and "
                         f"zero point {zero_point}, got type {t.type}, scales {list(scales)}, "
                         f"zero points {list(zps)}")


class Int8Squash(_Squash):
    def invoke(self, call):
        x, scale, zp = _int8_input(call, 0, self.name)
        _check_output(call, self.name, quant.SQUASH_OUT_SCALE, quant.SQUASH_OUT_ZERO_POINT)
        call.outputs[0][...] = int8_ref.squash_s8(x, quant.squash_params(scale, zp))


class Int8Length(_Length):
    def invoke(self, call):
        x, scale, zp = _int8_input(call, 0, self.name)
        _check_output(call, self.name, quant.LENGTH_OUT_SCALE, quant.LENGTH_OUT_ZERO_POINT)
        call.outputs[0][...] = int8_ref.length_s8(x, quant.length_params(scale, zp))


def class_caps_quant_from_node(call, op=composites.CLASS_CAPS):
    """ClassCapsQuant of an int8 ClassCaps node (tensors + custom options)."""
    _, scale, zp = _int8_input(call, 0, op)
    w_scales, w_zps, w_dim = call.input_quant(1)
    if call.input_tensors[1].type != 9 or np.any(w_zps != 0):
        raise ValueError(f"{op}: W must be symmetric int8")
    if len(w_scales) > 1 and w_dim != 1:
        raise ValueError(f"{op}: per-capsule W scales need quantized_dimension 1, got {w_dim}")
    o = call.options
    if "u_hat_scale" not in o:
        raise ValueError(f"{op}: custom options lack the calibrated scales (a float model?)")
    return quant.ClassCapsQuant(scale, zp, tuple(w_scales), o["u_hat_scale"],
                                tuple(o["s_scales"]), tuple(o["b_scales"]))


class Int8ClassCaps(_ClassCaps):
    def invoke(self, call):
        u, w = call.inputs
        u_shape, w_shape = _check_class_caps_shapes(call, self.name)
        _check_output(call, self.name, quant.SQUASH_OUT_SCALE, quant.SQUASH_OUT_ZERO_POINT)
        q = class_caps_quant_from_node(call, self.name)
        if q.routings != int(call.options["num_routing"]):
            raise ValueError(f"{self.name}: num_routing {call.options['num_routing']} but "
                             f"{q.routings} s_scales")
        dims = quant.ClassCapsDims.from_shapes(u_shape, w_shape)
        params = quant.class_caps_params(dims, q)
        call.outputs[0][...] = int8_ref.class_caps_s8(u, w, params)


def int8_kernels():
    return KernelSet([Int8Squash(), Int8Length(), Int8ClassCaps()], parse_options)


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
        from tflm_caps.converter.summary import is_int8_model
        kernels = int8_kernels() if is_int8_model(model_bytes) else float_kernels()
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
    from tqdm import tqdm

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
    for start in tqdm(range(0, len(images), batch), disable=not progress, leave=False,
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
