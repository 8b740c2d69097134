"""Pin guards: fail loudly when the environment drifts from what the
project was built and verified against."""
import importlib.metadata as md

import pytest

PINS = {
    "tensorflow-cpu": "2.19.1",
    "tflite-support": "0.4.4",
    "tflite-micro": "0.dev20261023182759",
}


@pytest.mark.parametrize("dist,version", sorted(PINS.items()))
def test_pinned_distribution(dist, version):
    assert md.version(dist) == version, (
        f"{dist} is {md.version(dist)}, tflm-caps is pinned to {version}: "
        "the converter internals / TFLM binary interface were verified only for the pin")


def test_tensorflow_runtime_version():
    import tensorflow as tf
    assert tf.__version__ == PINS["tensorflow-cpu"]


def test_tflite_micro_build_commit():
    import tflite_micro
    # The wheel's binary interface (see tflm_caps_ops/host/) was measured on
    # the build from tflite-micro commit 8f6596d.
    assert tflite_micro.__version__.endswith("g8f6596d"), tflite_micro.__version__


def test_public_api_names_are_functions():
    """``tflm_caps.convert`` / ``tflm_caps.validate`` stay callables even after
    every sub-module has been imported (a sub-module of the same name would
    shadow them)."""
    import tflm_caps
    import tflm_caps.converter  # noqa: F401
    import tflm_caps.validation  # noqa: F401
    from tflm_caps import convert, validate
    assert callable(convert) and callable(validate)
    assert validate.__module__ == "tflm_caps.validation"
