"""tflm_caps.validate and ``tflm-caps validate`` on the trained tiny model:
every reported number is recomputed here independently."""
import json
import math

import numpy as np
import pytest

from tflm_caps import cli
from tflm_caps.validation import markdown, sqnr_db, to_json, validate, write_report

SAMPLES = 300


@pytest.fixture(scope="module")
def tiny_files(trained_tiny, trained_tiny_path, tmp_path_factory):
    from tflm_caps import convert
    model, ds = trained_tiny
    folder = tmp_path_factory.mktemp("validate")
    tflite = folder / "tiny.tflite"
    tflite.write_bytes(convert(model, ds.calibration_subset(100), num_samples=100))
    return trained_tiny_path, str(tflite), folder


@pytest.fixture(scope="module")
def report(tiny_files, trained_tiny):
    keras_path, tflite, _ = tiny_files
    _, ds = trained_tiny
    return validate(keras_path, tflite, ds, samples=SAMPLES)


def test_sqnr_formula():
    ref = np.array([1.0, -2.0, 3.0])
    test = ref + np.array([0.1, 0.0, -0.1])
    assert sqnr_db(ref, test) == pytest.approx(10 * math.log10(14 / 0.02))
    assert sqnr_db(ref, ref) is None


def test_accuracies_and_agreement_recomputed(report, tiny_files, trained_tiny):
    from tflm_caps.runtime import TFLMRunner
    model, ds = trained_tiny
    x, y = ds.x_test[:SAMPLES], ds.y_test[:SAMPLES]
    float_pred = model.predict(x, verbose=0).argmax(-1)
    int8_pred = TFLMRunner(tiny_files[1]).predict(x).argmax(-1)
    assert report["samples"] == SAMPLES
    assert report["float_accuracy"] == pytest.approx(np.mean(float_pred == y))
    assert report["int8_accuracy"] == pytest.approx(np.mean(int8_pred == y))
    assert report["agreement"] == pytest.approx(np.mean(float_pred == int8_pred))
    assert report["agreement"] >= 0.98
    assert report["disagreements"] == int(np.sum(float_pred != int8_pred))


def test_sizes_and_arena(report, tiny_files):
    from tflm_caps.runtime import find_min_arena_size
    with open(tiny_files[1], "rb") as f:
        int8_bytes = f.read()
    assert report["int8_tflite_bytes"] == len(int8_bytes)
    assert report["float_tflite_bytes"] > 3 * report["int8_tflite_bytes"]
    assert report["int8_to_float_size"] == pytest.approx(
        report["int8_tflite_bytes"] / report["float_tflite_bytes"])
    assert report["arena_bytes"] == find_min_arena_size(int8_bytes)


def test_capsule_layers(report, tiny_files, trained_tiny):
    """The three capsule layers are found; the final layer's error equals
    the one computed from Keras and TFLM outputs directly."""
    from tflm_caps.runtime import TFLMRunner
    model, ds = trained_tiny
    layers = {layer["op"]: layer for layer in report["layers"]}
    assert set(layers) == {"TFLMCaps_Squash", "TFLMCaps_ClassCaps", "TFLMCaps_Length"}
    assert layers["TFLMCaps_Squash"]["name"] == "primary_caps"
    assert layers["TFLMCaps_ClassCaps"]["name"] == "class_caps"
    x = ds.x_test[:SAMPLES]
    keras_len = model.predict(x, verbose=0)
    tflm_len = TFLMRunner(tiny_files[1]).predict(x)
    length = layers["TFLMCaps_Length"]
    assert length["max_abs_error"] == pytest.approx(np.max(np.abs(keras_len - tflm_len)),
                                                    abs=1e-6)
    assert length["sqnr_db"] == pytest.approx(sqnr_db(keras_len, tflm_len), abs=1e-3)
    for layer in report["layers"]:
        # int8 capsule layers are accurate to far better than 20 dB ...
        assert layer["sqnr_db"] > 20, layer
        # ... and each op alone adds less error than all layers before it
        assert layer["op_sqnr_db"] >= layer["sqnr_db"] - 1.0, layer
    # squash and length alone are within about one output LSB of the float op
    assert layers["TFLMCaps_Squash"]["op_max_abs_error"] <= 1.5 / 128
    assert layers["TFLMCaps_Length"]["op_max_abs_error"] <= 1.5 / 256


def test_report_files(report, tmp_path):
    files = write_report(report, str(tmp_path / "r.json"))
    data = json.loads((tmp_path / "r.json").read_text())
    for key in ("model", "samples", "float_accuracy", "int8_accuracy", "agreement",
                "float_tflite_bytes", "int8_tflite_bytes", "arena_bytes", "layers"):
        assert key in data
    assert all({"name", "sqnr_db", "max_abs_error"} <= set(layer) for layer in data["layers"])
    assert not any(k.startswith("_") for k in data)
    md = (tmp_path / "r.md").read_text()
    assert "top-1 agreement" in md and "primary_caps" in md
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["png"].endswith("r.png")
    assert to_json({"x": float("inf"), "_hidden": 1}) == {"x": None}
    assert "| length |" in markdown(report)


def test_cli_validate(tiny_files, tmp_path, capsys):
    keras_path, tflite, _ = tiny_files
    out = tmp_path / "report.json"
    code = cli.main(["validate", keras_path, tflite, "--data", "bundled", "--samples", "50",
                     "--report", str(out), "--no-progress", "--no-arena"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "int8 accuracy (TFLM)" in printed
    data = json.loads(out.read_text())
    assert data["samples"] == 50 and data["arena_bytes"] is None
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.png").exists()

    code = cli.main(["validate", keras_path, tflite, "--samples", "20", "--json",
                     "--no-arena"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 20


def test_cli_validate_errors(tiny_files, tmp_path, capsys, run_cli):
    keras_path, tflite, _ = tiny_files
    assert cli.main(["validate", keras_path, str(tmp_path / "nope.tflite")]) == 2
    assert "file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    assert cli.main(["validate", keras_path, str(junk), "--no-arena"]) == 2
    assert "not a .tflite model" in capsys.readouterr().err
    assert run_cli(["validate", keras_path, tflite, "--samples", "0"]) == 2
    assert "argument --samples: must be >= 1, got 0" in capsys.readouterr().err
    assert run_cli(["validate", keras_path, tflite, "--min-agreement", "2"]) == 2
    assert "argument --min-agreement: must be in [0, 1]" in capsys.readouterr().err
    assert cli.main(["validate", keras_path, tflite, "--report",
                     str(tmp_path / "no" / "dir" / "r.json")]) == 2
    assert "output directory does not exist" in capsys.readouterr().err


def test_mismatched_models(tiny_files, trained_tiny):
    """A .tflite of another input shape is refused with a clear message."""
    from support.model_builder import squash_model
    keras_path, _, folder = tiny_files
    other = folder / "other.tflite"
    other.write_bytes(squash_model((1, 4, 8), 0.1, 0))
    _, ds = trained_tiny
    with pytest.raises(ValueError, match="not the same model"):
        validate(keras_path, str(other), ds, samples=10, arena_bytes=None)
