"""``tflm-caps convert`` sub-command."""
import json
import subprocess
import sys

import pytest

from tflm_caps import cli
from tflm_caps import tflite
from tflm_caps.tflite import model as M
from tflm_caps.tflite import tables


def test_help_is_light():
    code = ("import sys, argparse; from tflm_caps.commands import convert; "
            "p = argparse.ArgumentParser(); convert.add_parser(p.add_subparsers()); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
    helptext = subprocess.run([sys.executable, "-m", "tflm_caps.cli", "convert", "--help"],
                              capture_output=True, text=True, check=True).stdout
    for flag in ("--data", "--samples", "--per-capsule", "--float-io",
                 "--recompute-predictions", "--batch-size", "--json", "-o"):
        assert flag in helptext


def test_convert_json(trained_tiny_path, tmp_path, capsys):
    out = tmp_path / "tiny.tflite"
    flt = tmp_path / "tiny_float.tflite"
    code = cli.main(["convert", trained_tiny_path, "--data", "bundled", "--samples", "32",
                     "-o", str(out), "--float-output", str(flt), "--per-capsule", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == str(out) and report["data"] == "bundled"
    assert report["calibration_samples"] == 32 and report["weight_granularity"] == "per-capsule"
    assert report["int8"]["size_bytes"] == out.stat().st_size
    assert report["float"]["size_bytes"] == flt.stat().st_size
    assert report["int8"]["op_counts"] == {"CONV_2D": 2, "RESHAPE": 1, "TFLMCaps_Squash": 1,
                                           "TFLMCaps_ClassCaps": 1, "TFLMCaps_Length": 1}
    assert report["int8"]["activation_types"] == {"int8": 7}
    assert len(report["class_caps"][0]["weight_scales"]) == 10
    model = tflite.load(out.read_bytes())
    sg = model.subgraphs[0]
    assert tables.type_name(sg.tensors[int(sg.inputs[0])].type) == "int8"


def test_convert_text_float_io(trained_tiny_path, tmp_path, capsys):
    out = tmp_path / "tiny_fio.tflite"
    code = cli.main(["convert", trained_tiny_path, "--samples", "8", "-o", str(out),
                     "--float-io", "--recompute-predictions", "--no-metadata"])
    assert code == 0
    text = capsys.readouterr().out
    assert "TFLMCaps_ClassCaps x1" in text and "int8" in text and str(out) in text
    model = tflite.load(out.read_bytes())
    names = [M.op_name(model, op) for op in model.subgraphs[0].operators]
    assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE"
    assert not model.metadata or all(m.name != b"TFLITE_METADATA" for m in model.metadata)


@pytest.mark.parametrize("argv, message", [
    (["missing.keras", "-o", "x.tflite"], "model file not found"),
    (["{model}", "-o", "x.tflite", "--samples", "0"], "--samples"),
    (["{model}", "-o", "x.tflite", "--batch-size", "0"], "--batch-size"),
    (["{model}", "-o", "{tmp}/no/such/dir/x.tflite"], "output directory"),
    (["{model}", "-o", "{tmp}/x.tflite", "--data", "digits"], "--fit"),
    (["{model}", "-o", "{tmp}/x.tflite", "--data", "nosuchsource"], "nosuchsource"),
])
def test_convert_errors(argv, message, trained_tiny_path, tmp_path, capsys, run_cli):
    argv = [a.format(model=trained_tiny_path, tmp=tmp_path) for a in argv]
    assert run_cli(["convert", *argv]) == 2
    err = capsys.readouterr().err
    assert "tflm-caps convert: error:" in err and message in err
