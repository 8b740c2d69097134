"""FlexBuffer custom options of the capsule ops (docs/custom_ops.md)."""
import struct

import pytest
from flatbuffers import flexbuffers

from tflm_caps.converter import options

ROUTING = {"num_routing": 3, "store_predictions": 1, "u_hat_scale": 0.0123,
           "s_scales": [0.5, 0.25, 0.125], "b_scales": [0.0625, 0.03125]}


def test_class_caps_round_trip_and_types():
    raw = options.encode("TFLMCaps_ClassCaps", ROUTING)
    back = options.decode("TFLMCaps_ClassCaps", raw)
    assert back["version"] == 2
    assert back["num_routing"] == 3 and back["store_predictions"] == 1
    assert back["u_hat_scale"] == struct.unpack("<f", struct.pack("<f", 0.0123))[0]
    assert back["s_scales"] == [0.5, 0.25, 0.125] and back["b_scales"] == [0.0625, 0.03125]
    # Exact encodings promised to the C readers.
    root = flexbuffers.GetRoot(raw).AsMap
    assert root["s_scales"].IsTypedVector
    assert root["s_scales"].AsTypedVector.ElementType == flexbuffers.Type.FLOAT
    assert root["s_scales"].AsTypedVector.ByteWidth == 4
    assert root["num_routing"].IsInt and root["u_hat_scale"].IsFloat
    assert options.map_byte_width(raw) == 4
    assert options.encode("TFLMCaps_ClassCaps", {k: v for k, v in back.items()
                                                 if k != "version"}) == raw


def test_single_routing_has_empty_logit_scales():
    raw = options.encode("TFLMCaps_ClassCaps", {**ROUTING, "num_routing": 1,
                                                "s_scales": [0.5], "b_scales": []})
    back = options.decode("TFLMCaps_ClassCaps", raw)
    assert back["b_scales"] == [] and back["s_scales"] == [0.5]


@pytest.mark.parametrize("op", ["TFLMCaps_Squash", "TFLMCaps_Length"])
def test_version_only_ops(op):
    raw = options.encode(op, {})
    assert options.decode(op, raw) == {"version": 2}
    # Models converted before version 2 are still read.
    fbb = flexbuffers.Builder()
    with fbb.Map():
        fbb.Int("version", 1)
    assert options.decode(op, bytes(fbb.Finish())) == {"version": 1}


@pytest.mark.parametrize("change, message", [
    ({"routings": 3}, "unknown option"),
    ({"num_routing": 0}, "num_routing"),
    ({"num_routing": 9}, "num_routing"),
    ({"store_predictions": 2}, "store_predictions"),
    ({"u_hat_scale": 0.0}, "u_hat_scale"),
    ({"u_hat_scale": float("nan")}, "u_hat_scale"),
    ({"s_scales": [0.5, 0.25]}, "s_scales"),
    ({"b_scales": [0.5, 0.25, 0.1]}, "b_scales"),
    ({"s_scales": [0.5, -1.0, 0.1]}, "s_scales"),
])
def test_encode_rejects_bad_options(change, message):
    with pytest.raises(options.OptionsError, match=message):
        options.encode("TFLMCaps_ClassCaps", {**ROUTING, **change})


def test_encode_rejects_missing_and_unknown_ops():
    with pytest.raises(options.OptionsError, match="missing"):
        options.encode("TFLMCaps_ClassCaps", {"num_routing": 3, "store_predictions": 1})
    with pytest.raises(options.OptionsError, match="unknown custom op"):
        options.encode("TFLMCaps_Routing", {})


def test_decode_rejects_bad_data():
    with pytest.raises(options.OptionsError, match="empty"):
        options.decode("TFLMCaps_Squash", b"")
    fbb = flexbuffers.Builder()
    with fbb.Map():
        fbb.Int("version", 3)
    with pytest.raises(options.OptionsError, match="version 3 is not supported"):
        options.decode("TFLMCaps_Squash", bytes(fbb.Finish()))
    fbb = flexbuffers.Builder()
    with fbb.Map():
        fbb.Int("version", 1)
        fbb.Int("num_routing", 3)
    with pytest.raises(options.OptionsError, match="lack"):
        options.decode("TFLMCaps_ClassCaps", bytes(fbb.Finish()))
    with pytest.raises(options.OptionsError):
        options.decode("TFLMCaps_Squash", b"\x01\x02\x03")


def test_float_model_options():
    raw = options.encode("TFLMCaps_ClassCaps", {"num_routing": 3, "store_predictions": 0},
                         float_model=True)
    assert options.decode("TFLMCaps_ClassCaps", raw, allow_float_model=True) == {
        "version": 2, "num_routing": 3, "store_predictions": 0}
    with pytest.raises(options.OptionsError, match="lack"):
        options.decode("TFLMCaps_ClassCaps", raw)
