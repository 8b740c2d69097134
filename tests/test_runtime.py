"""tflm_caps.runtime: model checks, TFLMRunner I/O handling, arena sizing."""
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from support.model_builder import (OpSpec, TensorSpec, build_model, class_caps_model,
                                   random_class_caps, squash_model)
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q
from tflm_caps.runtime import (MIN_SAFE_ARENA, ArenaTooSmallError, ModelFormatError, TFLMRunner,
                               check_model, find_min_arena_size, quantize_like_tflite)


@pytest.fixture(scope="module")
def caps_model():
    return class_caps_model(1, *random_class_caps(0, 32, 5, 6, 4))


def float_io_squash_model():
    """QUANTIZE -> TFLMCaps_Squash -> DEQUANTIZE with float32 graph I/O."""
    from support.model_builder import encode_options
    tensors = [TensorSpec("image", (1, 3, 4), "float32"),
               TensorSpec("x_q", (1, 3, 4), "int8", scale=0.05, zero_point=-2),
               TensorSpec("v_q", (1, 3, 4), "int8", scale=1 / 128, zero_point=0),
               TensorSpec("v", (1, 3, 4), "float32")]
    ops = [OpSpec("QUANTIZE", [0], [1]),
           OpSpec("TFLMCaps_Squash", [1], [2], encode_options({"version": 1})),
           OpSpec("DEQUANTIZE", [2], [3])]
    return build_model(tensors, ops, [0], [3])


# ----------------------------------------------------------------------------
# check_model
# ----------------------------------------------------------------------------

def test_check_model_describes_the_graph(caps_model):
    info = check_model(caps_model)
    assert info.custom_codes == ["TFLMCaps_ClassCaps"]
    (op,) = info.operators
    assert op.op_name == "TFLMCaps_ClassCaps" and op.inputs == (0, 1) and op.outputs == (2,)
    w = info.tensors[1]
    assert w.shape == (32, 5, 6, 4) and w.is_constant and w.type_name == "int8"
    assert w.scale.size == 5 and w.quantized_dimension == 1
    assert info.input_tensors()[0].quantization == (pytest.approx(1 / 128), 0)
    assert info.output_tensors()[0].quantization == (1 / 128, 0)


@pytest.mark.parametrize("data,fragment", [
    (b"", "too short"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "file identifier"),
    (bytes(4) + b"TFL3", "vtable size 0"),
    (b"\xff\x00\x00\x00TFL3", "points outside the file"),
    (b"\x10\x00\x00\x00TFL3" + bytes(8), "malformed"),
])
def test_not_a_model(data, fragment):
    with pytest.raises(ModelFormatError, match=fragment):
        check_model(data)


def test_every_truncation_is_rejected(caps_model):
    for n in range(0, len(caps_model) - 1, 7):
        with pytest.raises(ModelFormatError):
            check_model(caps_model[:n])


def test_semantic_checks():
    x = TensorSpec("x", (1, 4, 8), "int8", scale=0.1, zero_point=0)
    v = TensorSpec("v", (1, 4, 8), "int8", scale=1 / 128, zero_point=0)
    bad_index = build_model([x, v], [OpSpec("TFLMCaps_Squash", [0], [5])], [0], [1])
    with pytest.raises(ModelFormatError, match=r"outputs refers to tensor 5, but the subgraph "
                                               r"has 2 tensors"):
        check_model(bad_index)
    short = TensorSpec("W", (2, 3), "int8", scale=0.1, zero_point=0, data=np.zeros(6))
    model = bytearray(build_model([x, v, short], [OpSpec("TFLMCaps_Squash", [0], [1])], [0],
                                  [1]))
    # shrink the constant's recorded shape from [2, 3] to [2, 4]: data no longer matches
    info = check_model(bytes(model))
    assert info.tensors[2].nbytes == 6
    idx = bytes(model).find(np.array([2, 3], "<i4").tobytes())
    model[idx + 4:idx + 8] = np.array([4], "<i4").tobytes()
    with pytest.raises(ModelFormatError, match=r"tensor 2 \('W'\) has 6 bytes of constant "
                                               r"data, expected 8"):
        check_model(bytes(model))


def test_unknown_custom_op_is_refused():
    x = TensorSpec("x", (1, 2), "int8", scale=0.1, zero_point=0)
    model = build_model([x, x], [OpSpec("SomeoneElses_Op", [0], [1])], [0], [1])
    with pytest.raises(ModelFormatError, match="SomeoneElses_Op.*does not provide"):
        TFLMRunner(model)


def test_fuzzed_models_never_crash(caps_model):
    """Random byte corruptions of a model: each is refused with a clear
    error or runs; the process never dies (checked in a subprocess)."""
    rng = random.Random(11)
    cases = []
    for _ in range(300):
        b = bytearray(caps_model)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append(bytes(b))
    code = textwrap.dedent("""
        import sys, pickle, collections
        import numpy as np
        from tflm_caps.runtime import TFLMRunner
        counts = collections.Counter()
        for data in pickle.load(open(sys.argv[1], "rb")):
            try:
                r = TFLMRunner(data)
                t = r.info.input_tensors()[0]
                r.predict(np.zeros(t.shape, t.dtype or np.int8))
                counts["ran"] += 1
            except (ValueError, RuntimeError) as exc:
                counts[type(exc).__name__] += 1
        print(dict(counts))
    """)
    import pickle
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
        pickle.dump(cases, f)
    try:
        proc = subprocess.run([sys.executable, "-c", code, f.name], capture_output=True,
                              text=True, timeout=600)
    finally:
        os.unlink(f.name)
    assert proc.returncode == 0, f"a corrupt model crashed the process: {proc.stderr[-3000:]}"
    counts = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our printed dict
    # most flips land in the weights (the model still runs); the rest must be refused
    assert counts.get("ModelFormatError", 0) >= 20 and counts.get("ran", 0) >= 100
    assert sum(counts.values()) == len(cases)


# ----------------------------------------------------------------------------
# TFLMRunner I/O
# ----------------------------------------------------------------------------

def test_float_inputs_are_quantized_like_tflite():
    model = squash_model((2, 3, 4), 0.05, -2)
    runner = TFLMRunner(model)
    assert runner.batch_size == 2
    xf = np.random.default_rng(1).normal(0, 2, (6, 3, 4)).astype(np.float32)
    xq = quantize_like_tflite(xf, 0.05, -2)
    np.testing.assert_array_equal(runner.predict(xf, dequantize=False),
                                  runner.predict(xq, dequantize=False))
    # same integers as TFLM's own QUANTIZE op in a float-I/O graph
    fio = TFLMRunner(float_io_squash_model())
    out_float = fio.predict(xf[:, :, :].reshape(6, 3, 4)[:, :, :])
    np.testing.assert_array_equal(out_float, runner.predict(xf))


def test_quantize_rounds_half_away_from_zero():
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.4999998, 1000.0, -1000.0], np.float32)
    np.testing.assert_array_equal(quantize_like_tflite(x, 1.0, 0),
                                  [1, -1, 2, -2, 2, 127, -128])


@pytest.mark.parametrize("x,fragment", [
    (np.zeros((2, 3, 5), np.int8), r"expected shape \[N, 3, 4\]"),
    (np.zeros((3, 4), np.int8), r"expected shape \[N, 3, 4\]"),
    (np.zeros((3, 3, 4), np.int8), "not a multiple of the model's batch size 2"),
    (np.zeros((2, 3, 4), np.int32), "wrong dtype int32; the model expects int8"),
    (np.zeros((2, 3, 4), np.uint8), "wrong dtype uint8"),
    (np.zeros((2, 3, 4), bool), "wrong dtype bool"),
])
def test_wrong_input_is_a_value_error(x, fragment):
    runner = TFLMRunner(squash_model((2, 3, 4), 0.05, 0))
    with pytest.raises(ValueError, match=fragment):
        runner.predict(x)


def test_float_model_refuses_int8_input():
    runner = TFLMRunner(float_io_squash_model())
    with pytest.raises(ValueError, match="wrong dtype int8; the model expects float32"):
        runner.predict(np.zeros((1, 3, 4), np.int8))


def test_model_from_path_and_missing_file(tmp_path):
    path = tmp_path / "squash.tflite"
    path.write_bytes(squash_model((1, 2, 2), 0.1, 0))
    assert TFLMRunner(str(path)).name == "squash.tflite"
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        TFLMRunner(str(tmp_path / "missing.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelFormatError, match="bad.tflite"):
        TFLMRunner(str(bad))


def test_intermediates_need_preserved_tensors(caps_model):
    runner = TFLMRunner(caps_model)
    with pytest.raises(ValueError, match="preserve_all_tensors"):
        runner.intermediates(np.zeros((1, 32, 4), np.int8), [2])


# ----------------------------------------------------------------------------
# Arena
# ----------------------------------------------------------------------------

def test_min_arena_is_exact(caps_model):
    size, details = find_min_arena_size(caps_model, return_details=True)
    assert MIN_SAFE_ARENA < size < 64 * 1024
    assert details["probes"] >= 10
    # One byte less fails (a clear error, checked in a subprocess first), the
    # minimum runs and gives the same output as a generous arena.
    with pytest.raises(ArenaTooSmallError, match=f"arena_size={size - 1} bytes is too small"):
        TFLMRunner(caps_model, arena_size=size - 1)
    x = np.random.default_rng(3).integers(-128, 128, (4, 32, 4)).astype(np.int8)
    exact = TFLMRunner(caps_model, arena_size=size)
    assert exact.arena_size == size
    np.testing.assert_array_equal(exact.predict(x), TFLMRunner(caps_model).predict(x))
    # The class-caps scratch is inside the figure: recomputing predictions needs less.
    print(f"class-caps model: min arena {size} bytes, wheel says "
          f"{details['wheel_reported_bytes']}")


def test_squash_gain_table_is_in_the_arena():
    """TFLMCaps_Squash keeps its gain table in the arena: the minimum arena
    covers it and one byte less is a clear error, not a crash."""
    from tflm_caps import native
    model = squash_model((1, 64, 4), 0.05, 3)
    size = find_min_arena_size(model)
    table = native.squash_buffer_size(4, q.squash_params(0.05, 3))
    assert table > 5000 and size > table
    with pytest.raises(ArenaTooSmallError):
        TFLMRunner(model, arena_size=size - 1)
    x = np.random.default_rng(5).integers(-128, 128, (1, 64, 4)).astype(np.int8)
    got = TFLMRunner(model, arena_size=size).predict(x, dequantize=False)
    np.testing.assert_array_equal(got, ref.squash_s8(x, q.squash_params(0.05, 3)))


def test_preserved_tensors_need_more_arena(caps_model):
    normal = find_min_arena_size(caps_model)
    preserved = find_min_arena_size(caps_model, preserve_all_tensors=True)
    assert preserved > normal
    with pytest.raises(ArenaTooSmallError):
        # this size crashes the wheel in-process; the runner must refuse it cleanly
        TFLMRunner(caps_model, arena_size=preserved - 64, preserve_all_tensors=True)


@pytest.mark.parametrize("size", [0, 1, 100, MIN_SAFE_ARENA - 1])
def test_tiny_arena_is_refused_without_touching_tflm(size):
    with pytest.raises(ArenaTooSmallError, match="too small for any model"):
        TFLMRunner(squash_model((1, 2, 2), 0.1, 0), arena_size=size)


def test_arena_argument_type():
    with pytest.raises(TypeError, match="arena_size must be an integer"):
        TFLMRunner(squash_model((1, 2, 2), 0.1, 0), arena_size="lots")
