"""Structured capsule pruning (tflm_caps.pruning, ``tflm-caps prune``).

The pruning math is checked against an independent numpy forward pass of
the ORIGINAL weights in which the removed channels are zeroed and the
removed capsule types' predictions are left out of the routing: removing a
type must be exactly that, and nothing else.  The models are small (the
``tiny`` zoo model on the 8x8 digits, a two-conv model with BatchNorm) so
the whole file runs in well under a minute.
"""
import json

import numpy as np
import pytest

from tflm_caps.reference import float_ref


# ----------------------------------------------------------------------------
# Independent numpy forward pass

def np_conv(x, kernel, bias, strides, padding):
    """NHWC convolution (cross-correlation, like Keras) in float64."""
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    if padding == "same":
        h, w = x.shape[1:3]
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + kh - h, 0)
        pw = max((ow - 1) * sw + kw - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    win = win[:, ::sh, ::sw]                                      # [B, OH, OW, C, kh, kw]
    out = np.einsum("byxcij,ijco->byxo", win, kernel.astype(np.float64))
    return out + (0.0 if bias is None else bias)


def np_forward(model, x, removed_channels=None, removed_types=()):
    """Lengths of a conv/BN/ReLU -> PrimaryCaps -> ClassCaps -> Length model.

    removed_channels: {conv name: channel ids} whose activations are zeroed
    before the next layer that mixes channels; removed_types: primary
    capsule types whose capsules are dropped from the routing.
    """
    import keras

    from tflm_caps.layers import ClassCaps, Length, PrimaryCaps

    removed_channels = removed_channels or {}
    a = np.asarray(x, np.float64)
    pending = None                                    # channels to zero, from the last conv
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        kind = type(layer).__name__
        if kind in ("Conv2D", "PrimaryCaps") and pending is not None:
            a = a.copy()
            a[..., pending] = 0.0
            pending = None
        if kind == "Conv2D":
            k, b = (np.asarray(w, np.float64) for w in layer.get_weights())
            a = np_conv(a, k, b, layer.strides, layer.padding)
            if layer.get_config()["activation"] == "relu":
                a = np.maximum(a, 0.0)
            pending = list(removed_channels.get(layer.name, [])) or None
        elif kind == "BatchNormalization":
            g, beta, mean, var = (np.asarray(w, np.float64) for w in layer.get_weights())
            a = g * (a - mean) / np.sqrt(var + layer.epsilon) + beta
        elif kind == "ReLU":
            a = np.maximum(a, 0.0)
        elif isinstance(layer, PrimaryCaps):
            k, b = (np.asarray(w, np.float64) for w in layer.get_weights())
            a = np_conv(a, k, b, layer.strides, layer.padding)
            a = float_ref.squash(a.reshape(len(a), -1, layer.capsule_dim))
            types = layer.num_capsules
        elif isinstance(layer, ClassCaps):
            w = np.asarray(layer.get_weights()[0], np.float64)
            keep = np.array([i % types not in set(removed_types) for i in range(a.shape[1])])
            u_hat = float_ref.predictions(a[:, keep], w[keep])
            a = float_ref.dynamic_routing(u_hat, layer.routings)
        elif isinstance(layer, Length):
            a = float_ref.length(a)
        else:
            raise AssertionError(f"np_forward: unexpected layer {kind}")
    return a


# ----------------------------------------------------------------------------
# Models

def bn_model(seed=1):
    """Two convolutions with BatchNorm between them, random non-trivial weights."""
    import keras

    from tflm_caps.layers import ClassCaps, Length, PrimaryCaps

    image = keras.Input((10, 10, 1), name="image")
    x = keras.layers.Conv2D(6, 3, name="conv1")(image)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = PrimaryCaps(4, 3, 3, strides=2, name="primary_caps")(x)
    x = ClassCaps(5, 4, routings=3, name="class_caps")(x)
    model = keras.Model(image, Length(name="length")(x), name="bn-capsnet")
    rng = np.random.RandomState(seed)
    bn = model.get_layer("bn1")
    bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.1, 6), rng.normal(0, 0.1, 6),
                    rng.uniform(0.5, 1.5, 6)])
    # Weights large enough that capsules are neither vanishing nor saturated.
    for name, std in (("conv1", 0.5), ("conv2", 0.3), ("primary_caps", 0.3)):
        layer = model.get_layer(name)
        k, b = layer.get_weights()
        layer.set_weights([rng.normal(0, std, k.shape), rng.normal(0, 0.1, b.shape)])
    cc = model.get_layer("class_caps")
    cc.set_weights([3.0 * cc.get_weights()[0]])
    return model


@pytest.fixture(scope="module")
def digits():
    from tflm_caps import data
    return data.load("digits")


@pytest.fixture(scope="module")
def tiny_digits(digits, tmp_path_factory):
    """``tiny`` trained briefly on the 8x8 digits, and its .keras path."""
    from tflm_caps import train
    _, result = train.train("tiny", digits, epochs=4, seed=0, progress=False, verbose=False,
                            train_eval_samples=0)
    path = str(tmp_path_factory.mktemp("pruning") / "tiny-digits.keras")
    result.inference_model.save(path)
    assert result.test_accuracy >= 0.85
    return result.inference_model, path


# ----------------------------------------------------------------------------
# Structure and the cut itself

def test_find_structure():
    from tflm_caps import models
    from tflm_caps.pruning import find

    s = find(bn_model())
    assert [(g.name, g.channels, g.batch_norms, g.consumer) for g in s.convs] == [
        ("conv1", 6, ["bn1"], "conv2"), ("conv2", 8, [], "primary_caps")]
    assert (s.num_types, s.capsule_dim, s.grid, s.input_capsules) == (4, 3, (3, 3), 36)
    s = find(models.build("costa2022-mnist"))
    assert (s.num_types, s.grid, s.input_capsules) == (16, (8, 8), 1024)


def test_shrink_equals_numpy_routing_without_removed_types():
    from tflm_caps.pruning import find, shrink

    model = bn_model()
    x = np.random.RandomState(0).rand(16, 10, 10, 1).astype(np.float32)
    full = model.predict(x, verbose=0)
    # The reference itself first: unpruned, it reproduces Keras.
    np.testing.assert_allclose(full, np_forward(model, x), rtol=1e-4, atol=1e-6)

    keep = {"types": [0, 2], "conv1": [0, 2, 3, 5], "conv2": [1, 2, 4, 5, 7]}
    pruned = shrink(model, find(model), keep)
    got = pruned.predict(x, verbose=0)
    want = np_forward(model, x, removed_channels={"conv1": [1, 4], "conv2": [0, 3, 6]},
                      removed_types=[1, 3])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.max(np.abs(got - full)) > 0.05  # pruning did change the model

    # Types only: exactly the original routing without those types' predictions.
    only_types = shrink(model, find(model), {"types": [1, 2, 3]})
    np.testing.assert_allclose(only_types.predict(x, verbose=0),
                               np_forward(model, x, removed_types=[0]), rtol=1e-4, atol=1e-6)


def test_shapes_parameters_and_macs():
    from tflm_caps import models
    from tflm_caps.pruning import find, layer_costs, model_cost, shrink

    model = models.build("costa2022-mnist")
    before = {r["name"]: r for r in layer_costs(model)}
    # Independent counts of the published architecture.
    assert before["conv1"]["macs"] == 22 * 22 * 7 * 7 * 1 * 16
    assert before["primary_caps"]["macs"] == 8 * 8 * 7 * 7 * 16 * 64 + 1024 * 4
    assert before["class_caps"]["macs"] == 1024 * 10 * 6 * 4 + 5 * 1024 * 10 * 6
    assert model.count_params() == 296_800

    pruned = shrink(model, find(model), {"types": list(range(0, 16, 2)),
                                         "conv1": list(range(12))})
    pc, cc = pruned.get_layer("primary_caps"), pruned.get_layer("class_caps")
    assert pruned.get_layer("conv1").kernel.shape == (7, 7, 1, 12)
    assert pc.conv.kernel.shape == (7, 7, 12, 32) and pc.num_capsules == 8
    assert tuple(cc.W.shape) == (512, 10, 6, 4)
    assert pruned.output_shape == (None, 10)
    c = model_cost(pruned)
    assert (c["capsule_types"], c["input_capsules"]) == (8, 512)
    assert c["params"] == (7 * 7 * 12 + 12) + (7 * 7 * 12 * 32 + 32) + 512 * 10 * 6 * 4
    rows = {r["name"]: r for r in c["layers"]}
    assert rows["conv1"]["macs"] == 22 * 22 * 7 * 7 * 12
    assert rows["primary_caps"]["macs"] == 8 * 8 * 7 * 7 * 12 * 32 + 512 * 4
    assert rows["class_caps"]["macs"] == 512 * 10 * 6 * 4 + 5 * 512 * 10 * 6
    assert rows["class_caps"]["int8_bytes"] == 512 * 240
    assert rows["conv1"]["int8_bytes"] == 7 * 7 * 12 + 4 * 12


def test_kept_weights_are_the_original_ones():
    from tflm_caps.pruning import find, shrink

    model = bn_model()
    pruned = shrink(model, find(model), {"types": [3, 1], "conv2": [7, 0]})
    k0, b0 = model.get_layer("primary_caps").get_weights()
    k1, b1 = pruned.get_layer("primary_caps").get_weights()
    channels = [3, 4, 5, 9, 10, 11]                 # types 1 and 3, capsule_dim 3
    np.testing.assert_array_equal(k1, k0[:, :, [0, 7]][..., channels])
    np.testing.assert_array_equal(b1, b0[channels])
    w0 = model.get_layer("class_caps").get_weights()[0]
    w1 = pruned.get_layer("class_caps").get_weights()[0]
    rows = [p * 4 + t for p in range(9) for t in (1, 3)]
    np.testing.assert_array_equal(w1, w0[rows])


# ----------------------------------------------------------------------------
# Importance

def test_type_scores_match_numpy(tiny_digits, digits):
    import keras

    from tflm_caps.pruning import find, type_scores

    model, _ = tiny_digits
    s = find(model)
    x = digits.x_train[:50]
    u = keras.Model(model.inputs[0], model.get_layer("primary_caps").output).predict(
        x, verbose=0).astype(np.float64)
    w = model.get_layer("class_caps").get_weights()[0]
    _, trace = float_ref.class_caps_float(u, w, 3)
    mass = np.sum(trace["c"][-1] * float_ref.length(trace["u_hat"]), axis=-1)   # [B, N_in]
    want = mass.reshape(len(x), -1, s.num_types).sum(axis=1).mean(axis=0)
    np.testing.assert_allclose(type_scores(model, s, x, "routing", batch_size=16), want,
                               rtol=1e-4)
    energy = np.sum(u * u, axis=-1).reshape(len(x), -1, s.num_types).sum(axis=1).mean(axis=0)
    np.testing.assert_allclose(type_scores(model, s, x, "length"), energy, rtol=1e-4)


def test_channel_scores():
    from tflm_caps.pruning import PruningError, channel_scores, find

    model = bn_model()
    s = find(model)
    k = model.get_layer("conv2").get_weights()[0].astype(np.float64)
    np.testing.assert_allclose(channel_scores(model, s, "conv2", "l1"),
                               np.abs(k).sum(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(channel_scores(model, s, "conv2", "l2"),
                               np.sqrt((k * k).sum(axis=(0, 1, 2))), rtol=1e-6)
    np.testing.assert_allclose(channel_scores(model, s, "conv1", "bn"),
                               np.abs(model.get_layer("bn1").get_weights()[0]), rtol=1e-6)
    with pytest.raises(PruningError, match="no BatchNormalization"):
        channel_scores(model, s, "conv2", "bn")


# ----------------------------------------------------------------------------
# prune(): schedule, round trip, conversion

@pytest.fixture(scope="module")
def pruned_tiny(tiny_digits, digits):
    from tflm_caps import prune
    model, _ = tiny_digits
    return prune(model, digits, keep_types=0.5, keep_channels=0.75, steps=2,
                 finetune_epochs=1, seed=0, progress=False)


def test_prune_schedule_and_summary(pruned_tiny, tiny_digits, digits):
    model, _ = tiny_digits
    r = pruned_tiny
    assert [st["capsule_types"] for st in r.steps] == [6, 4]        # geometric 8 -> 4
    assert [st["channels"]["conv1"] for st in r.steps] == [14, 12]  # 16 -> 12
    assert all(st["accepted"] for st in r.steps) and not r.stopped_early
    assert len(r.kept["types"]) == 4 and len(set(r.kept["types"])) == 4
    assert len(r.kept["conv1"]) == 12 and max(r.kept["conv1"]) < 16
    assert r.before["capsule_types"] == 8 and r.after["capsule_types"] == 4
    assert r.after["input_capsules"] == r.before["input_capsules"] // 2
    assert r.after["params"] == r.model.count_params() < model.count_params()
    assert r.after["macs"] < r.before["macs"]
    assert r.settings["validation_images"] > 0 and r.settings["test_images"] == len(digits.x_test)
    assert r.after["test_accuracy"] >= 0.8
    json.dumps(r.as_dict())                                          # JSON-safe
    table = r.table()
    for word in ("capsule types", "input capsules", "MACs", "est. int8 bytes",
                 "held-out accuracy", "class_caps"):
        assert word in table


def test_pruned_model_round_trip_and_trains(pruned_tiny, digits, tmp_path):
    import keras

    import tflm_caps.layers  # noqa: F401
    from tflm_caps import models

    path = str(tmp_path / "pruned.keras")
    pruned_tiny.model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    x = digits.x_test[:64]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0),
                                  pruned_tiny.model.predict(x, verbose=0))
    assert loaded.get_layer("primary_caps").num_capsules == 4
    models.compile_for_training(loaded, learning_rate=1e-3)
    w0 = loaded.get_layer("class_caps").get_weights()[0].copy()
    hist = loaded.fit(digits.x_train[:64], digits.y_train_onehot[:64], epochs=1,
                      batch_size=32, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert not np.array_equal(w0, loaded.get_layer("class_caps").get_weights()[0])


def test_pruned_model_converts_and_runs_bit_exact(pruned_tiny, digits):
    from tflm_caps import convert
    from tflm_caps.converter.kernels import run_model
    from tflm_caps.reference import quant as q
    from tflm_caps.runtime import TFLMRunner

    model = pruned_tiny.model
    tflite = convert(model, digits.calibration_subset(100), num_samples=100)
    runner = TFLMRunner(tflite)
    x = digits.x_test
    scale, zp = runner.info.input_tensors()[0].quantization
    raw = runner.predict(q.quantize(x, scale, zp), dequantize=False)
    _, raw_ref = run_model(tflite, x[:120])
    np.testing.assert_array_equal(raw[:120], np.asarray(raw_ref).reshape(120, -1))
    float_pred = model.predict(x, verbose=0).argmax(-1)
    assert np.mean(float_pred == raw.argmax(-1)) >= 0.97


def test_accuracy_floor_stops_and_keeps_last_good_model(tiny_digits, digits):
    from tflm_caps import prune

    model, _ = tiny_digits
    r = prune(model, digits, keep_types=2, steps=2, finetune_epochs=0, accuracy_floor=1.0,
              progress=False)
    assert r.stopped_early
    assert [st["accepted"] for st in r.steps] == [False]
    assert r.after["capsule_types"] == 8 and r.kept["types"] == list(range(8))
    assert "stopped early" in r.table()


@pytest.mark.parametrize("kwargs, match", [
    ({"keep_types": 0}, "between 1 and 8"),
    ({"keep_types": 9}, "between 1 and 8"),
    ({"keep_types": 1.5}, r"in \(0, 1\]"),
    ({"keep_types": 0.0}, r"in \(0, 1\]"),
    ({"keep_types": "half"}, "count"),
    ({"keep_channels": {"conv9": 2}}, "no prunable convolution named 'conv9'"),
    ({"keep_channels": 17}, "between 1 and 16"),
    ({"steps": 0}, "steps"),
    ({"validation_fraction": 0.0}, "validation_fraction"),
    ({"accuracy_floor": 1.5}, "accuracy_floor"),
    ({"criterion": "entropy"}, "criterion"),
    ({"channel_criterion": "bn", "keep_channels": 0.5}, "no BatchNormalization"),
])
def test_bad_options(tiny_digits, digits, kwargs, match):
    from tflm_caps import prune
    from tflm_caps.pruning import PruningError

    with pytest.raises(PruningError, match=match):
        prune(tiny_digits[0], digits, progress=False, **kwargs)


def test_model_without_capsule_layers():
    import keras

    from tflm_caps.pruning import PruningError, find

    image = keras.Input((8, 8, 1))
    plain = keras.Model(image, keras.layers.Dense(10)(keras.layers.Flatten()(image)))
    with pytest.raises(PruningError, match="no capsule layers"):
        find(plain)


# ----------------------------------------------------------------------------
# CLI

def _cli(argv, capsys):
    from tflm_caps.cli import main
    try:
        code = main(["prune", *argv])
    except SystemExit as exc:  # argparse rejects bad option values itself
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_prunes_and_prints_json(tiny_digits, tmp_path, capsys):
    import keras

    _, path = tiny_digits
    out = str(tmp_path / "half.keras")
    code, stdout, _ = _cli([path, "--data", "digits", "--out", out, "--keep-types", "3",
                            "--keep-channels", "conv1=10", "--finetune-epochs", "0",
                            "--no-progress", "--json"], capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["out"] == out and report["after"]["capsule_types"] == 3
    assert len(report["kept"]["conv1"]) == 10
    loaded = keras.models.load_model(out, compile=False)
    assert loaded.get_layer("primary_caps").num_capsules == 3
    assert loaded.get_layer("conv1").filters == 10

    code, stdout, _ = _cli([path, "--data", "digits", "--out", out, "--keep-fraction", "0.5",
                            "--finetune-epochs", "0", "--no-progress"], capsys)
    assert code == 0 and "capsule types" in stdout and "held-out accuracy" in stdout


@pytest.mark.parametrize("extra, message", [
    (["--keep-fraction", "1.5"], "in (0, 1]"),
    (["--keep-fraction", "0"], "in (0, 1]"),
    (["--keep-types", "0"], "at least 1"),
    (["--keep-types", "2", "--keep-fraction", "0.5"], "not allowed with"),
    (["--keep-channels", "conv1=x"], "not a number"),
    (["--accuracy-floor", "97"], "accuracy in [0, 1]"),
    (["--keep-types", "20"], "between 1 and 8"),
    (["--keep-channels", "convX=3"], "no prunable convolution"),
])
def test_cli_bad_options(tiny_digits, tmp_path, capsys, extra, message):
    _, path = tiny_digits
    code, _, err = _cli([path, "--data", "digits", "--out", str(tmp_path / "p.keras"),
                         "--no-progress", *extra], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_cli_file_errors(tmp_path, capsys):
    import keras

    code, _, err = _cli([str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o.keras")],
                        capsys)
    assert code == 2 and "model file not found" in err

    image = keras.Input((8, 8, 1))
    plain = keras.Model(image, keras.layers.Dense(10)(keras.layers.Flatten()(image)))
    path = str(tmp_path / "plain.keras")
    plain.save(path)
    code, _, err = _cli([path, "--data", "digits", "--out", str(tmp_path / "o.keras")], capsys)
    assert code == 2 and "no capsule layers" in err and "Traceback" not in err

    code, _, err = _cli([path, "--out", str(tmp_path / "o.h5")], capsys)
    assert code == 2 and "must end in .keras" in err
