"""The operators' C FlexBuffer reader (tflm_caps_ops/tflm/caps_flexbuffer.cc)
against the flatbuffers package's writer, including every encoding the
writer can choose and corrupt buffers (which must never read out of
bounds: fuzzed in a subprocess, so a crash fails the test)."""
import array
import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flatbuffers import flexbuffers

from support.model_builder import encode_options
from tflm_caps.runtime import _library

OK, NOT_FOUND, MALFORMED, WRONG_TYPE = 0, 1, -1, -2


def c_int(buf, key):
    buf = bytes(buf)
    out = ctypes.c_int64()
    st = _library.load_library().TFLMCaps_FlexbufMapInt(buf, len(buf), key.encode(),
                                                         ctypes.byref(out))
    return st, out.value


def c_num(buf, key, index=-1):
    buf = bytes(buf)
    out = ctypes.c_double()
    st = _library.load_library().TFLMCaps_FlexbufMapNumber(buf, len(buf), key.encode(), index,
                                                            ctypes.byref(out))
    return st, out.value


def c_size(buf, key):
    buf = bytes(buf)
    out = ctypes.c_int32()
    st = _library.load_library().TFLMCaps_FlexbufMapVectorSize(buf, len(buf), key.encode(),
                                                                ctypes.byref(out))
    return st, out.value


@pytest.mark.parametrize("value", [0, 1, -1, 127, -128, 300, -40000, 2**31 - 1, -2**31,
                                   2**40, -2**62, 2**63 - 1])
def test_ints_of_every_width(value):
    buf = flexbuffers.Dumps({"k": value, "version": 1})
    assert c_int(buf, "k") == (OK, value)
    assert c_num(buf, "k") == (OK, float(value))


def test_uint_bool_and_indirect_scalars():
    fbb = flexbuffers.Builder()
    with fbb.Map():
        fbb.UInt("u", 200)
        fbb.UInt("big", 2**64 - 1)
        fbb.Bool("t", True)
        fbb.Bool("f", False)
        fbb.Key("ii")
        fbb.IndirectInt(-70000)
        fbb.Key("iu")
        fbb.IndirectUInt(65000)
        fbb.Key("if")
        fbb.IndirectFloat(0.15625)
    buf = bytes(fbb.Finish())
    assert c_int(buf, "u") == (OK, 200)
    assert c_int(buf, "big")[0] == WRONG_TYPE  # does not fit int64
    assert c_int(buf, "t") == (OK, 1)
    assert c_int(buf, "f") == (OK, 0)
    assert c_int(buf, "ii") == (OK, -70000)
    assert c_int(buf, "iu") == (OK, 65000)
    assert c_num(buf, "if") == (OK, 0.15625)
    assert c_int(buf, "if")[0] == WRONG_TYPE


@pytest.mark.parametrize("value", [0.1, 1e-30, 3.0e38, -2.5])
def test_floats_inline(value):
    buf = flexbuffers.Dumps({"s": value})  # 64 bit unless float32 holds it exactly
    assert c_num(buf, "s") == (OK, value)


@pytest.mark.parametrize("value", [0.1, 1e-30, 3.0e38, -2.5])
def test_floats_32_bit(value):
    fbb = flexbuffers.Builder(force_min_bit_width=flexbuffers.BitWidth.W32)
    with fbb.Map():
        fbb.Key("s")
        fbb.TypedVectorFromElements(array.array("f", [value]))
        fbb.Int("version", 1)
    buf = bytes(fbb.Finish())
    assert c_num(buf, "s", 0) == (OK, float(np.float32(value)))


def test_float32_from_converter_encoding():
    v = float(np.float32(0.0123))
    buf = encode_options({"version": 1, "u_hat_scale": v, "s_scales": [0.5, 0.25, 1e-3]})
    assert c_num(buf, "u_hat_scale") == (OK, v)
    assert c_size(buf, "s_scales") == (OK, 3)
    assert [c_num(buf, "s_scales", i)[1] for i in range(3)] == \
        [float(np.float32(x)) for x in (0.5, 0.25, 1e-3)]
    assert c_num(buf, "s_scales", 3)[0] == NOT_FOUND


def test_vector_encodings():
    fbb = flexbuffers.Builder()
    with fbb.Map():
        fbb.Key("typed64")
        fbb.TypedVectorFromElements(array.array("d", [0.5, 1e-200]))
        fbb.Key("typed_int")
        fbb.TypedVectorFromElements(array.array("h", [-3, 700]))
        fbb.Key("fixed3")
        fbb.FixedTypedVectorFromElements(array.array("f", [1.0, 2.0, 0.25]))
        fbb.Key("untyped")
        with fbb.Vector():
            fbb.Float(0.75)
            fbb.Int(-4)
            fbb.Float(1e-40)
        fbb.Key("empty")
        fbb.TypedVectorFromElements(array.array("f", []))
    buf = bytes(fbb.Finish())
    assert c_size(buf, "typed64") == (OK, 2)
    assert c_num(buf, "typed64", 1) == (OK, 1e-200)
    assert c_size(buf, "typed_int") == (OK, 2)
    assert c_num(buf, "typed_int", 1) == (OK, 700.0)
    assert c_size(buf, "fixed3") == (OK, 3)
    assert c_num(buf, "fixed3", 2) == (OK, 0.25)
    assert c_size(buf, "untyped") == (OK, 3)
    assert [c_num(buf, "untyped", i) for i in range(3)] == \
        [(OK, 0.75), (OK, -4.0), (OK, 1e-40)]
    assert c_size(buf, "empty") == (OK, 0)
    assert c_size(buf, "nothere")[0] == NOT_FOUND
    # A vector is not a number and a number is not a vector.
    assert c_num(buf, "typed64")[0] == WRONG_TYPE


def test_many_keys_and_wide_maps():
    opts = {f"key{i:03d}": i * 1000003 for i in range(300)}
    opts["version"] = 1
    buf = flexbuffers.Dumps(opts)
    for key in ("key000", "key150", "key299", "version"):
        assert c_int(buf, key) == (OK, opts[key])
    assert c_int(buf, "key")[0] == NOT_FOUND
    assert c_int(buf, "key2999")[0] == NOT_FOUND


def test_root_not_a_map_and_garbage():
    assert c_int(flexbuffers.Dumps(5), "version")[0] == WRONG_TYPE
    assert c_int(flexbuffers.Dumps([1, 2]), "version")[0] == WRONG_TYPE
    for junk in (b"", b"\x01", b"\x00\x00", b"\xff" * 16, b"\x00\x24\x01"):
        assert c_int(junk, "version")[0] in (MALFORMED, WRONG_TYPE)


def test_fuzzed_buffers_never_read_out_of_bounds():
    """Every truncation and 4000 random corruptions of an options buffer:
    the reader returns a status (any) and the process survives.  Runs in a
    subprocess; buffers are copied to exactly-sized heap blocks so any
    overrun would hit memory the process does not own as early as possible."""
    code = textwrap.dedent("""
        import ctypes, random
        import numpy as np
        from tflm_caps.runtime import _library
        from support.model_builder import encode_options
        lib = _library.load_library()
        base = encode_options({"version": 1, "num_routing": 3, "store_predictions": 1,
                               "u_hat_scale": 0.01, "s_scales": [0.1, 0.2, 0.3],
                               "b_scales": [0.4, 0.5]})
        rng = random.Random(7)
        cases = [base[:n] for n in range(len(base))] + [base[-n:] for n in range(1, len(base))]
        for _ in range(4000):
            b = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cases.append(bytes(b))
        statuses = set()
        d = ctypes.c_double(); i = ctypes.c_int64(); n = ctypes.c_int32()
        for c in cases:
            buf = ctypes.create_string_buffer(c, len(c))
            for key in (b"version", b"num_routing", b"u_hat_scale"):
                statuses.add(lib.TFLMCaps_FlexbufMapInt(buf, len(c), key, ctypes.byref(i)))
            for k in range(-1, 4):
                statuses.add(lib.TFLMCaps_FlexbufMapNumber(buf, len(c), b"s_scales", k,
                                                           ctypes.byref(d)))
            statuses.add(lib.TFLMCaps_FlexbufMapVectorSize(buf, len(c), b"b_scales",
                                                           ctypes.byref(n)))
        print(sorted(statuses))
    """)
    # Run from tests/ so that the snippet imports the test support package.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, f"reader crashed on a corrupt buffer: {proc.stderr[-2000:]}"
    statuses = eval(proc.stdout.strip())  # noqa: S307 - our own printed list
    assert MALFORMED in statuses and OK in statuses
