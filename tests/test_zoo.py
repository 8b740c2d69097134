"""Model zoo: architectures, exact parameter counts, training/inference models, CLI."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from tflm_caps import cli, models
from tflm_caps.layers import ClassCaps, Length, PrimaryCaps

EXPECTED_PARAMS = {
    "sabour2017-mnist": 6_804_224,
    "costa2022-mnist": 296_800,
    "costa2022-cifar10": 115_296,
    "costa2022-smallnorb": 295_584,
}
# (input capsules, input dim, output capsules, output dim) of the class capsule layer.
EXPECTED_CAPS = {
    "sabour2017-mnist": (1152, 8, 10, 16),
    "costa2022-mnist": (1024, 4, 10, 6),
    "costa2022-cifar10": (64, 4, 10, 5),
    "costa2022-smallnorb": (1600, 4, 5, 6),
    "tiny": (128, 4, 10, 4),
}


@pytest.fixture(scope="module")
def inference_models():
    return {name: models.build(name) for name in models.names()}


def test_names_and_metadata():
    assert set(EXPECTED_PARAMS) < set(models.names()) and "tiny" in models.names()
    for name, params in EXPECTED_PARAMS.items():
        assert models.ZOO[name]["published_params"] == params
        assert models.ZOO[name]["paper"]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_published_parameter_counts(inference_models, name):
    model = inference_models[name]
    assert models.count_inference_params(model) == EXPECTED_PARAMS[name]
    assert model.count_params() == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_CAPS))
def test_architecture(inference_models, name):
    model = inference_models[name]
    meta = models.ZOO[name]
    assert model.input_shape == (None, *meta["input_shape"])
    assert model.output_shape == (None, meta["num_classes"])
    n_in, d_in, n_out, d_out = EXPECTED_CAPS[name]
    pc, cc = model.get_layer("primary_caps"), model.get_layer("class_caps")
    assert isinstance(pc, PrimaryCaps) and isinstance(cc, ClassCaps)
    assert isinstance(model.get_layer("length"), Length)
    assert pc.output.shape == (None, n_in, d_in)
    assert tuple(cc.W.shape) == (n_in, n_out, d_out, d_in)
    assert cc.routings == 3
    # Plain convs: ReLU and 'valid'; primary caps conv: no activation before squash.
    convs = [l for l in model.layers if l.name.startswith("conv")]
    assert [l.name for l in convs] == [f"conv{k + 1}" for k in range(len(convs))]
    assert all(l.padding == "valid" and l.activation is keras.activations.relu for l in convs)
    assert pc.conv.padding == "valid" and pc.conv.activation is keras.activations.linear
    # The metadata-only shape computation agrees with Keras.
    shapes = models.feature_shapes(name)
    assert [tuple(l.output.shape[1:3]) for l in convs] == shapes[:-1]
    gh, gw = shapes[-1]
    assert gh * gw * pc.num_capsules == n_in == models.describe(name)["num_input_capsules"]


def test_costa_cifar10_strides(inference_models):
    model = inference_models["costa2022-cifar10"]
    assert [model.get_layer(f"conv{k}").strides for k in (1, 2, 3, 4)] == [
        (1, 1), (1, 1), (2, 2), (2, 2)]
    assert [model.get_layer(f"conv{k}").filters for k in (1, 2, 3, 4)] == [32, 32, 64, 64]


def test_training_model_and_shared_inference_model():
    train = models.build("tiny", decoder=True)
    assert [tuple(i.shape) for i in train.inputs] == [(None, 28, 28, 1), (None, 10)]
    assert [tuple(o.shape) for o in train.outputs] == [(None, 10), (None, 28, 28, 1)]
    assert train.output_names == ["length", "reconstruction"]
    assert models.is_training_model(train)
    inf = models.inference_model(train)
    assert len(inf.inputs) == 1 and inf.output_shape == (None, 10)
    assert models.count_inference_params(train) == inf.count_params() == 27_120
    assert train.count_params() > inf.count_params()  # the decoder
    # Weights are shared: changing W in the training model changes the inference model.
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[[1, 2, 3]]
    np.testing.assert_allclose(inf.predict(x, verbose=0), train.predict([x, labels], verbose=0)[0],
                               rtol=1e-6)
    W = train.get_layer("class_caps").W
    before = inf.predict(x, verbose=0)
    W.assign(W.numpy() * 2.0)
    assert not np.allclose(inf.predict(x, verbose=0), before)
    assert models.inference_model(inf) is inf


def test_overrides_and_errors():
    digits = models.build("tiny", input_shape=(8, 8, 1), num_classes=4)
    assert digits.input_shape == (None, 8, 8, 1) and digits.output_shape == (None, 4)
    assert digits.get_layer("primary_caps").output.shape[1] == 2 * 2 * 8
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        models.build("nope")
    with pytest.raises(ValueError, match="costa2022-mnist.*too small.*primary_caps"):
        models.build("costa2022-mnist", input_shape=(12, 12, 1))
    with pytest.raises(ValueError, match="num_classes"):
        models.build("tiny", num_classes=1)
    with pytest.raises(ValueError, match="input_shape"):
        models.build("tiny", input_shape=(28, 28))
    with pytest.raises(ValueError, match="expected an inference model"):
        a, b = keras.Input((3,)), keras.Input((3,))
        models.inference_model(keras.Model([a, b], keras.layers.Add()([a, b])))


def test_compile_and_fit_a_few_batches():
    # Learnable toy task: the label decides which quadrant of the image is lit.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 256)
    x = rng.random((256, 12, 12, 1)).astype(np.float32) * 0.2
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, r * 6:(r + 1) * 6, c * 6:(c + 1) * 6] += 0.8
    onehot = np.eye(4, dtype=np.float32)[y]
    keras.utils.set_random_seed(1)
    model = models.compile_for_training(models.build("tiny", input_shape=(12, 12, 1),
                                                     num_classes=4))
    hist = model.fit(x, onehot, batch_size=32, epochs=4, verbose=0).history
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["accuracy"][-1] > 0.9

    train = models.compile_for_training(models.build("tiny", decoder=True,
                                                     input_shape=(12, 12, 1), num_classes=4))
    hist = train.fit([x, onehot], [onehot, x], batch_size=64, epochs=2, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in hist.values())
    assert hist["loss"][-1] < hist["loss"][0]
    assert {"length_accuracy", "length_loss", "reconstruction_loss"} <= set(hist)
    # Total = margin loss + 0.0005 * per-sample sum-squared reconstruction error.
    res = train.evaluate([x, onehot], [onehot, x], verbose=0, return_dict=True)
    np.testing.assert_allclose(res["loss"],
                               res["length_loss"] + 0.0005 * res["reconstruction_loss"],
                               rtol=1e-4)
    recon = train.predict([x, onehot], verbose=0)[1]
    np.testing.assert_allclose(res["reconstruction_loss"],
                               ((recon - x) ** 2).reshape(len(x), -1).sum(1).mean(), rtol=1e-4)


def test_cli_zoo_json_in_process(capsys):
    assert cli.main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(models.names())
    for name, params in EXPECTED_PARAMS.items():
        assert by_name[name]["params"] == params == by_name[name]["published_params"]
        assert by_name[name]["input_shape"] == list(models.ZOO[name]["input_shape"])
    assert by_name["tiny"]["params"] == 27_120


def test_cli_zoo_table_and_errors(capsys):
    assert cli.main(["zoo", "--model", "costa2022-cifar10"]) == 0
    out = capsys.readouterr().out
    assert "costa2022-cifar10" in out and "115,296" in out and "32x32x3" in out
    assert cli.main(["zoo", "--model", "bogus"]) == 2
    assert "unknown model(s) bogus" in capsys.readouterr().err


def test_cli_zoo_subprocess():
    proc = subprocess.run([sys.executable, "-m", "tflm_caps.cli", "zoo", "--json", "--model",
                           "costa2022-mnist"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["name"] == "costa2022-mnist" and rows[0]["params"] == 296_800


def test_models_module_does_not_import_tensorflow():
    code = ("import sys, tflm_caps, tflm_caps.models as m; m.names(); m.feature_shapes('tiny');"
            "m.describe('sabour2017-mnist'); print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
