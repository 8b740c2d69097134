"""What a new user hits first: each bad input or argument is a one-line error
(exit code 2, no traceback) naming the file, option or layer; output paths
are checked before the work; logs are quiet unless --verbose; the zoo
answers without TensorFlow.
"""
import io
import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from tflm_caps import cli, console, models, tflite

SEED = os.path.join(os.path.dirname(__file__), "fuzz", "models", "tiny8.tflite")


def _cli(argv, capsys):
    """(exit code, stdout, stderr) of ``tflm-caps ARGV`` run in process."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _user_error(argv, capsys, *fragments):
    rc, out, err = _cli(argv, capsys)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith(f"tflm-caps {argv[0]}: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert str(fragment) in err, err
    return err


@pytest.fixture(scope="module")
def tiny8_keras(tmp_path_factory):
    """An (untrained) tiny CapsNet on 8x8 inputs saved as .keras; it matches
    the input shape of tests/fuzz/models/tiny8.tflite."""
    import keras
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("keras") / "tiny8.keras"
    models.build("tiny", input_shape=(8, 8, 1)).save(path)
    return str(path)


# ----------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("cut,fragment", [
    (6, "6 bytes is too short to be a .tflite model"),
    (5000, "truncated or corrupt"),
    (0, "too short"),
])
def test_export_truncated_or_tiny_model(tmp_path, capsys, cut, fragment):
    data = open(SEED, "rb").read()[:cut]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(data)
    _user_error(["export", bad, "--out", tmp_path / "o"], capsys, "bad.tflite", fragment)
    assert not (tmp_path / "o").exists()


def test_export_byte_flipped_models(tmp_path, capsys):
    """Single-byte corruptions all over the file: exported or refused in one
    line, never a traceback (the wheel's struct.error included)."""
    data = open(SEED, "rb").read()
    rng = np.random.default_rng(3)
    refused = 0
    for k, pos in enumerate(rng.choice(len(data), 12, replace=False)):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        path = tmp_path / f"flip{k}.tflite"
        path.write_bytes(bytes(bad))
        rc, out, err = _cli(["export", path, "--out", tmp_path / f"o{k}"], capsys)
        assert rc in (0, 2) and "Traceback" not in err
        if rc == 2:
            refused += 1
            first = err.splitlines()[0]  # TFLM's own lines may follow
            assert first.startswith("tflm-caps export: error: ") and f"flip{k}.tflite" in first
            assert "buffer is smaller than requested size" not in err
    assert refused > 0


def test_export_out_is_a_file_or_below_one(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _user_error(["export", SEED, "--out", afile], capsys, "--out", "afile",
                "is a file, expected a directory")
    _user_error(["export", SEED, "--out", afile / "sub"], capsys, "--out", "afile/sub",
                "is a file, expected a directory")


def test_export_out_not_writable(tmp_path, capsys, monkeypatch):
    # A real read-only directory (root may write anywhere, so the refusal the
    # file system gives is simulated at the one place that probes it).
    ro = tmp_path / "ro"
    ro.mkdir()
    import tempfile

    real = tempfile.TemporaryFile

    def refusing(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir) == str(ro):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "TemporaryFile", refusing)
    _user_error(["export", SEED, "--out", ro / "fw"], capsys, "--out", "cannot write in",
                str(ro), "Permission denied")


def test_export_arena_below_the_measured_minimum(tmp_path, capsys):
    err = _user_error(["export", SEED, "--out", tmp_path / "a", "--arena-size", "112"], capsys,
                      "tiny8.tflite", "arena size 112 bytes", "--allow-small-arena")
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    # the need on a 32-bit MCU: host minimum less the 64-bit bookkeeping
    measured = int(err.split("below the ")[1].split(" bytes")[0])
    assert measured > 1000
    rc, out, _ = _cli(["export", SEED, "--out", tmp_path / "b", "--arena-size", "112",
                       "--allow-small-arena", "--json"], capsys)
    assert rc == 0
    report = json.loads(out)
    assert report["arena_size"] == 112
    assert report["arena_measured"] - report["arena_32bit_saving"] == measured
    rc, out, _ = _cli(["export", SEED, "--out", tmp_path / "c", "--arena-size",
                       str(measured), "--json"], capsys)
    assert rc == 0 and json.loads(out)["arena_size"] >= measured
    _user_error(["export", SEED, "--out", tmp_path / "d", "--allow-small-arena"], capsys,
                "--allow-small-arena needs --arena-size")


# ----------------------------------------------------------------------------
# output paths checked before the work
# ----------------------------------------------------------------------------

def test_output_paths_are_checked_before_the_model_loads(tmp_path, capsys):
    """The model argument is not even a .keras archive: the output error must
    come first, i.e. before anything is loaded."""
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    afile = tmp_path / "afile"
    afile.write_text("x")
    t0 = time.perf_counter()
    _user_error(["convert", junk, "-o", tmp_path / "missing" / "m.tflite"], capsys,
                "-o/--output", "output directory does not exist")
    _user_error(["convert", junk, "-o", tmp_path], capsys, "-o/--output", "is a directory")
    _user_error(["convert", junk, "-o", tmp_path / "m.tflite", "--float-output",
                 afile / "f.tflite"], capsys, "--float-output", "does not exist")
    _user_error(["validate", junk, SEED, "--report", afile / "r.json"], capsys, "--report")
    _user_error(["validate", junk, SEED, "--report", tmp_path], capsys, "--report",
                "is a directory")
    _user_error(["bench", "--report", tmp_path / "no" / "r.json"], capsys, "--report")
    _user_error(["demo", "--workdir", afile], capsys, "--workdir", "is a file")
    _user_error(["train", "--model", "tiny", "--out", afile / "sub" / "m.keras"], capsys,
                "--out", "is a file, expected a directory")
    assert time.perf_counter() - t0 < 20  # no model was loaded, nothing converted


# ----------------------------------------------------------------------------
# .keras files, nested models, routings
# ----------------------------------------------------------------------------

def test_truncated_or_non_zip_keras_file(tmp_path, capsys, tiny8_keras):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(open(tiny8_keras, "rb").read()[:3000])
    text = tmp_path / "text.keras"
    text.write_text("hello")
    for path in (truncated, text):
        _user_error(["convert", path, "-o", tmp_path / "m.tflite"], capsys, path.name,
                    "not a valid .keras archive")
        _user_error(["validate", path, SEED], capsys, path.name, "not a valid .keras archive")
    no_config = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(no_config, "w") as z:
        z.writestr("other.txt", "x")
    _user_error(["convert", no_config, "-o", tmp_path / "m.tflite"], capsys,
                "noconfig.keras", "no config.json")


def test_nested_model_is_refused(tmp_path, capsys):
    import keras

    from tflm_caps.converter import ConversionError, load_keras_model

    inner = models.build("tiny", input_shape=(8, 8, 1))
    x = keras.Input((8, 8, 1), name="outer_image")
    outer = keras.Model(x, inner(x), name="outer")
    with pytest.raises(ConversionError, match=r"layer 'tiny' of model 'outer' is a nested "
                                              r"Keras model: nested models are not supported;"):
        load_keras_model(outer)
    path = tmp_path / "nested.keras"
    outer.save(path)
    _user_error(["convert", path, "-o", tmp_path / "m.tflite", "--fit", "resize"], capsys,
                "nested models are not supported; ", "'tiny'")


def test_class_caps_routings_limit_at_construction():
    from tflm_caps.layers import ClassCaps
    from tflm_caps.ops_contract import MAX_ROUTINGS

    assert ClassCaps(10, 4, routings=MAX_ROUTINGS, name="ok").routings == MAX_ROUTINGS
    with pytest.raises(ValueError, match=r"ClassCaps 'caps10': routings must be an integer "
                                         rf"from 1 to {MAX_ROUTINGS}.*got 10"):
        ClassCaps(10, 4, routings=10, name="caps10")
    for path in ("docs/layers.md", "docs/converter.md"):
        text = open(os.path.join(os.path.dirname(__file__), "..", path)).read()
        assert "routings" in text and f"1 to {MAX_ROUTINGS}" in text.replace(
            f"`1 <= routings <= {MAX_ROUTINGS}`", f"1 to {MAX_ROUTINGS}"), path


# ----------------------------------------------------------------------------
# options that need no model, validate's image shape and batch
# ----------------------------------------------------------------------------

def test_arguments_are_checked_before_the_model_loads(tmp_path):
    from tflm_caps.converter import ConversionError, convert_detailed
    from tflm_caps.data import DataError
    from tflm_caps.validation import validate

    missing = str(tmp_path / "missing.keras")  # would be FileNotFoundError if loaded
    with pytest.raises(ConversionError, match="num_samples must be a positive integer, got 0"):
        convert_detailed(missing, np.zeros((4, 8, 8, 1), np.float32), num_samples=0)
    with pytest.raises(ConversionError, match="batch_size must be a positive integer, got 0"):
        convert_detailed(missing, np.zeros((4, 8, 8, 1), np.float32), batch_size=0)
    with pytest.raises(DataError, match="samples must be >= 1, got 0"):
        validate(missing, SEED, "bundled", samples=0)


def test_validate_refuses_images_of_another_shape(tiny8_keras, capsys):
    _user_error(["validate", tiny8_keras, SEED, "--no-arena"], capsys,
                "data 'bundled' has images of shape (28, 28, 1), the model takes (8, 8, 1)",
                "--fit")


def _batch2(tmp_path):
    """tests/fuzz/models/tiny8.tflite with a fixed batch of 2."""
    model = tflite.load(open(SEED, "rb").read())
    g = model.subgraphs[0]
    for t in g.tensors:
        if model.buffers[t.buffer].data is None and len(t.shape) and t.shape[0] == 1:
            t.shape = [2] + [int(d) for d in t.shape[1:]]
    shape_const = g.tensors[g.operators[2].inputs[1]]
    model.buffers[shape_const.buffer].data = list(
        np.array([2, 32, 4], np.int32).tobytes())
    path = tmp_path / "tiny8_b2.tflite"
    path.write_bytes(tflite.dump(model))
    return path


def test_batch_model_validates_on_a_multiple_of_its_batch(tmp_path, tiny8_keras, capsys):
    path = _batch2(tmp_path)
    rc, out, err = _cli(["validate", tiny8_keras, path, "--fit", "resize", "--samples", "25",
                         "--no-arena", "--json"], capsys)
    assert rc == 0, err
    report = json.loads(out)
    assert report["samples"] == 24 and report["samples_dropped"] == 1
    assert report["batch_size"] == 2
    rc, out, err = _cli(["validate", tiny8_keras, path, "--fit", "resize", "--samples", "25",
                         "--no-arena"], capsys)
    assert rc == 0 and "fixed batch is 2: the last 1 image(s)" in out
    _user_error(["validate", tiny8_keras, path, "--fit", "resize", "--samples", "1",
                 "--no-arena"], capsys, "tiny8_b2.tflite", "fixed batch of 2")


def test_predict_refuses_nan_inputs():
    from tflm_caps.runtime import TFLMRunner

    x = np.zeros((2, 8, 8, 1), np.float32)
    x[1, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"input 0 \('serving_default_image:0'\): 1 NaN "
                                         r"value\(s\) \(first at index \[1, 3, 4, 0\]\)"):
        TFLMRunner(SEED).predict(x)


# ----------------------------------------------------------------------------
# logs and progress
# ----------------------------------------------------------------------------

def _convert_cli(keras_path, out, *extra):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("TFLM_CAPS_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "tflm_caps.cli", "convert", keras_path,
                           "-o", str(out), "--fit", "resize", "--samples", "8", *extra],
                          capture_output=True, text=True, timeout=600, env=env)


def test_convert_is_quiet_unless_verbose(tiny8_keras, tmp_path):
    quiet = _convert_cli(tiny8_keras, tmp_path / "q.tflite", "--no-progress")
    assert quiet.returncode == 0, quiet.stderr
    for noise in ("fully_quantize", "absl", "W0000", "I0000", "tf_tfl_flatbuffer_helpers"):
        assert noise not in quiet.stderr, quiet.stderr
    assert quiet.stderr.count("\n") <= 2, quiet.stderr
    assert "wrote" in quiet.stdout
    loud = _convert_cli(tiny8_keras, tmp_path / "v.tflite", "--no-progress", "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "fully_quantize" in loud.stderr


def test_quiet_native_hides_and_replays(capfd):
    console.set_verbose(False)
    with console.quiet_native():
        os.write(2, b"native noise\n")
        print("python message", file=sys.stderr)
    captured = capfd.readouterr()
    assert "native noise" not in captured.err and "python message" in captured.err
    with pytest.raises(RuntimeError):
        with console.quiet_native():
            os.write(2, b"context of the failure\n")
            raise RuntimeError("boom")
    assert "context of the failure" in capfd.readouterr().err
    console.set_verbose(True)
    try:
        with console.quiet_native():
            os.write(2, b"shown when verbose\n")
    finally:
        console.set_verbose(False)
    assert "shown when verbose" in capfd.readouterr().err


def test_repeated_keras_outputs_do_not_warn_about_retracing(tiny8_keras, capfd):
    from tflm_caps.converter import load_keras_model
    from tflm_caps.validation import _keras_outputs

    model = load_keras_model(tiny8_keras)
    x = np.zeros((4, 8, 8, 1), np.float32)
    capfd.readouterr()
    for _ in range(7):
        _keras_outputs(model, x, ["class_caps"])
    err = capfd.readouterr().err
    assert "retracing" not in err and "WARNING" not in err, err


class _FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_is_a_few_lines():
    log = io.StringIO()
    for _ in console.progress(range(20000), desc="work", file=log):
        pass
    lines = [ln for ln in log.getvalue().replace("\r", "\n").split("\n") if ln.strip()]
    assert 1 <= len(lines) <= 3, lines
    assert "20000/20000" in lines[-1]
    tty = _FakeTTY()
    bar = console.progress(total=3, desc="tty", file=tty, mininterval=0, miniters=1)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert tty.getvalue().count("\r") >= 3  # a terminal is redrawn in place
    assert console.progress(range(3), enabled=False, file=log).disable


# ----------------------------------------------------------------------------
# zoo
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs", [(n, {}) for n in models.names()] + [
    ("tiny", {"input_shape": (8, 8, 1)}), ("costa2022-mnist", {"num_classes": 5}),
    ("costa2022-cifar10", {"input_shape": (40, 36, 3)})])
def test_arithmetic_parameter_count_equals_keras(name, kwargs):
    import keras

    counted = models.inference_param_count(name, **kwargs)
    built = models.count_inference_params(models.build(name, **kwargs))
    keras.backend.clear_session()
    assert counted == built


def test_zoo_answers_without_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); from tflm_caps import cli; "
            "rc = cli.main(['zoo', '--json']); "
            "print('SECONDS', time.perf_counter() - t, 'TF', 'tensorflow' in sys.modules, "
            "file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["sabour2017-mnist"]["params"] == 6_804_224
    seconds, tf_loaded = proc.stderr.split("SECONDS ")[1].split(" TF ")
    assert tf_loaded.strip() == "False"
    assert float(seconds) < 5.0
