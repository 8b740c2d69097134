"""Converted models are byte-identical to recorded ones.

Seeded, untrained zoo models are converted with fixed calibration images
and the SHA-256 of both .tflite files the converter writes (int8 and float)
is compared with the value recorded when the conversion was last changed
on purpose.  A refactor of the converter, its patches or the .tflite module
must leave these bytes alone; a deliberate change of the converted bytes
updates the hashes here and says why in its commit.  The hashes belong to
the pinned TensorFlow (its calibrator's float kernels set the ranges).

Last deliberate change: options version 2, each int8 Squash carrying its
gain table as a constant int32 input.  Without those tables and at version
1 the int8 and float models were byte-identical to the previous hashes
(checked for every case but the one whose metadata writer re-serializes).
"""
import hashlib

import numpy as np
import pytest

CALIBRATION_SAMPLES = 8

# case -> (zoo model, conversion options, sha256 of the int8 model, of the float model)
GOLDEN = {
    "tiny": (
        "tiny", {"metadata": None},
        "d9a20833b2bcce4565bf6b705ed651686a19a638694130ee8122c19c709c188c",
        "55ddf6e34a831899fb1fce5f7f9827f320ba62672d868458bce45f64b9f6ef34"),
    "tiny-per-capsule-float-io": (
        "tiny", {"weight_granularity": "per-capsule", "io_dtype": "float32",
                 "store_predictions": False, "metadata": None},
        "285447eb6bf78e1a880ccfc08e5d9cd1a44e8227dcbd25e70247e18f51fe14db",
        "52e3baf48b77c01da629cd6bb85191219cacb81f86c7a209b59c44d7e4b7f850"),
    # The version is given so that the bytes do not follow the package version.
    "tiny-metadata": (
        "tiny", {"metadata": {"version": "golden"}},
        "1d0011ed2023bdbbf4c437ff3d6e2e2d3277ad7caf5726ec208f022170db5641",
        "76632fe29bbf288a72fe13d7fc74c79de087c78dfaafbd19a85c8d320e5d8527"),
    "costa2022-mnist": (
        "costa2022-mnist", {"weight_granularity": "per-capsule", "metadata": None},
        "9ffd6d3edae337eeb65c4f5662558277d598e2437d32a2817a0ccd8c31859a86",
        "b2871a64b353adb913e60961724e3f2f74e61e08e646451bea80142f1a91a7bf"),
}


def _convert(name, options, seed=0):
    import keras

    from tflm_caps import models
    from tflm_caps.converter import convert_detailed

    keras.utils.set_random_seed(seed)
    model = models.build(name)
    shape = models.ZOO[name]["input_shape"]
    images = np.random.default_rng(seed).random((CALIBRATION_SAMPLES, *shape), dtype=np.float32)
    return convert_detailed(model, images, num_samples=CALIBRATION_SAMPLES, **options)


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("case", list(GOLDEN))
def test_converted_bytes_match_the_recorded_hashes(case):
    name, options, int8_sha, float_sha = GOLDEN[case]
    result = _convert(name, options)
    assert (_sha256(result.model), _sha256(result.float_model)) == (int8_sha, float_sha)


def test_tables_change_no_output():
    """The converted model and the same model as the converter wrote it
    before options version 2 (no table input, version 1: the op fills the
    table in Prepare) give the same int8 outputs in TFLM."""
    from support.model_builder import encode_options
    from tflm_caps import ops_contract as C
    from tflm_caps import tflite
    from tflm_caps.converter import options
    from tflm_caps.runtime import TFLMRunner
    from tflm_caps.tflite.model import op_name

    result = _convert("tiny", {"metadata": None})
    old = tflite.load(result.model)
    squashes = 0
    for op in old.subgraphs[0].operators:
        name = op_name(old, op)
        if name in C.CUSTOM_OPS:
            opts = options.decode(name, bytes(op.customOptions))
            op.customOptions = list(encode_options({**opts, C.OPT_VERSION: 1}))
        if name == C.SQUASH:
            assert len(op.inputs) == 2
            op.inputs = np.array(op.inputs[:1], np.int32)
            squashes += 1
    assert squashes >= 1
    tflite.prune(old)
    old_bytes = tflite.dump(old)
    assert len(result.model) - len(old_bytes) > 4 * 1000 * squashes  # the tables are gone
    from tflm_caps import models

    x = np.random.default_rng(3).random((32, *models.ZOO["tiny"]["input_shape"]),
                                        dtype=np.float32)
    # The untrained model's lengths are all zero: compare the squash outputs.
    outs = []
    for data in (result.model, old_bytes):
        t = tflite.check_model(data).ops_named(C.SQUASH)[0].outputs[0]
        outs.append(TFLMRunner(data, preserve_all_tensors=True).intermediates(x, [t])[t])
    np.testing.assert_array_equal(outs[0], outs[1])
    assert len(np.unique(outs[0])) > 10
