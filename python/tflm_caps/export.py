"""Export an int8 ``.tflite`` for a TFLM firmware build.

Writes three files into the output directory:

- ``<name>_model_data.cc``: the flatbuffer as an ``alignas(16)`` C array
  (TFLM reads tensors in place, so the array must stay aligned);
- ``<name>_model_data.h``: its declaration plus the numbers a firmware needs
  (tensor arena size, input/output shapes and quantization);
- ``main.cc``: a minimal program that registers exactly the builtin ops the
  model uses plus ``tflm_caps::AddCapsOps``, runs one inference and prints
  the class.

The arena size is the host TFLM interpreter's exact minimum
(``tflm_caps.runtime.find_min_arena_size``) less the bookkeeping a 32-bit
MCU keeps smaller (``tflm_caps.runtime.target_arena_estimate``), plus a
small margin (:func:`arena_margin`).  The model is read with
``tflm_caps.tflite`` (no TensorFlow).
"""
import dataclasses
import json
import os
import re
from pathlib import Path

from tflm_caps import tflite
from tflm_caps.ops_contract import OP_PREFIX

ARENA_ALIGN = 16
# Margin on top of the 32-bit estimate of the arena: a firmware's TFLM may
# differ from the host wheel's (version, allocator objects, kernels' own
# scratch buffers).  Checked on emulated Cortex-M7 and M55 against the
# on-target minimum (docs/firmware.md).
ARENA_MARGIN_MIN = 256
ARENA_MARGIN_FRACTION = 0.01

# MicroMutableOpResolver method of each builtin where the CamelCase of the
# schema name differs from the method name.
_RESOLVER_EXCEPTIONS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "PADV2": "AddPadV2",
    "CUMSUM": "AddCumSum",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "DETECTION_POSTPROCESS": "AddDetectionPostprocess",
}
# Methods TFLM's MicroMutableOpResolver offers for builtins (2026 tree).
_RESOLVER_METHODS = frozenset("""
AddAbs AddAdd AddAddN AddArgMax AddArgMin AddAssignVariable AddAveragePool2D
AddBatchMatMul AddBatchToSpaceNd AddBroadcastArgs AddBroadcastTo AddCallOnce
AddCast AddCeil AddConcatenation AddConv2D AddCos AddCumSum AddDepthToSpace
AddDepthwiseConv2D AddDequantize AddDiv AddDynamicUpdateSlice AddElu
AddEmbeddingLookup AddEqual AddExp AddExpandDims AddFill AddFloor AddFloorDiv
AddFloorMod AddFullyConnected AddGather AddGatherNd AddGreater AddGreaterEqual
AddHardSwish AddIf AddL2Normalization AddL2Pool2D AddLeakyRelu AddLess
AddLessEqual AddLog AddLogSoftmax AddLogicalAnd AddLogicalNot AddLogicalOr
AddLogistic AddMaxPool2D AddMaximum AddMean AddMinimum AddMirrorPad AddMul
AddNeg AddNotEqual AddPack AddPad AddPadV2 AddPrelu AddQuantize
AddReadVariable AddReduceAll AddReduceMax AddReduceMin AddRelu AddRelu6 AddReshape
AddResizeBilinear AddResizeNearestNeighbor AddReverseV2 AddRound AddRsqrt
AddSelectV2 AddShape AddSin AddSlice AddSoftmax AddSpaceToBatchNd
AddSpaceToDepth AddSplit AddSplitV AddSqrt AddSquare AddSquaredDifference
AddSqueeze AddStridedSlice AddSub AddSum AddSvdf AddTanh AddTranspose
AddTransposeConv AddUnidirectionalSequenceLSTM AddUnpack AddVarHandle AddWhile
AddZerosLike
""".split())

_C_TYPES = {"float32": "float", "int32": "int32_t", "uint8": "uint8_t", "int16": "int16_t",
            "int8": "int8_t"}


@dataclasses.dataclass
class ExportResult:
    name: str
    out_dir: str
    files: dict            # role -> path
    model_bytes: int
    stripped_bytes: int
    arena_measured: int    # host-measured minimum (also when the size is given)
    arena_margin: int
    arena_size: int
    arena_source: str      # "measured" or "user"
    summary: tflite.ModelSummary
    arena_32bit_saving: int = 0  # host bookkeeping a 32-bit MCU does not need

    def to_json(self):
        d = dataclasses.asdict(self)
        d["summary"] = self.summary.to_dict()
        return json.loads(json.dumps(d, default=str))


def resolver_method(builtin_name):
    """MicroMutableOpResolver method registering `builtin_name` (schema
    spelling, e.g. CONV_2D -> AddConv2D)."""
    if builtin_name in _RESOLVER_EXCEPTIONS:
        return _RESOLVER_EXCEPTIONS[builtin_name]
    return "Add" + "".join(part if re.fullmatch(r"\d+D", part) else part[:1] + part[1:].lower()
                           for part in builtin_name.split("_"))


def arena_margin(measured):
    """Bytes added to the 32-bit arena estimate (documented in docs/firmware.md)."""
    return max(ARENA_MARGIN_MIN, int(measured * ARENA_MARGIN_FRACTION))


def round_up(n, align=ARENA_ALIGN):
    return (int(n) + align - 1) // align * align


def measure_arena(data, what=None):
    """(host minimum, bytes of it a 32-bit MCU does not need) for this
    model; a failure names the model as ``what`` (e.g. its path)."""
    from tflm_caps.runtime import (ModelFormatError, TFLMError, find_min_arena_size,
                                   target_arena_estimate)
    try:
        host = int(find_min_arena_size(bytes(data)))
    except (ModelFormatError, TFLMError) as exc:
        if what is None:
            raise
        raise type(exc)(f"{what}: {exc}") from None
    return host, int(target_arena_estimate(bytes(data), host)["bookkeeping_saving"])


def c_identifier(name):
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    if not ident or ident[0].isdigit():
        ident = "m_" + ident
    return ident


def c_array_body(data, per_line=16):
    lines = []
    for start in range(0, len(data), per_line):
        chunk = data[start:start + per_line]
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    return "\n".join(lines)


def _header_text(ident, guard, summary, arena, measured, margin, source, model_len, saving=0):
    inp, out = summary.inputs[0], summary.outputs[0]
    up = ident.upper()
    dims = lambda t: ", ".join(str(d) for d in t.shape) or "1"
    note = (f"{measured} bytes measured with the (64-bit) host TFLM interpreter - {saving} "
            f"bytes of bookkeeping a 32-bit MCU keeps smaller + {margin} bytes margin, "
            "rounded up to 16.  `tflm-caps profile` measures the exact need on a core"
            if source == "measured" else "given on the command line")
    return f"""/* Generated by `tflm-caps export`: the model as a C array plus the numbers
 * a firmware needs to run it.  Arena: {note}. */
#ifndef {guard}
#define {guard}

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

extern const unsigned char g_{ident}_model_data[];
extern const unsigned int g_{ident}_model_data_len;

#ifdef __cplusplus
}}
#endif

#define {up}_MODEL_BYTES {model_len}u
#define {up}_TENSOR_ARENA_SIZE {arena}u
#define {up}_TENSOR_ARENA_MEASURED {measured}u
#define {up}_TENSOR_ARENA_32BIT_SAVING {saving}u
#define {up}_TENSOR_ARENA_MARGIN {margin}u

/* Input 0: {inp.name} */
#define {up}_INPUT_TYPE {_C_TYPES.get(inp.dtype, 'int8_t')}
#define {up}_INPUT_ELEMENTS {inp.elements}u
#define {up}_INPUT_SCALE {inp.scale!r}f
#define {up}_INPUT_ZERO_POINT ({inp.zero_point})
/* Input shape: {{{dims(inp)}}} */

/* Output 0: {out.name} */
#define {up}_OUTPUT_TYPE {_C_TYPES.get(out.dtype, 'int8_t')}
#define {up}_OUTPUT_ELEMENTS {out.elements}u
#define {up}_OUTPUT_SCALE {out.scale!r}f
#define {up}_OUTPUT_ZERO_POINT ({out.zero_point})
/* Output shape: {{{dims(out)}}} */
#define {up}_NUM_BUILTIN_OPS {len(summary.builtin_ops)}u

#endif /* {guard} */
"""


def _data_text(ident, header_name, data):
    return f"""/* Generated by `tflm-caps export`: {len(data)} bytes of TFLite flatbuffer.
 * TFLM reads weights in place: keep the array 16-byte aligned and const
 * (it stays in flash). */
#include "{header_name}"

alignas(16) const unsigned char g_{ident}_model_data[] = {{
{c_array_body(data)}
}};
const unsigned int g_{ident}_model_data_len = {len(data)}u;
"""


def _main_text(ident, header_name, summary):
    up = ident.upper()
    methods = []
    for op in summary.builtin_ops:
        method = resolver_method(op)
        if method in _RESOLVER_METHODS:
            methods.append(f"  if (resolver.{method}() != kTfLiteOk) return Fail(\"{op}\");")
        else:
            methods.append(f"  /* {op}: no MicroMutableOpResolver method known, register it "
                           f"yourself */")
    slots = len(summary.builtin_ops)
    reg = "\n".join(methods) or "  /* no builtin operators */"
    out_t = _C_TYPES.get(summary.outputs[0].dtype, "int8_t")
    in_t = _C_TYPES.get(summary.inputs[0].dtype, "int8_t")
    return f"""/* Generated by `tflm-caps export`: minimal TFLM firmware main.
 * Registers the builtins the model uses and the tflm-caps operators, runs
 * one inference on an input at the zero point (replace FillInput with your
 * sensor data) and prints the highest-scoring class through MicroPrintf
 * (see LogText for where its text goes).  Build it with the
 * TFLM library, tflm_caps_ops (see docs/firmware.md) and
 * {header_name[:-2]}.cc. */
#include <stdint.h>

#include "{header_name}"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tflm/caps_ops.h"

/* TFLM's cortex_m_generic target prints MicroPrintf's text only through a
 * callback the application registers; without one the program is silent.
 * On by default for Arm builds; build with -DTFLM_CAPS_LOG_CALLBACK=0 for a
 * TFLM target whose DebugLog prints by itself (it then has no
 * RegisterDebugLogCallback to link against). */
#ifndef TFLM_CAPS_LOG_CALLBACK
#if defined(__arm__) || defined(__ARM_ARCH)
#define TFLM_CAPS_LOG_CALLBACK 1
#else
#define TFLM_CAPS_LOG_CALLBACK 0
#endif
#endif
#if TFLM_CAPS_LOG_CALLBACK
#include <stdio.h>

#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#endif

namespace {{

constexpr int kOpSlots = {slots} + tflm_caps::kNumCapsOps;  // builtins + tflm-caps operators
alignas(16) uint8_t tensor_arena[{up}_TENSOR_ARENA_SIZE];

#if TFLM_CAPS_LOG_CALLBACK
// Where MicroPrintf's text goes.  Route it to your board's UART here, e.g.
//   HAL_UART_Transmit(&huart2, (const uint8_t*)text, strlen(text), 100);
// stdout reaches the host with semihosting or a newlib retargeted to a UART.
void LogText(const char* text) {{ fputs(text, stdout); }}
#endif

int Fail(const char* what) {{
  MicroPrintf("tflm-caps demo: %s failed", what);
  return 1;
}}

void FillInput(TfLiteTensor* input) {{
  {in_t}* data = tflite::GetTensorData<{in_t}>(input);
  for (unsigned int i = 0; i < {up}_INPUT_ELEMENTS; ++i) {{
    data[i] = static_cast<{in_t}>({up}_INPUT_ZERO_POINT);
  }}
}}

}}  // namespace

int main() {{
#if TFLM_CAPS_LOG_CALLBACK
  RegisterDebugLogCallback(LogText);
#endif
  const tflite::Model* model = tflite::GetModel(g_{ident}_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) return Fail("schema version check");

  static tflite::MicroMutableOpResolver<kOpSlots> resolver;
{reg}
  if (tflm_caps::AddCapsOps(resolver) != kTfLiteOk) return Fail("AddCapsOps");

  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena,
                                              {up}_TENSOR_ARENA_SIZE);
  if (interpreter.AllocateTensors() != kTfLiteOk) return Fail("AllocateTensors");
  MicroPrintf("arena used: %u of %u bytes",
              static_cast<unsigned>(interpreter.arena_used_bytes()),
              static_cast<unsigned>({up}_TENSOR_ARENA_SIZE));

  FillInput(interpreter.input(0));
  if (interpreter.Invoke() != kTfLiteOk) return Fail("Invoke");

  const {out_t}* scores = tflite::GetTensorData<{out_t}>(interpreter.output(0));
  unsigned int best = 0;
  for (unsigned int i = 1; i < {up}_OUTPUT_ELEMENTS; ++i) {{
    if (scores[i] > scores[best]) best = i;
  }}
  MicroPrintf("class %u (score %d)", best, static_cast<int>(scores[best]));
  return 0;
}}
"""


def export_model(model, out_dir, name=None, strip=False, arena_size=None, overwrite=True,
                 allow_small_arena=False):
    """Export `model` (path or bytes) into `out_dir`; returns ExportResult.

    arena_size: use this many bytes instead of the measured size plus margin
    (no margin is added to a given size).  A size below the host-measured
    minimum is refused (ArenaTooSmallError) unless allow_small_arena."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        data = path.read_bytes()
        default_name = path.stem
        what = str(path)
    else:
        data = bytes(model)
        default_name = "model"
        what = "model"
    original_len = len(data)
    summary = tflite.summarize(data, what)
    unknown = [c for c in summary.custom_ops if not c.startswith(OP_PREFIX)]
    if unknown:
        raise ValueError(f"{what}: custom operators not provided by tflm-caps: {', '.join(unknown)}")
    if strip:
        data = tflite.strip_metadata(data)
        summary = tflite.summarize(data, what)

    if arena_size is not None and int(arena_size) <= 0:
        raise ValueError(f"arena size must be positive, got {arena_size}")
    measured, saving = measure_arena(data, what)
    if arena_size is not None:
        margin, arena, source = 0, round_up(arena_size), "user"
        if arena < measured - saving and not allow_small_arena:
            from tflm_caps.runtime import ArenaTooSmallError
            raise ArenaTooSmallError(
                f"{what}: arena size {arena} bytes (--arena-size) is below the "
                f"{measured - saving} bytes the model needs on a 32-bit MCU (host TFLM "
                f"minimum {measured} less {saving} bytes of 64-bit bookkeeping); the "
                "firmware would fail in AllocateTensors. Leave it out to use the measured "
                "size plus a margin, or pass --allow-small-arena (allow_small_arena=True) "
                "to write it anyway", arena)
    else:
        margin = arena_margin(measured)
        arena, source = round_up(measured - saving + margin), "measured"

    ident = c_identifier(name or default_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = f"{ident}_model_data.h"
    files = {"header": out / header, "data": out / f"{ident}_model_data.cc", "main": out / "main.cc"}
    if not overwrite:
        existing = [str(p) for p in files.values() if p.exists()]
        if existing:
            raise ValueError(f"refusing to overwrite {', '.join(existing)}")
    guard = f"{ident.upper()}_MODEL_DATA_H_"
    files["header"].write_text(_header_text(ident, guard, summary, arena, measured, margin,
                                            source, len(data), saving))
    files["data"].write_text(_data_text(ident, header, data))
    files["main"].write_text(_main_text(ident, header, summary))
    return ExportResult(ident, str(out), {k: str(v) for k, v in files.items()}, original_len,
                        len(data), measured, margin, arena, source, summary, saving)


__all__ = ["export_model", "arena_margin", "measure_arena", "resolver_method", "ExportResult"]
