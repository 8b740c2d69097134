"""tflm_caps.tflite: tables against the schema, load/dump, summaries, metadata
stripping and the identifier check every reader shares."""
import numpy as np
import pytest

from support.model_builder import OpSpec, TensorSpec, build_model, encode_options
from tflm_caps import tflite
from tflm_caps.tflite import graph, tables
from tflm_caps.tflite.model import constant_array, op_name, tensor_name


def _model(metadata=None):
    """QUANTIZE float [1, 2, 4] -> int8, TFLMCaps_Squash, one int32 constant."""
    tensors = [TensorSpec("image", (1, 2, 4), "float32"),
               TensorSpec("x", (1, 2, 4), "int8", 0.05, -3),
               TensorSpec("v", (1, 2, 4), "int8", 1 / 128, 0),
               TensorSpec("table", (5,), "int32", data=np.arange(5) * 1000 - 7)]
    ops = [OpSpec("QUANTIZE", [0], [1]),
           OpSpec("TFLMCaps_Squash", [1], [2], encode_options({"version": 1}))]
    return build_model(tensors, ops, [0], [2], metadata=metadata)


def test_tables_agree_with_the_schema():
    schema = tables.schema()
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    assert tables.TENSOR_TYPE_NAMES == types
    assert tables.BUILTIN_CUSTOM == schema.BuiltinOperator.CUSTOM
    assert tables.builtin_codes()["CONV_2D"] == schema.BuiltinOperator.CONV_2D
    assert tables.builtin_name(schema.BuiltinOperator.DEQUANTIZE) == "DEQUANTIZE"
    assert tables.CUSTOM_OPTIONS_FLEXBUFFERS == schema.CustomOptionsFormat.FLEXBUFFERS
    for code, dtype in tables.NUMPY_DTYPES.items():
        assert dtype.name == tables.TENSOR_TYPE_NAMES[code]


def test_load_dump_round_trip_and_alignment():
    data = _model()
    model = tflite.load(data)
    sg = model.subgraphs[0]
    assert [op_name(model, op) for op in sg.operators] == ["QUANTIZE", "TFLMCaps_Squash"]
    assert [tensor_name(t) for t in sg.tensors] == ["image", "x", "v", "table"]
    np.testing.assert_array_equal(constant_array(model, sg.tensors[3], np.int32),
                                  np.arange(5) * 1000 - 7)
    again = tflite.dump(tflite.load(data))
    assert again == data
    # Buffer data starts 16-byte aligned (the generated Pack would align to 1).
    root = tables.schema().Model.GetRootAsModel(again, 0)
    starts = [root.Buffers(i)._tab.Vector(root.Buffers(i)._tab.Offset(4))
              for i in range(root.BuffersLength()) if root.Buffers(i).DataLength()]
    assert starts and all(s % tables.BUFFER_ALIGNMENT == 0 for s in starts)


@pytest.mark.parametrize("data, message", [
    (b"TFL3", "4 bytes is too short"),
    (b"\x00" * 4 + b"TFL2" + bytes(16), r"file identifier b'TFL2' at byte 4, expected b'TFL3'"),
])
def test_every_reader_checks_the_identifier_the_same_way(data, message):
    for read in (tflite.load, tflite.check_model, tflite.summarize, tflite.strip_metadata):
        with pytest.raises(tflite.ModelFormatError, match=message):
            read(data)


def test_load_of_a_corrupt_model_is_a_format_error():
    data = bytearray(_model())
    data[0:4] = (len(data) + 100).to_bytes(4, "little")  # root offset past the end
    with pytest.raises(tflite.ModelFormatError, match="malformed"):
        tflite.load(bytes(data))


def test_summarize():
    data = _model(metadata={"TFLITE_METADATA": b"\x01" * 40})
    s = tflite.summarize(data)
    assert s.size_bytes == len(data)
    assert s.operators == ["QUANTIZE", "TFLMCaps_Squash"]
    assert (s.builtin_ops, s.custom_ops) == (["QUANTIZE"], ["TFLMCaps_Squash"])
    assert s.activation_types == {"float32": 1, "int8": 2}
    assert s.weight_types == {"int32": 1} and s.weight_bytes == 20
    assert (s.input_types, s.output_types) == (["float32"], ["int8"])
    (out,) = s.outputs
    assert (out.name, out.shape, out.scale, out.zero_point, out.elements) == \
        ("v", [1, 2, 4], 1 / 128, 0, 8)
    assert s.metadata == ["TFLITE_METADATA"] and s.has_metadata
    d = s.to_dict()
    assert d["op_counts"] == {"QUANTIZE": 1, "TFLMCaps_Squash": 1} and d["has_metadata"]


def test_strip_metadata_drops_entry_buffer_and_appended_files():
    plain = _model()
    with_meta = _model(metadata={"TFLITE_METADATA": b"\x01" * 400}) + b"PK zip of labels"
    stripped = tflite.strip_metadata(with_meta)
    assert tflite.summarize(stripped).metadata == []
    assert len(stripped) < len(with_meta) - 400
    assert tflite.strip_metadata(plain) == plain  # nothing to strip: bytes as given
    # The rest is the plain model, pruned (its unused constant goes too).
    pruned = tflite.load(plain)
    tflite.prune(pruned)
    assert stripped == tflite.dump(pruned)


def test_prune_renumbers_after_an_edit():
    model = tflite.load(_model())
    sg = model.subgraphs[0]
    # Drop the QUANTIZE: the squash reads the graph input, tensor "x" goes.
    sg.operators[1].inputs = np.array([0], np.int32)
    graph.remove_ops(sg, [0])
    removed_tensors, _ = tflite.prune(model)
    assert removed_tensors == 2  # "x", and the unused constant "table"
    assert [tensor_name(t) for t in sg.tensors] == ["image", "v"]
    assert list(sg.operators[0].inputs) == [0] and list(sg.operators[0].outputs) == [1]
    assert [op_name(model, op) for op in sg.operators] == ["TFLMCaps_Squash"]
    assert len(model.operatorCodes) == 1 and len(model.buffers) == 1
