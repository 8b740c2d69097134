"""The runtime's pre-check of builtin shapes and the structured model fuzzer.

A converted CapsNet (tests/fuzz/models/tiny8.tflite) is corrupted in the
ways the model mutator found crashes: TFLM's reference kernels trust the
shapes, so an inconsistent model must be refused by
``tflm_caps.tflite.check_model`` (naming operator and tensor) before TFLM
sees it.  The smoke run of tests/fuzz/mutate_models.py runs a few hundred
mutants in a subprocess and requires no crash, hang or stray exception.
"""
import glob
import os
import struct
import sys

import numpy as np
import pytest

from tflm_caps import tflite
from tflm_caps.runtime import ModelFormatError, TFLMRunner
from tflm_caps.tflite import reader, tables

FUZZ_DIR = os.path.join(os.path.dirname(__file__), "fuzz")
SEED = os.path.join(FUZZ_DIR, "models", "tiny8.tflite")
REGRESSIONS = sorted(glob.glob(os.path.join(FUZZ_DIR, "models", "regressions", "*.tflite")))


@pytest.fixture(scope="module")
def seed_bytes():
    with open(SEED, "rb") as f:
        return f.read()


def _edit(seed_bytes, change):
    model = tflite.load(seed_bytes)
    change(model, model.subgraphs[0])
    return tflite.dump(model)


def _refused(data, *fragments):
    with pytest.raises(ModelFormatError) as err:
        TFLMRunner(data)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_seed_model_runs_and_matches_its_checked_shapes(seed_bytes):
    runner = TFLMRunner(seed_bytes)
    conv = runner.info.ops_named("CONV_2D")
    assert [op.builtin_options["stride_h"] for op in conv] == [1, 2]
    y = runner.predict(np.zeros((2, 8, 8, 1), np.float32))
    assert y.shape == (2, 10) and np.all(np.isfinite(y))


def _set_shape(index, shape):
    def change(model, g):
        g.tensors[index].shape = list(shape)
    return change


def test_conv_filter_input_channel_mismatch_is_refused(seed_bytes):
    # The SIGFPE the issue reports: input channels not a multiple of the filter's.
    # Same number of filter values, so only the shape check can catch it.
    info = tflite.check_model(seed_bytes)
    x, w = info.operators[1].inputs[:2]
    def change(model, g):
        g.tensors[w].shape = [16, 3, 3, 32]
        q = g.tensors[w].quantization
        q.scale, q.zeroPoint = list(q.scale[:1]), [0]
    bad = _edit(seed_bytes, change)
    _refused(bad, "operator 1 (CONV_2D)", f"input tensor {x}", "16 channels",
             f"filter tensor {w}", "takes 32")


def test_conv_output_shape_and_filters_are_checked(seed_bytes):
    info = tflite.check_model(seed_bytes)
    out = info.operators[0].outputs[0]
    _refused(_edit(seed_bytes, _set_shape(out, [1, 7, 6, 16])), "operator 0 (CONV_2D)",
             "output height is 7, expected 6")
    _refused(_edit(seed_bytes, _set_shape(out, [1, 6, 6, 15])), "output channel count")
    bias = info.operators[0].inputs[2]

    def short_bias(model, g):
        t = g.tensors[bias]
        t.shape = [8]
        model.buffers[t.buffer].data = list(model.buffers[t.buffer].data[:32])
        t.quantization = None
    _refused(_edit(seed_bytes, short_bias), f"bias tensor {bias}", "expected 16 values")


@pytest.mark.parametrize("field,value,fragment", [
    ("strideW", 0, "strides [1, 0]"),
    ("dilationHFactor", -3, "dilations [-3, 1]"),
    ("padding", 7, "padding 7"),
])
def test_conv_options_out_of_range_are_refused(seed_bytes, field, value, fragment):
    def change(model, g):
        setattr(g.operators[0].builtinOptions, field, value)
    _refused(_edit(seed_bytes, change), "operator 0 (CONV_2D)", fragment)


def test_conv_without_its_options_is_refused(seed_bytes):
    def change(model, g):
        g.operators[0].builtinOptionsType = 0
        g.operators[0].builtinOptions = None
    _refused(_edit(seed_bytes, change), "operator 0 (CONV_2D)", "expected Conv2DOptions")


def test_absurd_tensor_size_is_refused_before_tflm(seed_bytes):
    # 1.5 GB of int8 activations: refused with the stated limit, no allocation.
    _refused(_edit(seed_bytes, _set_shape(0, [1, 8, 8, 1 << 24])), "tensor 0",
             f"above the limit of {reader.MAX_TENSOR_BYTES} bytes")


def test_multiply_accumulate_limit(seed_bytes):
    # Shapes consistent, but the convolution would run for minutes.
    def change(model, g):
        x, w, _ = g.operators[0].inputs
        out = g.operators[0].outputs[0]
        g.tensors[x].shape = [1, 4096, 4096, 1]
        g.tensors[out].shape = [1, 4094, 4094, 16]
        g.tensors[w].shape = [16, 3, 3, 1]
    msg = _refused(_edit(seed_bytes, change), "operator 0 (CONV_2D)")
    assert ("multiply-accumulates" in msg) or ("bytes" in msg)
    assert 4094 * 4094 * 16 * 9 > reader.MAX_OP_MACS


def test_elementwise_shapes_must_broadcast():
    from support.model_builder import OpSpec, TensorSpec, build_model

    q = dict(dtype="int8", scale=0.1, zero_point=0)
    tensors = [TensorSpec("a", (1, 4, 3), **q), TensorSpec("b", (1, 5, 3), **q),
               TensorSpec("y", (1, 4, 3), **q)]
    model = build_model(tensors, [OpSpec("ADD", [0, 1], [2])], [0, 1], [2])
    _refused(model, "operator 0 (ADD)", "[1, 4, 3] and [1, 5, 3]", "do not broadcast")
    tensors[1] = TensorSpec("b", (3,), **q)
    ok = build_model(tensors, [OpSpec("ADD", [0, 1], [2])], [0, 1], [2])
    assert tflite.check_model(ok).operators[0].op_name == "ADD"


def _conv_options_field_slot(data, slot):
    """Byte position of vtable slot `slot` of operator 0's builtin options."""
    opts = tables.schema().Model.GetRootAsModel(data, 0).Subgraphs(0).Operators(0).BuiltinOptions()
    pos = opts.Pos
    vtable = pos - struct.unpack_from("<i", data, pos)[0]
    return vtable + 4 + 2 * slot


def test_corrupt_conv_options_table_is_a_model_error(seed_bytes, monkeypatch):
    """One corrupted byte in a CONV_2D options table: the pre-check names the
    field; with the pre-check bypassed, the wheel's struct.error is still
    turned into ModelFormatError by the runner."""
    bad = bytearray(seed_bytes)
    k = _conv_options_field_slot(bytes(bad), 1)  # stride_w
    struct.pack_into("<H", bad, k, 0xFFF0)
    with pytest.raises(ModelFormatError, match=r"builtin_options\.stride_w: field offset 65520"):
        tflite.check_model(bytes(bad), "conv.tflite")

    good_info = tflite.check_model(seed_bytes)
    from tflm_caps.runtime import runner as runner_module
    monkeypatch.setattr(runner_module, "check_model", lambda data, name: good_info)
    with pytest.raises(ModelFormatError, match="malformed .tflite: the TFLM wheel cannot parse"):
        TFLMRunner(bytes(bad))


def test_every_byte_of_the_conv_options_is_survivable(seed_bytes):
    """Each byte of the first CONV_2D's options vtable and table set to a few values:
    the model runs or is refused with a project error, never another exception."""
    from tflm_caps.runtime import ArenaTooSmallError, TFLMError

    opts = tables.schema().Model.GetRootAsModel(seed_bytes, 0).Subgraphs(0).Operators(0).BuiltinOptions()
    pos = opts.Pos
    vtable = pos - struct.unpack_from("<i", seed_bytes, pos)[0]
    vt_size, tbl_size = struct.unpack_from("<HH", seed_bytes, vtable)
    span = list(range(vtable, vtable + vt_size)) + list(range(pos, pos + tbl_size))
    outcomes = {"ok": 0, "refused": 0}
    for k in span:
        for value in (0x00, 0x01, 0x7F, 0x80, 0xFF):
            bad = bytearray(seed_bytes)
            if bad[k] == value:
                continue
            bad[k] = value
            try:
                r = TFLMRunner(bytes(bad))
                r.invoke(np.zeros((1, 8, 8, 1), np.int8))
                outcomes["ok"] += 1
            except (ModelFormatError, TFLMError, ArenaTooSmallError):
                outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) >= 4 * len(span)


@pytest.mark.parametrize("path", REGRESSIONS, ids=os.path.basename)
def test_fuzzer_findings_stay_refused(path):
    """Mutants that crashed the process (SIGFPE, abort in TFLM) before the pre-check."""
    with open(path, "rb") as f:
        data = f.read()
    _refused(data, "operator")


def test_regression_corpus_is_present():
    assert len(REGRESSIONS) >= 2


def test_mutator_smoke_run():
    """A few hundred structured mutants in a worker subprocess: no crash, hang or
    stray exception, and both outcomes (runs, refused) occur."""
    sys.path.insert(0, FUZZ_DIR)
    try:
        import mutate_models
    finally:
        sys.path.remove(FUZZ_DIR)
    summary = mutate_models.fuzz([SEED], mutants=300, seed=17, max_seconds=50, timeout=20)
    assert summary["findings"] == [], summary["findings"]
    assert summary["mutants"] >= 150, summary
    assert summary["counts"]["ok"] > 0 and summary["counts"]["refused"] > 0
