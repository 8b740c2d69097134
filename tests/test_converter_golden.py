"""Converted models are byte-identical to recorded ones.

Seeded, untrained zoo models are converted with fixed calibration images
and the SHA-256 of both .tflite files the converter writes (int8 and float)
is compared with the value recorded when the conversion was last changed
on purpose.  A refactor of the converter, its patches or the .tflite module
must leave these bytes alone; a deliberate change of the converted bytes
updates the hashes here and says why in its commit.  The hashes belong to
the pinned TensorFlow (its calibrator's float kernels set the ranges).
"""
import hashlib

import numpy as np
import pytest

CALIBRATION_SAMPLES = 8

# case -> (zoo model, conversion options, sha256 of the int8 model, of the float model)
GOLDEN = {
    "tiny": (
        "tiny", {"metadata": None},
        "86560ac7a79e365150c42f39ed58dd227fdc4cd996936a7fbfacf8498600d857",
        "a9bc22a56280ffdbfe4fd1ee324b82a9452c4dc18f9df218ad99f0f34c2478f5"),
    "tiny-per-capsule-float-io": (
        "tiny", {"weight_granularity": "per-capsule", "io_dtype": "float32",
                 "store_predictions": False, "metadata": None},
        "b6a202ef9a0d03a827fcd71f10bd4dcf1043884e2780137ccf7cf83a38de9ef7",
        "f7a161e16dc23e19f0f0948d3995ced25fa4c33a65527c10af838409e715396b"),
    # The version is given so that the bytes do not follow the package version.
    "tiny-metadata": (
        "tiny", {"metadata": {"version": "golden"}},
        "7c8d76f0f2c1ce73cc4e476e6b2252965499125b86a9720fa62cd78ae63631bf",
        "c31f5d9606137e467a53066c0de44ef0c2916aed451ba6f13d8ff9f2a4e659bc"),
    "costa2022-mnist": (
        "costa2022-mnist", {"weight_granularity": "per-capsule", "metadata": None},
        "2a6af4871f16780b0b5a82f28a4aadd08a0eb75eafeaa45ff0cc0b28659893ca",
        "9d832170911eca64fb4fcccdf2c369ca298d17e29f55d755458eeb0eb4027de1"),
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
