"""Drop bytes of an int8 model that no int8 kernel reads.

TF's quantizer gives every int32 bias of CONV_2D / DEPTHWISE_CONV_2D /
FULLY_CONNECTED per-channel quantization arrays (a float scale and an int64
zero point per output channel, 12 bytes a channel). For int8 activations
TFLite and TFLM derive the requantization from the input, filter and output
scales only; the bias scale is consulted only on the legacy uint8 path. So
the arrays are dead weight on a microcontroller's flash. Outputs are
unchanged (checked bit for bit against TFLM and tf.lite in the tests).
"""
from tflm_caps.tflite import tables
from tflm_caps.tflite.model import op_name

_BIAS_OPS = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2}


def strip_bias_quantization(model):
    """Remove quantization arrays from the int32 biases of int8 conv/FC ops.

    Biases shared with an op that is not int8 are left alone."""
    sg = model.subgraphs[0]
    for op in sg.operators:
        slot = _BIAS_OPS.get(op_name(model, op))
        if slot is None or len(op.inputs) <= slot or int(op.inputs[slot]) < 0:
            continue
        inp = sg.tensors[int(op.inputs[0])]
        bias = sg.tensors[int(op.inputs[slot])]
        if inp.type == tables.INT8 and bias.type == tables.INT32:
            bias.quantization = None
    return model
