"""Packed int4 weights from the converter: per-layer widths (weight_bits),
the builtin int4 pass, the greedy bit-width search, and a converted int4
model running bit-exact in TFLM against numpy."""
import json

import numpy as np
import pytest

from support import builtin_ref
from tflm_caps import tflite
from tflm_caps.converter import ConversionError, bit_widths, convert_detailed, kernels
from tflm_caps.reference import quant as q
from tflm_caps.runtime import TFLMRunner
from tflm_caps.tflite import tables


@pytest.fixture(scope="module")
def int4_tiny(trained_tiny):
    model, ds = trained_tiny
    return convert_detailed(model, ds, num_samples=32, metadata=None, weight_bits=4), ds


def _weights_by_op(model_bytes):
    info = tflite.check_model(model_bytes)
    return [(op.op_name, info.tensors[op.inputs[1]]) for op in info.operators
            if op.op_name in ("CONV_2D", "TFLMCaps_ClassCaps")]


def test_int4_tiny_runs_bit_exact_in_tflm_vs_numpy(int4_tiny):
    result, ds = int4_tiny
    weights = _weights_by_op(result.model)
    assert [(op, w.type_name) for op, w in weights] == [
        ("CONV_2D", "int4"), ("CONV_2D", "int4"), ("TFLMCaps_ClassCaps", "int4")]
    for op, w in weights:
        assert len(w.data) == q.int4_packed_size(np.prod(w.shape))
        if op == "CONV_2D":  # per output channel
            assert w.scale.size == w.shape[0] and w.quantized_dimension == 0
    x = ds.x_test[:24]
    info = tflite.check_model(result.model)
    scale, zp = info.input_tensors()[0].quantization
    xq = q.quantize(x, scale, zp)
    tflm = TFLMRunner(result.model).predict(x, dequantize=False)
    np.testing.assert_array_equal(tflm, builtin_ref.run_model(result.model, xq))
    _, tfl = kernels.run_model(result.model, x)
    np.testing.assert_array_equal(tflm, tfl)
    assert len(np.unique(tflm)) > 20


def test_int4_tiny_is_smaller_and_still_classifies(int4_tiny, trained_tiny):
    result, ds = int4_tiny
    model, _ = trained_tiny
    int8 = convert_detailed(model, ds, num_samples=32, metadata=None)
    rows = {w["layer"]: w for w in result.summary.weights}
    # every weight byte halved comes off the file (the int32 biases and the
    # squash gain tables stay as they are)
    saved = sum(r["int8_bytes"] - r["int4_bytes"] for r in rows.values())
    assert len(int8.model) - len(result.model) >= saved - 16
    assert len(result.model) < 0.65 * len(int8.model)
    assert set(rows) == {"conv1", "primary_caps", "class_caps"}
    assert all(r["bits"] == 4 and r["bytes"] == (r["params"] + 1) // 2 for r in rows.values())
    x, y = ds.x_test[:300], ds.y_test[:300]
    acc4 = np.mean(np.argmax(TFLMRunner(result.model).predict(x), -1) == y)
    acc8 = np.mean(np.argmax(TFLMRunner(int8.model).predict(x), -1) == y)
    assert acc4 > 0.8 and acc8 - acc4 < 0.08, (acc8, acc4)


def test_int4_builtin_bias_is_on_the_new_scale(int4_tiny):
    """The int32 bias of an int4 conv is float bias / (input scale * int4 filter scale)."""
    result, _ = int4_tiny
    model = tflite.load(result.float_model)
    from tflm_caps.converter_patches import int4_weights
    float_w = int4_weights.float_weights(model)[0]
    m = tflite.load(result.model)
    sg = m.subgraphs[0]
    conv = next(op for op in sg.operators if tflite.model.op_name(m, op) == "CONV_2D")
    x_scale = float(sg.tensors[int(conv.inputs[0])].quantization.scale[0])
    w_t, b_t = sg.tensors[int(conv.inputs[1])], sg.tensors[int(conv.inputs[2])]
    codes, scales = int4_weights.int4_filter(float_w.filter, 0)
    np.testing.assert_array_equal(np.asarray(w_t.quantization.scale, np.float32), scales)
    np.testing.assert_array_equal(
        q.unpack_int4(np.asarray(m.buffers[w_t.buffer].data, np.uint8).tobytes(), codes.shape),
        codes)
    bias = np.frombuffer(np.asarray(m.buffers[b_t.buffer].data, np.uint8).tobytes(), np.int32)
    expect = float_w.bias / (np.float64(np.float32(x_scale)) * scales.astype(np.float64))
    np.testing.assert_array_equal(bias, np.sign(expect) * np.floor(np.abs(expect) + 0.5))


def test_weight_bits_per_layer_and_errors(trained_tiny):
    model, ds = trained_tiny
    r = convert_detailed(model, ds, num_samples=16, metadata=None,
                         weight_bits={"class_caps": 4})
    assert [w.type_name for _, w in _weights_by_op(r.model)] == ["int8", "int8", "int4"]
    assert r.summary.class_caps[0]["weight_bits"] == 4
    assert all(abs(s) <= 1 for s in r.summary.class_caps[0]["weight_scales"])
    cases = [({"conv9": 4}, "unknown layer.*conv9.*conv1, primary_caps, class_caps"),
             ({"conv1": 2}, r"weight_bits\['conv1'\] must be 8 or 4"),
             (16, "weight_bits must be 8, 4, 'auto'"),
             ("fast", "weight_bits must be 8, 4, 'auto'"),
             ("auto", "needs max_drop")]
    for bits, message in cases:
        with pytest.raises(ConversionError, match=message):
            convert_detailed(model, ds, num_samples=16, metadata=None, weight_bits=bits)
    with pytest.raises(ConversionError, match="max_drop only applies"):
        convert_detailed(model, ds, num_samples=16, weight_bits=4, max_drop=0.3)
    with pytest.raises(ConversionError, match="max_drop must be"):
        convert_detailed(model, ds, num_samples=16, weight_bits="auto", max_drop=-1)
    with pytest.raises(ConversionError, match="needs labelled validation images"):
        convert_detailed(model, ds.x_train[:16], num_samples=16, weight_bits="auto",
                         max_drop=0.3)


def test_odd_class_caps_block_stays_int8():
    layers = [bit_widths.WeightLayer("caps", bit_widths.CLASS_CAPS, "TFLMCaps_ClassCaps", 0,
                                     3 * 3 * 3 * 5, False, "int8 only: odd"),
              bit_widths.WeightLayer("conv", bit_widths.BUILTIN, "CONV_2D", 0, 10, True)]
    assert bit_widths.resolve(4, layers) == {"caps": 8, "conv": 4}
    with pytest.raises(ConversionError, match="'caps' cannot have int4 weights: int8 only"):
        bit_widths.resolve({"caps": 4}, layers)


def test_validation_split_is_from_the_train_split(bundled_data):
    x, y = bit_widths.validation_split(None, bundled_data, bundled_data.input_shape, 300)
    assert x.shape[0] == 300 and len(set(y.tolist())) == bundled_data.num_classes
    train = {row.tobytes() for row in bundled_data.x_train}
    test = {row.tobytes() for row in bundled_data.x_test}
    assert all(row.tobytes() in train and row.tobytes() not in test for row in x)


@pytest.mark.parametrize("max_drop", [100.0, 0.0])
def test_auto_search_keeps_the_validation_accuracy(trained_tiny, max_drop):
    model, ds = trained_tiny
    r = convert_detailed(model, ds, num_samples=32, metadata=None, weight_bits="auto",
                         max_drop=max_drop, validation_samples=250)
    s = r.summary.bit_search
    assert s["validation_samples"] == 250 and s["max_drop"] == max_drop
    assert 100 * (s["float_accuracy"] - s["accuracy"]) <= max_drop + 1e-9
    chosen = {w["layer"]: w["bits"] for w in r.summary.weights}
    if max_drop == 100.0:  # anything goes: every layer int4
        assert set(chosen.values()) == {4}
    # the chosen model is the one measured: re-run it on the same split
    x, y = bit_widths.validation_split(None, ds, ds.input_shape, 250)
    acc = np.mean(np.argmax(TFLMRunner(r.model).predict(x), -1) == y)
    assert acc == pytest.approx(s["accuracy"])
    types = [w.type_name for _, w in _weights_by_op(r.model)]
    assert types == ["int4" if chosen[n] == 4 else "int8"
                     for n in ("conv1", "primary_caps", "class_caps")]
    json.dumps(r.summary.to_dict())
    assert "bit-width search" in r.summary.format()


def test_validate_reports_bytes_per_layer_and_bit_width(int4_tiny, trained_tiny):
    from tflm_caps.validation import markdown, validate

    result, ds = int4_tiny
    model, _ = trained_tiny
    report = validate(model, result.model, ds, samples=50, float_tflite=result.float_model,
                      arena_bytes=None)
    # one row per operator with constants: primary_caps is also the name of
    # its Squash (a gain table, no weights), so key the weighted ones
    rows = {w["layer"]: w for w in report["weights"] if w["weight_bits"] is not None}
    assert any(w["op"] == "TFLMCaps_Squash" and w["weight_bits"] is None and w["bytes"] > 0
               for w in report["weights"])
    assert {name: rows[name]["weight_bits"] for name in ("conv1", "primary_caps",
                                                          "class_caps")} == \
        {"conv1": 4, "primary_caps": 4, "class_caps": 4}
    assert rows["class_caps"]["weight_bytes"] == 128 * 10 * 4 * 4 // 2
    assert rows["primary_caps"]["weight_bytes"] == 32 * 5 * 5 * 8 // 2
    info = tflite.check_model(result.model)
    consts = [t for t in info.tensors if t.is_constant]
    by_bits = report["weight_bytes_by_bits"]
    assert by_bits["4"] == sum(len(t.data) for t in consts if t.type_name == "int4")
    assert by_bits["32"] == sum(len(t.data) for t in consts if t.type_name == "int32")
    assert "8" not in by_bits
    text = markdown(report)
    assert "| class_caps | TFLMCaps_ClassCaps | 4 | 10,240 |" in text and "| bits | bytes |" in text


def test_cli_convert_weight_bits(trained_tiny_path, tmp_path, capsys, run_cli):
    out = tmp_path / "tiny4.tflite"
    assert run_cli(["convert", trained_tiny_path, "--samples", "16", "-o", str(out),
                    "--weight-bits", "class_caps=4,conv1=8", "--no-metadata", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {w["layer"]: w["bits"] for w in report["weights"]} == \
        {"conv1": 8, "primary_caps": 8, "class_caps": 4}
    assert report["bit_search"] is None
    assert [w.type_name for _, w in _weights_by_op(out.read_bytes())] == ["int8", "int8", "int4"]


@pytest.mark.parametrize("argv, message", [
    (["--weight-bits", "2"], "--weight-bits: must be 8, 4, auto or LAYER=BITS"),
    (["--weight-bits", "class_caps=3"], "'class_caps=3': expected LAYER=8 or LAYER=4"),
    (["--weight-bits", "auto"], "--weight-bits auto needs --max-drop"),
    (["--weight-bits", "4", "--max-drop", "0.3"], "--max-drop only applies"),
    (["--weight-bits", "auto", "--max-drop", "-1"], "--max-drop"),
    (["--weight-bits", "nosuch=4"], "unknown layer(s) nosuch"),
])
def test_cli_convert_weight_bits_errors(argv, message, trained_tiny_path, tmp_path, capsys,
                                        run_cli):
    assert run_cli(["convert", trained_tiny_path, "--samples", "8", "-o",
                    str(tmp_path / "x.tflite"), *argv]) == 2
    err = capsys.readouterr().err
    assert "tflm-caps convert: error:" in err and message in err
