"""TFLite metadata: written by the converter, read back, stripped for firmware."""
import numpy as np
import pytest

from tflm_caps import metadata
from tflm_caps import tflite
from tflm_caps.tflite import model as M


@pytest.fixture(scope="module")
def converted(bundled_data):
    from tflm_caps import models
    from tflm_caps.converter import convert_detailed

    return convert_detailed(models.build("tiny"), bundled_data, num_samples=8)


def test_default_metadata_round_trip(converted):
    meta = metadata.read(converted.model)
    assert meta["name"] == "tiny"
    assert "tiny" in meta["description"] and meta["version"]
    assert meta["author"] == "tflm-caps" and meta["license"] == "Apache-2.0"
    assert meta["mean"] == [0.0] and meta["std"] == [255.0]
    assert meta["labels"] == [str(d) for d in range(10)]
    assert meta["associated_files"] == ["labels.txt"]
    assert meta["input_name"] == "image" and meta["output_name"] == "lengths"
    assert metadata.read(converted.float_model)["name"] == "tiny"


def test_custom_metadata_and_rewrite(converted):
    labels = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    data = metadata.write(converted.model, name="digits", description="d", version="9",
                          labels=labels, mean=[127.5], std=[127.5])
    meta = metadata.read(data)
    assert (meta["name"], meta["description"], meta["version"]) == ("digits", "d", "9")
    assert meta["labels"] == labels and meta["mean"] == [127.5]
    # Writing again replaces (not duplicates) the metadata; output is reproducible.
    again = metadata.write(data, name="digits", description="d", version="9", labels=labels,
                           mean=[127.5], std=[127.5])
    assert again == data
    names = [m.name for m in tflite.load(again).metadata]
    assert names.count(b"TFLITE_METADATA") == 1


def test_strip_metadata_restores_plain_model(converted):
    stripped = tflite.strip_metadata(converted.model)
    assert metadata.read(stripped) is None
    assert len(stripped) < len(converted.model)
    assert b"labels.txt" not in stripped
    assert tflite.strip_metadata(stripped) == stripped
    # Same graph and weights as a conversion without metadata.
    a, b = tflite.load(stripped), tflite.load(converted.model)
    assert [M.op_name(a, op) for op in a.subgraphs[0].operators] == \
        [M.op_name(b, op) for op in b.subgraphs[0].operators]
    wa = sorted(bytes(buf.data) for buf in a.buffers if buf.data is not None)
    wb = sorted(bytes(buf.data) for buf in b.buffers if buf.data is not None)
    assert set(wa) <= set(wb)


def test_metadata_leaves_outputs_unchanged(converted, bundled_data):
    from tflm_caps.converter import kernels

    x = bundled_data.x_test[:10]
    _, with_meta = kernels.run_model(converted.model, x)
    _, without = kernels.run_model(tflite.strip_metadata(converted.model), x)
    np.testing.assert_array_equal(with_meta, without)


def test_no_metadata_option(bundled_data):
    from tflm_caps import models
    from tflm_caps.converter import convert

    data = convert(models.build("tiny"), bundled_data, num_samples=4, metadata=None)
    assert metadata.read(data) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"name": ""}, "name"),
    ({"name": "x", "labels": ["a", "b"]}, "2 names for 10 classes"),
    ({"name": "x", "mean": [0.0, 0.0]}, "mean"),
    ({"name": "x", "std": [0.0]}, "std"),
    ({"name": "x", "labels": ["a\nb"] + ["c"] * 9}, "newlines"),
])
def test_bad_metadata_arguments(converted, kwargs, message):
    with pytest.raises(metadata.MetadataError, match=message):
        metadata.write(converted.model, **kwargs)


def test_not_a_tflite_file():
    with pytest.raises(ValueError, match="TFL3"):
        metadata.read(b"definitely not a model")
