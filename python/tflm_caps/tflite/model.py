"""Load and write ``.tflite`` files as mutable objects of the schema (``ModelT``).

``load`` checks the file identifier and unpacks the flatbuffer; ``dump``
packs it back with every buffer 16-byte aligned, as the TF converter writes
them.  The accessors name operators and tensors for messages and read
constant data.  The schema module is the tflite-micro wheel's: no TensorFlow.
"""
import functools
import struct

import numpy as np

from tflm_caps.tflite import tables
from tflm_caps.tflite.reader import ModelFormatError, check_identifier


def load(data, what="model"):
    """``ModelT`` of a .tflite (bytes); ModelFormatError if it is not one.

    Bytes after the flatbuffer (tflite-support's zip of associated files)
    are ignored.
    """
    data = bytes(data)
    check_identifier(data, what)
    try:
        return tables.schema().ModelT.InitFromPackedBuf(bytearray(data), 0)
    except (struct.error, IndexError, ValueError) as exc:
        raise ModelFormatError(f"{what}: malformed .tflite ({exc})") from None


@functools.lru_cache(maxsize=None)
def _aligned_buffer_class():
    schema = tables.schema()

    class AlignedBuffer(schema.BufferT):
        """BufferT whose data is packed 16-byte aligned.

        The generated ``Pack`` ignores the schema's ``force_align: 16`` and
        aligns weight data to 1 byte; kernels reading int32 biases or doing
        wide loads from the flatbuffer want the alignment the TF converter
        gives.
        """

        def Pack(self, builder):
            data = None
            if self.data is not None:
                payload = (bytes(self.data) if isinstance(self.data, (bytes, bytearray))
                           else np.asarray(self.data, np.uint8).tobytes())
                builder.StartVector(1, len(payload), tables.BUFFER_ALIGNMENT)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBuffer


def _aligned(buffer):
    out = _aligned_buffer_class()()
    out.data, out.offset, out.size = buffer.data, buffer.offset, buffer.size
    return out


def dump(model):
    """Serialized bytes of a ``ModelT`` (buffers 16-byte aligned)."""
    import flatbuffers

    original = model.buffers
    model.buffers = None if original is None else [_aligned(b) for b in original]
    try:
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=tables.FILE_IDENTIFIER)
        return bytes(builder.Output())
    finally:
        model.buffers = original


def decode_name(value):
    """A name field of the object API (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def opcode_of(model, op):
    """BuiltinOperator code of an operator (CUSTOM for custom ops)."""
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def op_name(model, op):
    """Builtin name ('CONV_2D') or the custom code ('TFLMCaps_Squash')."""
    builtin = opcode_of(model, op)
    if builtin == tables.BUILTIN_CUSTOM:
        return decode_name(model.operatorCodes[op.opcodeIndex].customCode)
    return tables.builtin_name(builtin)


def tensor_name(tensor):
    return decode_name(tensor.name)


def buffer_bytes(model, tensor):
    """The bytes of a tensor's buffer, or None when it has none."""
    buf = model.buffers[tensor.buffer]
    if buf.data is None:
        return None
    return np.asarray(buf.data, np.uint8).tobytes()


def constant_array(model, tensor, dtype):
    """Numpy copy of a constant tensor's data (None when it has no buffer)."""
    data = buffer_bytes(model, tensor)
    if data is None:
        return None
    return np.frombuffer(data, dtype).reshape([int(d) for d in tensor.shape]).copy()
