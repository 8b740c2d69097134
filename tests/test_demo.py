"""``tflm-caps demo``: the main job on costa2022-mnist, reusing the
session's trained model (the demo's cache path), with its targets."""
import json
import shutil

import pytest

from tflm_caps import cli


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--workdir" in capsys.readouterr().out


def test_demo_bad_report_dir(tmp_path, capsys):
    assert cli.main(["demo", "--workdir", str(tmp_path),
                     "--report", str(tmp_path / "missing" / "r.json")]) == 2
    assert "output directory does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_meets_targets(trained_costa_mnist_path, tmp_path, capsys):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    shutil.copy(trained_costa_mnist_path, workdir / "costa2022-mnist.keras")
    report_path = workdir / "out.json"
    code = cli.main(["demo", "--workdir", str(workdir), "--report", str(report_path),
                     "--no-progress", "--strict"])
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    print(json.dumps({k: report[k] for k in (
        "float_accuracy", "int8_accuracy", "agreement", "all_images_agreement",
        "int8_to_float_size", "float_tflite_bytes", "int8_tflite_bytes", "arena_bytes")}))
    assert report["training"] is None, "the cached model must be reused, not retrained"
    assert report["model"] == "costa2022-mnist"
    assert report["all_images"] == 5000
    assert report["samples"] == 1000
    # The main job's targets.
    assert report["all_images_agreement"] >= 0.995
    assert report["float_accuracy"] - report["int8_accuracy"] <= 0.002 + 1e-12
    assert report["int8_tflite_bytes"] <= 0.27 * report["float_tflite_bytes"]
    assert report["targets_met"] and code == 0
    assert {layer["op"] for layer in report["layers"]} == {
        "TFLMCaps_Squash", "TFLMCaps_ClassCaps", "TFLMCaps_Length"}
    assert report["arena_bytes"] > 0
    for name in ("costa2022-mnist.tflite", "costa2022-mnist_float.tflite", "out.md", "out.png"):
        assert (workdir / name).stat().st_size > 0
    assert "top-1 agreement, all images" in printed


def test_demo_models(capsys):
    """One demo per capsule family; an unknown model is a usage error."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--model" in out and "mazzia2021-mnist" in out
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--model", "tiny"])
    assert exc.value.code == 2
    assert "invalid choice: 'tiny'" in capsys.readouterr().err
