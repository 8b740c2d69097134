"""`tflm-caps bench MODEL.tflite`: a converted model's own capsule ops on
emulated Cortex-M7/M55 at their actual shapes, MACs of its builtin layers,
model bytes and arena; the parameters it extracts, its JSON and its errors."""
import contextlib
import io
import json

import numpy as np
import pytest
from support import model_builder as mb
from support.toolchains import require_target

from tflm_caps import cli, models, tflite
from tflm_caps import ops_contract as C
from tflm_caps.baremetal import bench, bench_model
from tflm_caps.baremetal import vectors as vec
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q

CONFIGS = ["m7-cortex_m", "m55-helium"]


@pytest.fixture(scope="module")
def tiny_tflite(bundled_data, tmp_path_factory):
    """The zoo's tiny CapsNet converted to int8 (untrained: the bench needs shapes,
    quantization and weights, not accuracy)."""
    from tflm_caps.converter import convert
    path = tmp_path_factory.mktemp("bench_model") / "tiny.tflite"
    path.write_bytes(convert(models.build("tiny"), bundled_data, num_samples=8))
    return path


@pytest.fixture(scope="module")
def cli_report(tiny_tflite):
    """`tflm-caps bench tiny.tflite --json --report PATH` on M7 and M55."""
    require_target("cortex-m7")
    require_target("cortex-m55")
    report_path = tiny_tflite.parent / "bench.json"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["bench", str(tiny_tflite), "--json", "--report", str(report_path)])
    assert code == 0, err.getvalue()[-3000:]
    printed = json.loads(out.getvalue())  # --json: one JSON document, nothing else
    assert json.loads(report_path.read_text()) == printed
    return printed


def _conv_macs_from_zoo(name):
    """MACs of each convolution of a zoo model from its spec alone: output
    height x width x filters x kernel^2 x input channels."""
    spec = models.ZOO[name]
    shapes = models.feature_shapes(name)
    channels = spec["input_shape"][2]
    layers = [(f, k) for f, k, _ in spec["convs"]]
    types, dim, k, _ = spec["primary"]
    layers.append((types * dim, k))
    macs = []
    for (filters, kernel), (h, w) in zip(layers, shapes):
        macs.append(h * w * filters * kernel * kernel * channels)
        channels = filters
    return macs


def test_model_report_shapes_macs_and_counts(cli_report, tiny_tflite):
    r = cli_report
    assert r["model_bytes"] == tiny_tflite.stat().st_size
    assert r["model"] == str(tiny_tflite)
    assert [c["name"] for c in r["configs"]] == CONFIGS
    assert r["instructions_per_tick"] == {"cortex-m7": 40.0, "cortex-m55": 31.25}
    assert 0 < r["arena_target_estimate"] < r["arena_bytes"]

    ops = [layer["op"] for layer in r["layers"]]
    assert ops == ["CONV_2D", "CONV_2D", "RESHAPE", C.SQUASH, C.CLASS_CAPS, C.LENGTH]
    convs = [layer for layer in r["layers"] if layer["op"] == "CONV_2D"]
    assert [c["macs"] for c in convs] == _conv_macs_from_zoo("tiny") == [28_800, 102_400]
    assert r["layers"][2]["macs"] is None  # RESHAPE: n.a.
    assert r["totals"]["builtin_macs"] == 28_800 + 102_400

    by = {o["op"]: o for o in r["capsule_ops"]}
    cc = by[C.CLASS_CAPS]
    assert cc["inputs"] == [[1, 128, 4], [128, 10, 4, 4]] and cc["output"] == [1, 10, 4]
    assert cc["shape"] == "128x4D->10x4D r3" and cc["kernel"] == "class_caps_store"
    assert cc["options"][C.OPT_NUM_ROUTING] == 3
    n_in, n_out, d_out, d_in, routings = 128, 10, 4, 4, 3
    assert cc["macs"] == n_in * n_out * d_out * d_in + n_in * n_out * d_out * (2 * routings - 1)
    assert by[C.SQUASH]["inputs"][0] == [1, 128, 4] and by[C.SQUASH]["macs"] == 512
    assert by[C.LENGTH]["shape"] == "10x4D"
    for o in r["capsule_ops"]:
        assert o["emulated"] and o["reason"] is None
        assert set(o["instructions"]) == set(CONFIGS)
        assert all(v > 0 for v in o["instructions"].values())
        assert all(c["bit_exact"] for c in o["calls"])
        # the op's count is its TFLM call's
        for config in CONFIGS:
            call = next(c for c in o["calls"] if c["config"] == config
                        and c["kernel"] == o["kernel"])
            assert o["instructions"][config] == call["instructions"]
    # ClassCaps also timed by phase
    assert {c["kernel"] for c in cc["calls"]} == {"predictions", "routing", "class_caps_store"}
    # Helium runs the class capsules in fewer instructions than the scalar M7 code
    assert cc["instructions"]["m55-helium"] < cc["instructions"]["m7-cortex_m"]
    totals = r["totals"]["capsule_instructions"]
    for config in CONFIGS:
        assert totals[config] == sum(o["instructions"][config] for o in r["capsule_ops"])


def test_class_caps_count_equals_the_kernel_bench_path(cli_report, tiny_tflite, tmp_path):
    """The same ClassCaps call built and run the way `tflm-caps bench` runs
    its kernel cases, alone in its image, gives the count the model report
    shows."""
    _, _, ops = bench_model.analyze(tiny_tflite.read_bytes(), seed=0)
    cop = next(o for o in ops if o.op == C.CLASS_CAPS)
    _, u, W, params, _ = cop.case
    case = ("class_caps", u, W, params, vec.F_STORE)
    calls = vec.write_header(tmp_path / "caps_vectors.h", [case])
    calls[0]["shape"] = "tiny"
    config = next(c for c in bench.CONFIGS if c[0] == "m7-cortex_m")
    rows = bench.run_config(config, tmp_path, calls, ["tiny class caps"], tmp_path / "cache",
                            600.0)
    report_op = next(o for o in cli_report["capsule_ops"] if o["op"] == C.CLASS_CAPS)
    assert rows[0]["kernel"] == "class_caps_store" and rows[0]["instructions"] > 0
    # equal up to the counter's resolution (a SysTick tick of 40 instructions:
    # where the call starts within a tick depends on what ran before it)
    assert rows[0]["resolution"] == 40.0
    assert abs(rows[0]["instructions"] - report_op["instructions"]["m7-cortex_m"]) <= 40


def test_table_output(cli_report, capsys):
    bench_model.print_table(cli_report)
    text = capsys.readouterr().out
    assert "minimum tensor arena" in text
    assert "TFLMCaps_ClassCaps" in text and "128x4D->10x4D r3" in text
    cc = next(o for o in cli_report["capsule_ops"] if o["op"] == C.CLASS_CAPS)
    assert f"{cc['instructions']['m7-cortex_m']:,}" in text
    assert "102,400" in text


def test_parameters_are_the_models():
    """Shapes, weights and integer params come from the model's tensors and
    options: equal to the reference's params of the quantization the model
    was built from (per-capsule scales, batch 2, recomputed predictions)."""
    W, quant = mb.random_class_caps(3, 48, 5, 6, 4)
    data = mb.class_caps_model(2, W, quant, store_predictions=False)
    _, layers, ops = bench_model.analyze(data, seed=7)
    (cop,) = ops
    kind, u, W_case, params, flags = cop.case
    assert kind == "class_caps" and np.array_equal(W_case, W)
    assert params == q.class_caps_params((48, 4, 5, 6), quant)
    assert u.shape == (48, 4) and u.dtype == np.int8
    assert cop.kernel == "class_caps_recompute" and flags & vec.F_RECOMPUTE
    assert cop.repeat == 2  # the TFLM glue runs the kernel per batch item
    pred, route = 48 * 5 * 6 * 4, 48 * 5 * 6 * 5
    assert cop.macs == 2 * (3 * pred + route)
    assert layers[0]["shape"] == "48x4D->5x6D r3"
    # fixed seed: same inputs again, other seed: other inputs
    again = bench_model.analyze(data, seed=7)[2][0].case[1]
    other = bench_model.analyze(data, seed=8)[2][0].case[1]
    assert np.array_equal(again, u) and not np.array_equal(other, u)


def _efficient_and_int4_model():
    """x [1, 16, 8] -> EfficientSquash -> SelfAttentionCaps (16x8D -> 10x16D),
    and an int4 ClassCaps (32x4D -> 10x6D, per-capsule scales) on a second
    input; every quantization from the reference's calibration."""
    rng = np.random.default_rng(5)
    # self-attention: float layer calibrated on efficient-squashed capsules
    W = rng.normal(size=(16, 10, 16, 8)) / np.sqrt(8)
    b = rng.normal(0, 0.2, (16, 10))
    u = rng.normal(size=(4, 16, 8))
    sa_quant = q.calibrate_self_attention(u / (1 + np.abs(u)), W, b, 1 / 128, 0)
    sa_w = q.quantize_weights(W, sa_quant.weight_scales)
    bias = q.quantize_attention_bias(b)
    x = mb.TensorSpec("x", (1, 16, 8), "int8", scale=0.04, zero_point=0)
    u_t, w_t, b_t, v_t = mb.self_attention_tensors(1, sa_w, bias, sa_quant)
    # int4 class capsules
    W4 = rng.normal(size=(32, 10, 6, 4)) / 2
    c_quant = q.calibrate_class_caps(q.dequantize(q.quantize(
        np.tanh(rng.normal(size=(4, 32, 4))), 1 / 128), 1 / 128), W4, 3, 1 / 128, 0,
        per_capsule=True, weight_bits=4)
    c_w = q.quantize_weights(W4, c_quant.weight_scales, 4)
    cu = mb.TensorSpec("cu", (1, 32, 4), "int8", scale=1 / 128, zero_point=0)
    cw = mb.TensorSpec("cW", (32, 10, 6, 4), "int4", scale=list(c_quant.weight_scales),
                       zero_point=0, quantized_dimension=1, data=c_w)
    cv = mb.TensorSpec("cv", (1, 10, 6), "int8", scale=1 / 128, zero_point=0)
    tensors = [x, u_t, w_t, b_t, v_t, cu, cw, cv]
    ops = [mb.OpSpec(C.EFFICIENT_SQUASH, [0], [1], mb.encode_options({C.OPT_VERSION: C.OPTIONS_VERSION})),
           mb.OpSpec(C.SELF_ATTENTION_CAPS, [1, 2, 3], [4],
                     mb.encode_options(mb.self_attention_options(sa_quant))),
           mb.OpSpec(C.CLASS_CAPS, [5, 6], [7],
                     mb.encode_options(mb.class_caps_options(c_quant)))]
    model = mb.build_model(tensors, ops, [0, 5], [4, 7])
    return model, (sa_w, bias, sa_quant), (c_w, c_quant)


def test_efficient_capsnet_and_int4_ops(tmp_path):
    """Efficient squash, self-attention and an int4 ClassCaps: the params are
    the reference's for the model's quantization, and each runs bit-exact on
    the M55 with the Helium kernels (the _s4 ones for int4)."""
    require_target("cortex-m55")
    model, (sa_w, bias, sa_quant), (c_w, c_quant) = _efficient_and_int4_model()
    _, _, ops = bench_model.analyze(model)
    by = {o.op: o for o in ops}
    es, sa, cc = by[C.EFFICIENT_SQUASH], by[C.SELF_ATTENTION_CAPS], by[C.CLASS_CAPS]
    assert es.case[2] == q.efficient_squash_params(0.04, 0) and es.kernel == "efficient_squash"
    assert np.array_equal(sa.case[2], sa_w) and np.array_equal(sa.case[3], bias)
    assert sa.case[4] == q.self_attention_params((16, 8, 10, 16), sa_quant, bias)
    assert np.array_equal(sa.case[1], ref.efficient_squash_s8(es.case[1], es.case[2]))
    assert sa.macs == 16 * 10 * 16 * (8 + 3) and sa.shape == "16x8D->10x16D attention"
    assert np.array_equal(cc.case[2], c_w) and cc.case[4] & vec.F_INT4
    assert cc.case[3] == q.class_caps_params((32, 4, 10, 6), c_quant)
    assert cc.kernel == "class_caps_store_s4" and cc.shape == "32x4D->10x6D r3 int4"

    report = bench_model.run(model, configs=["m55-helium"], arena=False, progress=False,
                             cache_dir=tmp_path)
    got = {o["op"]: o for o in report["capsule_ops"]}
    for name, kernel in ((C.EFFICIENT_SQUASH, "efficient_squash"),
                         (C.SELF_ATTENTION_CAPS, "self_attention"),
                         (C.CLASS_CAPS, "class_caps_store_s4")):
        o = got[name]
        assert o["emulated"] and o["kernel"] == kernel and o["instructions"]["m55-helium"] > 0
        assert all(c["bit_exact"] for c in o["calls"])
    assert {c["kernel"] for c in got[C.CLASS_CAPS]["calls"]} == \
        {"predictions_s4", "routing", "class_caps_store_s4"}


def test_squash_chain_feeds_class_caps(tiny_tflite):
    """ClassCaps sees the reference output of the Squash before it."""
    _, _, ops = bench_model.analyze(tiny_tflite.read_bytes(), seed=0)
    squash, cc = ops[0], ops[1]
    assert squash.op == C.SQUASH and cc.op == C.CLASS_CAPS
    _, x, sp = squash.case
    assert np.array_equal(cc.case[1], ref.squash_s8(x, sp))


def test_image_gives_the_model_activations(tiny_tflite, bundled_data):
    """With an image, each capsule op gets the input TFLM computed for it:
    the Squash's input is the primary convolution's int8 output (not the
    seed's random bytes), and ClassCaps sees TFLM's Squash output, which is
    the reference's squash of it."""
    data = tiny_tflite.read_bytes()
    image = bundled_data.x_test[:1]
    _, _, ops = bench_model.analyze(data, image=image)
    _, _, rand = bench_model.analyze(data, seed=0)
    squash, cc = ops[0], ops[1]
    assert not np.array_equal(squash.case[1], rand[0].case[1])
    assert np.array_equal(cc.case[1], ref.squash_s8(squash.case[1], squash.case[2]))
    with pytest.raises(bench_model.BenchModelError, match="the model takes"):
        bench_model.analyze(data, image=bundled_data.x_test[:2])


def test_unemulatable_ops_are_listed_with_a_reason(tiny_tflite):
    """A capsule op kind without a kernel case and a squash whose gain table
    does not fit are listed with their reason, never dropped; the arena of a
    model TFLM cannot load is reported as not measured."""
    model = tflite.load(tiny_tflite.read_bytes())
    for code in model.operatorCodes:
        if code.customCode and code.customCode.decode() == C.LENGTH:
            code.customCode = b"TFLMCaps_Future"
    report = bench_model.run(tflite.dump(model), configs=(), progress=False)
    by = {o["op"]: o for o in report["capsule_ops"]}
    assert by["TFLMCaps_Future"]["reason"] == \
        "no bare-metal kernel case for this capsule op kind"
    assert not by["TFLMCaps_Future"]["emulated"] and by["TFLMCaps_Future"]["macs"] is None
    assert report["arena_bytes"] is None and "registration" in report["arena_error"]
    assert len(report["capsule_ops"]) == 3

    bad = mb.squash_model((1, 16, 4), 0.05, 3, table=np.arange(10, dtype=np.int32))
    (cop,) = bench_model.analyze(bad)[2]
    assert cop.case is None and "gain table" in cop.reason


def _run_cli(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_model_without_capsule_ops(tmp_path, capsys):
    """Builtin MACs are still reported (depthwise and fully connected from
    their shapes); the command says there is nothing to emulate."""
    import keras
    import tensorflow as tf

    m = keras.Sequential([keras.Input((8, 8, 2), batch_size=1),
                          keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
                          keras.layers.Flatten(), keras.layers.Dense(5)])
    path = tmp_path / "plain.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    capsys.readouterr()  # the TF converter's own prints
    code, out, err = _run_cli(["bench", str(path), "--json"], capsys)
    assert code == 2
    assert "has no capsule custom ops" in err and len(err.strip().splitlines()) == 1
    report = json.loads(out)
    macs = {layer["op"]: layer["macs"] for layer in report["layers"]}
    assert macs["DEPTHWISE_CONV_2D"] == 6 * 6 * 4 * 3 * 3
    assert macs["FULLY_CONNECTED"] == 6 * 6 * 4 * 5
    assert report["capsule_ops"] == [] and report["totals"]["capsule_instructions"] == {}
    assert report["arena_bytes"] > 0


@pytest.mark.parametrize("kind", ["missing", "directory", "keras", "text"])
def test_bad_files_are_one_line_errors(kind, tmp_path, capsys):
    path = {"missing": tmp_path / "nope.tflite", "directory": tmp_path,
            "keras": tmp_path / "model.keras", "text": tmp_path / "notes.tflite"}[kind]
    if kind == "keras":
        path.write_bytes(b"PK\x03\x04" + bytes(64))
    if kind == "text":
        path.write_text("hello, this is not a model\n")
    code, out, err = _run_cli(["bench", str(path)], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tflm-caps bench: error: ")
    expected = {"missing": "no such file", "directory": "is a directory",
                "keras": "convert it first", "text": "not a .tflite model"}[kind]
    assert expected in lines[0]


def test_missing_toolchain_and_option_errors(tiny_tflite, monkeypatch, capsys):
    monkeypatch.setattr(bench_model, "missing_tools", lambda target: ["arm-none-eabi-gcc"])
    code, out, err = _run_cli(["bench", str(tiny_tflite), "--no-progress"], capsys)
    assert code == 2 and "toolchains/emulators not installed: arm-none-eabi-gcc" in err
    code, _, err = _run_cli(["bench", str(tiny_tflite), "--quick"], capsys)
    assert code == 2 and "--quick" in err
    code, _, err = _run_cli(["bench", str(tiny_tflite), "--configs", "m9-nothing"], capsys)
    assert code == 2 and "unknown configuration 'm9-nothing'" in err
    code, _, err = _run_cli(["bench", "--input-data", "bundled"], capsys)
    assert code == 2 and "--input-data applies to a MODEL" in err
    # 8x8 digits do not fit the 28x28 model: one line, before any emulation
    code, _, err = _run_cli(["bench", str(tiny_tflite), "--input-data", "digits"], capsys)
    assert code == 2 and "the model takes [1, 28, 28, 1]" in err
    assert len(err.strip().splitlines()) == 1
