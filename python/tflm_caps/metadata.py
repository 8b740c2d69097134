"""TFLite metadata of converted models: write, read back, strip.

Written with tflite-support's metadata writer (name, description, version,
author, license, input normalization, class labels as the associated file
``labels.txt``).  tflite-support is imported module by module, never as
``import tflite_support``: that package's pybind11 bindings clash with
TensorFlow's in one process.  The associated file is appended to the
flatbuffer as a zip archive; ``tflm_caps.tflite.strip_metadata`` removes
both for firmware.
"""
import json
import os
import tempfile

from tflm_caps import tflite
from tflm_caps.tflite.tables import TFLITE_METADATA

LABELS_FILE = "labels.txt"
# Fixed timestamp for the labels file so that the zip (and the model) is reproducible.
_LABELS_MTIME = 1577836800  # 2020-01-01
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


class MetadataError(ValueError):
    """Metadata arguments or the model's metadata are invalid."""


def _color_space(channels):
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as ms
    return {1: ms.ColorSpaceType.GRAYSCALE, 3: ms.ColorSpaceType.RGB}.get(
        channels, ms.ColorSpaceType.UNKNOWN)


def _floats(values, what, channels):
    values = [float(v) for v in values]
    if len(values) not in (1, channels):
        raise MetadataError(f"metadata {what}: need 1 or {channels} values (one per channel), "
                            f"got {len(values)}")
    return values


def write(tflite_bytes, *, name, description="", version="", author="tflm-caps",
          license="Apache-2.0", labels=None, mean=(0.0,), std=(255.0,),
          input_name="image", output_name="lengths"):
    """``tflite_bytes`` with metadata populated (any metadata already there is replaced).

    mean/std: input normalization (model input = (raw - mean) / std, per
    channel; the default maps raw 0..255 pixels to the [0, 1] the zoo
    models take).  labels: class names, one per output (written to
    ``labels.txt``).
    """
    from tensorflow_lite_support.metadata.python.metadata_writers import (metadata_info,
                                                                          metadata_writer,
                                                                          writer_utils)

    data = bytearray(tflite.strip_metadata(tflite_bytes))
    if not name:
        raise MetadataError("metadata name must be a non-empty string")
    in_types = writer_utils.get_input_tensor_types(data)
    out_types = writer_utils.get_output_tensor_types(data)
    if len(in_types) != 1 or len(out_types) != 1:
        raise MetadataError(f"metadata: expected one input and one output tensor, got "
                            f"{len(in_types)} and {len(out_types)}")
    model = tflite.load(data)
    sg = model.subgraphs[0]
    in_shape = [int(d) for d in sg.tensors[int(sg.inputs[0])].shape]
    out_shape = [int(d) for d in sg.tensors[int(sg.outputs[0])].shape]
    channels = in_shape[-1] if len(in_shape) == 4 else 1
    mean = _floats(mean, "mean", channels)
    std = _floats(std, "std", channels)
    if any(s == 0 for s in std):
        raise MetadataError("metadata std: values must be non-zero")
    general = metadata_info.GeneralMd(name=str(name), version=str(version),
                                      description=str(description), author=str(author),
                                      licenses=str(license))
    image = metadata_info.InputImageTensorMd(
        name=input_name, description="Input image, NHWC; model input = (pixel - mean) / std.",
        norm_mean=mean, norm_std=std, color_space_type=_color_space(channels),
        tensor_type=in_types[0])
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        label_files = None
        if labels is not None:
            labels = [str(x) for x in labels]
            if out_shape and len(labels) != out_shape[-1]:
                raise MetadataError(f"metadata labels: {len(labels)} names for "
                                    f"{out_shape[-1]} classes")
            if any("\n" in x for x in labels):
                raise MetadataError("metadata labels must not contain newlines")
            path = os.path.join(tmp, LABELS_FILE)
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(labels) + "\n")
            os.utime(path, (_LABELS_MTIME, _LABELS_MTIME))
            files.append(path)
            label_files = [metadata_info.LabelFileMd(path)]
        lengths = metadata_info.ClassificationTensorMd(
            name=output_name, description="Class-capsule lengths (class probabilities in "
                                          "[0, 1]); the predicted class is the longest.",
            label_files=label_files, tensor_type=out_types[0])
        writer = metadata_writer.MetadataWriter.create_from_metadata_info(
            data, general_md=general, input_md=[image], output_md=[lengths],
            associated_files=files)
        populated = bytes(writer.populate())
        contents = {os.path.basename(p): open(p, "rb").read() for p in files}
    return _realign(populated, contents)


def _realign(populated, files):
    """Re-serialize with 16-byte aligned buffers and re-append the associated files.

    tflite-support's populator re-packs the flatbuffer without the schema's
    buffer alignment; the zip of associated files follows the flatbuffer
    (offsets from the start of the file), so it is rebuilt after it.
    """
    import io
    import zipfile

    out = io.BytesIO(tflite.dump(tflite.load(populated)))
    out.seek(0, io.SEEK_END)
    if files:
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
            for name in sorted(files):
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                archive.writestr(info, files[name])
    return out.getvalue()


def read(tflite_bytes):
    """The metadata of a model as a dict, or None when it has none.

    Keys: name, description, version, author, license, mean, std, labels
    (list or None), input_name, output_name, associated_files.
    """
    from tensorflow_lite_support.metadata.python import metadata as md

    data = bytes(tflite_bytes)
    if TFLITE_METADATA not in tflite.check_model(data).metadata_names:
        return None
    displayer = md.MetadataDisplayer.with_model_buffer(data)
    meta = json.loads(displayer.get_metadata_json())
    sub = (meta.get("subgraph_metadata") or [{}])[0]
    inp = (sub.get("input_tensor_metadata") or [{}])[0]
    out = (sub.get("output_tensor_metadata") or [{}])[0]
    norm = {}
    for unit in inp.get("process_units", []):
        if unit.get("options_type") == "NormalizationOptions":
            norm = unit.get("options", {})
    files = displayer.get_packed_associated_file_list()
    labels = None
    if LABELS_FILE in files:
        text = displayer.get_associated_file_buffer(LABELS_FILE).decode("utf-8")
        labels = text.splitlines()
    return {
        "name": meta.get("name"), "description": meta.get("description"),
        "version": meta.get("version"), "author": meta.get("author"),
        "license": meta.get("license"), "mean": norm.get("mean"), "std": norm.get("std"),
        "labels": labels, "input_name": inp.get("name"), "output_name": out.get("name"),
        "associated_files": sorted(files),
    }
