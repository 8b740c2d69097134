"""Training: accuracy targets, determinism, decoder, CLI and .keras round trip."""
import json
import math

import numpy as np
import pytest

from tflm_caps import cli
from tflm_caps import train as trainer

TINY_MIN_TEST_ACCURACY = 0.90      # measured 0.94 with the default recipe, seed 0
COSTA_MIN_TEST_ACCURACY = 0.95     # the project's target for costa2022-mnist


def _numpy_accuracy(model, ds):
    scores = np.asarray(model.predict(ds.x_test, batch_size=500, verbose=0))
    assert scores.shape == (len(ds.x_test), ds.num_classes)
    return float(np.mean(scores.argmax(axis=1) == ds.y_test))


def _load(path):
    import keras
    import tflm_caps.layers  # noqa: F401  (registers the capsule layers)
    return keras.models.load_model(path)


def test_tiny_reaches_held_out_threshold(trained_tiny_run, bundled_data):
    model, result = trained_tiny_run.inference, trained_tiny_run.result
    acc = _numpy_accuracy(model, bundled_data)
    assert acc >= TINY_MIN_TEST_ACCURACY, f"tiny held-out accuracy {acc:.4f}"
    assert result.test_accuracy == pytest.approx(acc, abs=1e-9)
    assert result.epochs == trainer.RECIPES["tiny"]["epochs"]
    assert 0.0 <= result.train_accuracy <= 1.0 and result.seconds > 0
    assert result.params == model.count_params()
    # loss went down and the running accuracy went up over training
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    assert result.history["accuracy"][-1] > result.history["accuracy"][0]


def test_trained_tiny_saved_file_predicts_the_same(trained_tiny, trained_tiny_path):
    model, ds = trained_tiny
    loaded = _load(trained_tiny_path)
    np.testing.assert_allclose(loaded.predict(ds.x_test[:200], verbose=0),
                               model.predict(ds.x_test[:200], verbose=0), rtol=0, atol=1e-6)


def test_training_is_reproducible_per_seed(bundled_data):
    from tflm_caps import models
    small = bundled_data.subset(train=400, test=100, seed=1)

    def weights(seed):
        model, result = trainer.train("tiny", small, epochs=1, seed=seed, progress=False,
                                      verbose=False, train_eval_samples=0)
        return [w.copy() for w in model.get_weights()], result

    a, ra = weights(7)
    b, rb = weights(7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert ra.test_accuracy == rb.test_accuracy
    assert math.isnan(ra.train_accuracy)

    def initial(seed):
        trainer.set_seed(seed)
        return models.build("tiny").get_weights()

    assert all(np.array_equal(x, y) for x, y in zip(initial(7), initial(7)))
    assert not any(np.array_equal(x, y) for x, y in zip(initial(7), initial(8)) if x.std() > 0)


def test_decoder_training_reconstructs(bundled_data, tmp_path):
    from tflm_caps import models
    small = bundled_data.subset(train=2000, test=200, seed=2)
    model, result = trainer.train("tiny", small, epochs=2, decoder=True, seed=0,
                                  progress=False, verbose=False)
    assert models.is_training_model(model) and result.decoder
    onehot = small.y_test_onehot
    lengths, recon = model.predict([small.x_test, onehot], verbose=0)
    assert recon.shape == small.x_test.shape
    np.testing.assert_allclose(lengths, result.inference_model.predict(small.x_test, verbose=0),
                               atol=1e-6)
    # the decoder learned the digits: it beats the best constant image (the
    # train mean) and a reconstruction from the wrong class capsule
    sse = ((recon - small.x_test) ** 2).sum(axis=(1, 2, 3)).mean()
    mean_image = small.x_train.mean(axis=0, keepdims=True)
    baseline = ((mean_image - small.x_test) ** 2).sum(axis=(1, 2, 3)).mean()
    wrong = np.roll(onehot, 1, axis=1)
    _, recon_wrong = model.predict([small.x_test, wrong], verbose=0)
    sse_wrong = ((recon_wrong - small.x_test) ** 2).sum(axis=(1, 2, 3)).mean()
    assert sse < 0.9 * baseline, (sse, baseline)
    assert sse < sse_wrong, (sse, sse_wrong)
    assert len(result.history["reconstruction_loss"]) == 2
    # the training model round-trips through .keras
    path = tmp_path / "tiny-train.keras"
    model.save(path)
    loaded = _load(path)
    assert models.is_training_model(loaded)
    _, recon_loaded = loaded.predict([small.x_test, onehot], verbose=0)
    np.testing.assert_allclose(recon_loaded, recon, atol=1e-6)


def test_train_adapts_data_when_asked(bundled_data):
    from tflm_caps import data, models
    digits = data.load("digits").subset(train=300, test=60)
    net = models.build("tiny")  # 28x28 input
    with pytest.raises(ValueError, match=r"expects images \(28, 28, 1\).*fit='auto'"):
        trainer.train(net, digits, epochs=1, progress=False)
    model, result = trainer.train("tiny", digits, epochs=1, fit="auto", progress=False,
                                  verbose=False)
    assert tuple(model.inputs[0].shape[1:]) == (28, 28, 1)  # the zoo shape
    assert result.data == "digits@28x28x1" and 0.0 <= result.test_accuracy <= 1.0
    # a zoo name is built for the data's own shape (tiny switches to 3x3 kernels)
    model, _ = trainer.train("tiny", digits, epochs=1, progress=False, verbose=False)
    assert tuple(model.inputs[0].shape[1:]) == (8, 8, 1)


def test_train_argument_errors(bundled_data):
    from tflm_caps import data, models
    small = bundled_data.subset(train=20, test=10)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        trainer.train("nope", small, progress=False)
    with pytest.raises(ValueError, match="epochs must be positive, got 0"):
        trainer.train("tiny", small, epochs=0, progress=False)
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        trainer.train("tiny", small, learning_rate=-1.0, progress=False)
    with pytest.raises(ValueError, match="Dataset"):
        trainer.train("tiny", (small.x_train, small.y_train), progress=False)
    with pytest.raises(ValueError, match="has 5 outputs, dataset .* has 10 classes"):
        trainer.train(models.build("tiny", num_classes=5), small, progress=False)
    with pytest.raises(ValueError, match="decoder=True needs a training model"):
        trainer.train(models.build("tiny"), small, decoder=True, progress=False)
    with pytest.raises(ValueError, match="too small"):
        trainer.train("costa2022-mnist", data.load("digits"), progress=False)


def test_cli_json_and_saved_model(tmp_path, capsys, bundled_data):
    out = tmp_path / "sub" / "tiny.keras"
    code = cli.main(["train", "--model", "tiny", "--epochs", "1", "--out", str(out),
                     "--no-progress", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("model", "epochs", "train_accuracy", "test_accuracy", "seconds", "params",
                "out"):
        assert key in report
    assert report["model"] == "tiny" and report["epochs"] == 1 and report["out"] == str(out)
    assert report["saved"] == "inference" and report["test_images"] == 1000
    loaded = _load(out)
    # the saved file is the model that was measured
    assert _numpy_accuracy(loaded, bundled_data) == pytest.approx(report["test_accuracy"],
                                                                  abs=1e-9)
    assert loaded.count_params() == report["params"]


def test_cli_saves_training_model_with_decoder(tmp_path, capsys):
    from tflm_caps import models
    out = tmp_path / "tiny-train.keras"
    code = cli.main(["train", "--model", "tiny", "--epochs", "1", "--decoder", "--save",
                     "training", "--out", str(out), "--no-progress", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decoder"] is True and report["saved"] == "training"
    assert models.is_training_model(_load(out))


@pytest.mark.parametrize("argv,message", [
    (["--model", "tiny", "--out", "model.h5"], "must end in .keras"),
    (["--model", "tiny", "--out", "{tmp}/m.keras", "--data", "mnist"], "unknown data source"),
    (["--model", "tiny", "--out", "{tmp}/m.keras", "--data", "idx:{tmp}/none"],
     "not a directory"),
    (["--model", "tiny", "--out", "{tmp}/m.keras", "--epochs", "0"],
     "argument --epochs: must be >= 1, got 0"),
    (["--model", "tiny", "--out", "{tmp}/m.keras", "--learning-rate", "-1"],
     "argument --learning-rate: must be a positive number"),
    (["--model", "tiny", "--out", "{tmp}/m.keras", "--seed", "-1"],
     "argument --seed: must be >= 0"),
    (["--model", "costa2022-mnist", "--out", "{tmp}/m.keras", "--data", "digits"],
     "is too small: layer"),
    (["--model", "tiny", "--out", "{tmp}/m.keras", "--no-decoder", "--save", "training"],
     "--save training keeps the decoder"),
])
def test_cli_user_errors(tmp_path, capsys, run_cli, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run_cli(["train", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "tflm-caps train: error:" in err and message in err
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.slow
def test_costa2022_mnist_cli_reaches_95_percent(trained_costa_mnist_run, bundled_data):
    run = trained_costa_mnist_run
    report = run.report
    assert report["model"] == "costa2022-mnist" and report["data"] == "bundled-mnist"
    assert report["params"] == 296_800  # the published parameter count
    assert report["test_accuracy"] >= COSTA_MIN_TEST_ACCURACY, report
    assert report["epochs"] == trainer.RECIPES["costa2022-mnist"]["epochs"]
    assert 0.95 <= report["train_accuracy"] <= 1.0
    loaded = _load(run.path)
    # the file the CLI saved is the model it measured, prediction for prediction
    scores = loaded.predict(bundled_data.x_test, batch_size=500, verbose=0)
    np.testing.assert_allclose(scores[:200], run.inference.predict(bundled_data.x_test[:200],
                                                                   verbose=0), rtol=0, atol=1e-6)
    assert float(np.mean(scores.argmax(1) == bundled_data.y_test)) == pytest.approx(
        report["test_accuracy"], abs=1e-9)
    json.dumps(run.result.as_dict())  # JSON-serializable
