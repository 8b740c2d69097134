"""FlexBuffer ``custom_options`` of the capsule custom ops (docs/custom_ops.md).

Encoding and decoding live in one place so the writer, the Python kernels
and the tests agree; the keys, their kinds and the version are those of
``tflm_caps.ops_contract``.
"""
import array
import math

from flatbuffers import flexbuffers

from tflm_caps import ops_contract as C


class OptionsError(ValueError):
    """custom_options missing, malformed or of an unknown version."""


def _check_scale(op, key, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise OptionsError(f"{op}: option {key!r} must be a positive finite scale, got {value!r}")


def encode(op_name, options, float_model=False):
    """FlexBuffer bytes of ``options`` (a dict) for ``op_name``; validates keys and types.

    ``float_model``: options of a float graph, without the calibrated scales.
    """
    if op_name not in C.OPTION_KEYS:
        raise OptionsError(f"unknown custom op {op_name!r}; known: {', '.join(C.OPTION_KEYS)}")
    spec = dict(C.OPTION_KEYS[op_name])
    if float_model:
        for key in C.CALIBRATED_KEYS:
            spec.pop(key, None)
    options = {C.OPT_VERSION: C.OPTIONS_VERSION, **options}
    unknown = sorted(set(options) - set(spec))
    missing = sorted(set(spec) - set(options))
    if unknown or missing:
        raise OptionsError(f"{op_name}: unknown option(s) {unknown}, missing {missing}")
    if op_name == C.CLASS_CAPS:
        _check_routing(op_name, options, float_model)
    fbb = flexbuffers.Builder()
    with fbb.Map():
        for key in sorted(spec):
            kind, value = spec[key], options[key]
            if kind == "int":
                if isinstance(value, bool):
                    value = int(value)
                if not isinstance(value, int):
                    raise OptionsError(f"{op_name}: option {key!r} must be an int, got {value!r}")
                fbb.Int(key, value)
            elif kind == "float":
                _check_scale(op_name, key, value)
                fbb.Float(key, float(array.array("f", [value])[0]))
            else:
                values = [float(v) for v in value]
                for v in values:
                    _check_scale(op_name, key, v)
                fbb.Key(key)
                fbb.TypedVectorFromElements(array.array("f", values))
    return bytes(fbb.Finish())


def _check_routing(op_name, options, float_model):
    r = options[C.OPT_NUM_ROUTING]
    if (isinstance(r, bool) or not isinstance(r, int)
            or not C.MIN_ROUTINGS <= r <= C.MAX_ROUTINGS):
        raise OptionsError(f"{op_name}: num_routing must be an int in "
                           f"[{C.MIN_ROUTINGS}, {C.MAX_ROUTINGS}], got {r!r}")
    if options[C.OPT_STORE_PREDICTIONS] not in (0, 1, True, False):
        raise OptionsError(f"{op_name}: store_predictions must be 0 or 1, "
                           f"got {options[C.OPT_STORE_PREDICTIONS]!r}")
    if float_model:
        return
    if len(options[C.OPT_S_SCALES]) != r:
        raise OptionsError(f"{op_name}: s_scales needs num_routing={r} entries, "
                           f"got {len(options[C.OPT_S_SCALES])}")
    if len(options[C.OPT_B_SCALES]) != r - 1:
        raise OptionsError(f"{op_name}: b_scales needs num_routing-1={r - 1} entries, "
                           f"got {len(options[C.OPT_B_SCALES])}")


def decode(op_name, data, allow_float_model=False):
    """Dict of the options in ``data`` (bytes); float vectors become lists.

    Validates keys and lengths like ``encode`` (``allow_float_model`` accepts
    the options of a float graph, without calibrated scales).
    """
    if not data:
        raise OptionsError(f"{op_name}: custom_options are empty (expected a FlexBuffer map "
                           "with 'version')")
    try:
        root = flexbuffers.GetRoot(bytes(data))
        if not root.IsMap:
            raise OptionsError(f"{op_name}: custom_options are not a FlexBuffer map")
        value = root.Value
    except OptionsError:
        raise
    except Exception as exc:  # flexbuffers raises assorted errors on garbage
        raise OptionsError(f"{op_name}: custom_options are not a valid FlexBuffer ({exc})") from exc
    version = value.get(C.OPT_VERSION)
    if version != C.OPTIONS_VERSION:
        raise OptionsError(f"{op_name}: options version {version!r} is not supported "
                           f"(expected {C.OPTIONS_VERSION})")
    out = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in value.items()}
    float_model = allow_float_model and not any(k in out for k in C.CALIBRATED_KEYS)
    spec = dict(C.OPTION_KEYS.get(op_name, {}))
    missing = sorted(k for k in spec if k not in out
                     and not (float_model and k in C.CALIBRATED_KEYS))
    if missing:
        raise OptionsError(f"{op_name}: custom_options lack {missing}")
    if op_name == C.CLASS_CAPS:
        _check_routing(op_name, out, float_model)
    return out


def map_byte_width(data):
    """Byte width of the root map's inline values (for the format guarantee in the docs)."""
    # Last byte: width of the root reference; the byte before: packed type of
    # the root (type << 2 | log2 of the width of the map's elements).
    return 1 << (data[-2] & 3)
