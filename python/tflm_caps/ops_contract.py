"""The contract of the capsule custom operators, written once for Python.

Names of the CUSTOM op codes, the keys and version of their FlexBuffer
options, the fixed quantization of their outputs and the limits of the
kernels.  The converter, its int8 patches, the Python kernels, the runtime
and the export import these values; the C side carries the same values in
``tflm_caps_ops/tflm/caps_ops.h`` and ``include/tflm_caps/caps_nn_types.h``
(tests/test_ops_contract.py checks that both agree).  docs/custom_ops.md
and docs/quantization.md describe them.  No imports: any module may use it.
"""

OP_PREFIX = "TFLMCaps_"
SQUASH = "TFLMCaps_Squash"
CLASS_CAPS = "TFLMCaps_ClassCaps"
LENGTH = "TFLMCaps_Length"
# Efficient-CapsNet: its squash and the self-attention capsule layer.
EFFICIENT_SQUASH = "TFLMCaps_EfficientSquash"
SELF_ATTENTION_CAPS = "TFLMCaps_SelfAttentionCaps"
CUSTOM_OPS = (SQUASH, CLASS_CAPS, LENGTH, EFFICIENT_SQUASH, SELF_ATTENTION_CAPS)

# FlexBuffer custom options: a map with an int "version" plus the op's keys.
# OPTIONS_VERSION is written, MIN_OPTIONS_VERSION the oldest still read.
# Version 2 gave an int8 Squash its input 1, the gain table as a constant
# int32 tensor (version 1: the op fills the table in Prepare, in RAM).
OPTIONS_VERSION = 2
MIN_OPTIONS_VERSION = 1
SQUASH_TABLE_VERSION = 2
OPT_VERSION = "version"
OPT_NUM_ROUTING = "num_routing"
OPT_STORE_PREDICTIONS = "store_predictions"
OPT_U_HAT_SCALE = "u_hat_scale"
OPT_S_SCALES = "s_scales"
OPT_B_SCALES = "b_scales"
OPT_S_SCALE = "s_scale"
# op -> {key: kind}; kinds: "int", "float" (a scale), "floats" (a vector of scales).
OPTION_KEYS = {
    SQUASH: {OPT_VERSION: "int"},
    LENGTH: {OPT_VERSION: "int"},
    CLASS_CAPS: {
        OPT_VERSION: "int", OPT_NUM_ROUTING: "int", OPT_STORE_PREDICTIONS: "int",
        OPT_U_HAT_SCALE: "float", OPT_S_SCALES: "floats", OPT_B_SCALES: "floats",
    },
    EFFICIENT_SQUASH: {OPT_VERSION: "int"},
    SELF_ATTENTION_CAPS: {OPT_VERSION: "int", OPT_U_HAT_SCALE: "float", OPT_S_SCALE: "float"},
}
# Keys a float model (custom ops in float) leaves out: it has no int8 intermediates.
CALIBRATED_KEYS = (OPT_U_HAT_SCALE, OPT_S_SCALES, OPT_B_SCALES, OPT_S_SCALE)

# Fixed int8 output quantization (scale, zero point): squash writes unit-length
# capsules (ClassCaps ends with a squash), length writes [0, 1).
SQUASH_OUT_SCALE = 1.0 / 128.0
SQUASH_OUT_ZERO_POINT = 0
LENGTH_OUT_SCALE = 1.0 / 256.0
LENGTH_OUT_ZERO_POINT = -128
OUTPUT_QUANT = {
    SQUASH: (SQUASH_OUT_SCALE, SQUASH_OUT_ZERO_POINT),
    CLASS_CAPS: (SQUASH_OUT_SCALE, SQUASH_OUT_ZERO_POINT),
    LENGTH: (LENGTH_OUT_SCALE, LENGTH_OUT_ZERO_POINT),
    EFFICIENT_SQUASH: (SQUASH_OUT_SCALE, SQUASH_OUT_ZERO_POINT),
    SELF_ATTENTION_CAPS: (SQUASH_OUT_SCALE, SQUASH_OUT_ZERO_POINT),
}

# Squash gain table (input 1 of an int8 Squash): int32 words magic, capsule
# dim, input zero point, sq_multiplier, sq_exponent, entries, then the
# entries' Q24 gains (docs/custom_ops.md).
SQUASH_TABLE_MAGIC = 0x54515343
SQUASH_TABLE_HEADER_WORDS = 6

# The learned coupling bias of SelfAttentionCaps (added after the softmax) is
# a constant int32 tensor in the couplings' Q15 units: fixed scale 2^-15,
# zero point 0, |value| <= MAX_ATTENTION_BIAS (|b| <= 512).
ATTENTION_BIAS_SCALE = 1.0 / 32768.0
ATTENTION_BIAS_ZERO_POINT = 0
MAX_ATTENTION_BIAS = 1 << 24

# ClassCaps W: int8, or int4 packed two per byte (TFLite's INT4: element e of
# W is the low nibble of byte e / 2 when e is even, the high one when odd).
# An int4 W needs N_out*D_out*D_in to be a multiple of INT4_W_BLOCK_MULTIPLE,
# so that each input capsule's weights start on a byte.
CLASS_CAPS_WEIGHT_BITS = (8, 4)
INT4_W_BLOCK_MULTIPLE = 2

# Limits of the kernels (overflow bounds, docs/quantization.md).
MIN_ROUTINGS = 1
MAX_ROUTINGS = 8
MAX_CAPS_DIM = 16384   # squash/length capsule dim, ClassCaps D_out
MAX_DIM_IN = 16384     # ClassCaps D_in
MAX_N_IN = 1048576     # input capsules of a ClassCaps layer
MAX_N_OUT = 1024       # output capsules of a ClassCaps layer
MAX_ATTENTION_DIM_OUT = 128  # SelfAttentionCaps D_out: agreement sums fit int32
