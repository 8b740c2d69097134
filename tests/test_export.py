"""`tflm-caps export`: the C array round-trips to the model bytes, the header
numbers match the model and the measured arena, metadata stripping keeps a
runnable model, and the generated sources compile (host and Arm compilers;
main.cc against small stand-in TFLM headers, since no TFLM tree ships)."""
import json
import shutil
import subprocess

import flatbuffers
import numpy as np
import pytest
from flatbuffers import flexbuffers
from support.toolchains import require_tools

from support.c_sources import parse_c_array, read_header_defines
from support.model_builder import OpSpec, TensorSpec, build_model, encode_options
from tflm_caps import cli, tflite
from tflm_caps import export as ex


def export_test_model(metadata=None, custom=("TFLMCaps_Squash", "TFLMCaps_Length")):
    """RESHAPE [1, 32] -> [1, 4, 8], TFLMCaps_Squash, TFLMCaps_Length: int8,
    written with the test model builder (independent of the converter).
    metadata: bytes of a TFLITE_METADATA entry."""
    tensors = [TensorSpec("x", (1, 32), "int8", 0.05, 3),
               TensorSpec("x3", (1, 4, 8), "int8", 0.05, 3),
               TensorSpec("v", (1, 4, 8), "int8", 1 / 128, 0),
               TensorSpec("len", (1, 4), "int8", 1 / 256, -128),
               TensorSpec("shape", (3,), "int32", data=np.array([1, 4, 8]))]
    opts = encode_options({"version": 1})
    ops = [OpSpec("RESHAPE", [0, 4], [1]), OpSpec(custom[0], [1], [2], opts),
           OpSpec(custom[1], [2], [3], opts)]
    return build_model(tensors, ops, [0], [3], description="export test",
                       metadata=None if metadata is None else {"TFLITE_METADATA": metadata})


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("export_model") / "tiny_caps.tflite"
    p.write_bytes(export_test_model())
    return p


@pytest.fixture(scope="module")
def exported(model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_out")
    return ex.export_model(model_path, out), out


def test_c_array_round_trips_and_header_matches(exported, model_path):
    result, out = exported
    data = model_path.read_bytes()
    src = (out / "tiny_caps_model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_tiny_caps_model_data[]" in src
    assert parse_c_array(src) == data
    assert f"g_tiny_caps_model_data_len = {len(data)}u" in src
    defs = read_header_defines((out / "tiny_caps_model_data.h").read_text())
    assert defs["TINY_CAPS_MODEL_BYTES"] == len(data)
    assert defs["TINY_CAPS_INPUT_ELEMENTS"] == 32 and defs["TINY_CAPS_OUTPUT_ELEMENTS"] == 4
    assert defs["TINY_CAPS_INPUT_ZERO_POINT"] == 3
    assert defs["TINY_CAPS_OUTPUT_ZERO_POINT"] == -128
    assert defs["TINY_CAPS_INPUT_TYPE"] == "int8_t"
    arena = defs["TINY_CAPS_TENSOR_ARENA_SIZE"]
    measured = defs["TINY_CAPS_TENSOR_ARENA_MEASURED"]
    margin = defs["TINY_CAPS_TENSOR_ARENA_MARGIN"]
    saving = defs["TINY_CAPS_TENSOR_ARENA_32BIT_SAVING"]
    assert (measured, margin, arena, saving) == (result.arena_measured, result.arena_margin,
                                                 result.arena_size, result.arena_32bit_saving)
    assert margin == ex.arena_margin(measured) >= ex.ARENA_MARGIN_MIN
    assert margin <= max(256, 0.01 * measured) + 1  # the stated, small margin
    assert arena % 16 == 0 and measured - saving + margin <= arena < measured - saving + margin + 16


def test_arena_accounts_for_32bit_bookkeeping(exported, model_path):
    """The 64-bit host keeps TfLiteEvalTensor (24 vs 12 bytes), each node
    (64 vs 32), the subgraph record (16 vs 8) and each quantized graph
    input/output tensor (88 vs 44) larger; 8 bytes of alignment slack per
    allocation are kept."""
    from tflm_caps.runtime import check_model, target_arena_estimate
    result, _ = exported
    info = check_model(model_path.read_bytes())
    n_tensors, n_ops = len(info.tensors), len(info.operators)
    assert (n_tensors, n_ops) == (5, 3)  # x, shape, reshaped, squashed, length
    want = 12 * n_tensors + 32 * n_ops + 8 + 2 * 44 - 8 * (3 + 2 * 2)
    assert result.arena_32bit_saving == want
    est = target_arena_estimate(model_path.read_bytes(), result.arena_measured)
    assert est["estimate"] == result.arena_measured - want
    assert est["counts"] == {"eval_tensors": n_tensors, "nodes": n_ops, "subgraphs": 1,
                             "io_tensors": 2}


def test_arena_is_the_host_runtimes_minimum(exported, model_path):
    from tflm_caps.runtime import TFLMRunner, find_min_arena_size
    result, _ = exported
    assert result.arena_measured == find_min_arena_size(model_path.read_bytes())
    # the margin exceeds this small model's 32-bit saving: the exported size
    # also runs it in the 64-bit host interpreter
    assert result.arena_size >= result.arena_measured
    runner = TFLMRunner(model_path.read_bytes(), arena_size=result.arena_size)
    (out,) = runner.invoke(np.full((1, 32), 3, np.int8))  # zero point: zero vectors
    np.testing.assert_array_equal(np.asarray(out), np.full((1, 4), -128, np.int8))


def test_main_registers_exactly_the_models_ops(exported):
    _, out = exported
    main = (out / "main.cc").read_text()
    assert "resolver.AddReshape()" in main
    assert "tflm_caps::AddCapsOps(resolver)" in main
    assert "MicroMutableOpResolver<kOpSlots>" in main
    assert "kOpSlots = 1 + tflm_caps::kNumCapsOps" in main  # RESHAPE + the capsule ops
    assert "TINY_CAPS_TENSOR_ARENA_SIZE" in main and '#include "tiny_caps_model_data.h"' in main


def test_generated_sources_compile(exported, tmp_path):
    _, out = exported
    require_tools("g++", "gcc", "arm-none-eabi-g++", "arm-none-eabi-readelf")
    gxx = shutil.which("g++")
    obj = tmp_path / "data.o"
    proc = subprocess.run([gxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-c",
                           str(out / "tiny_caps_model_data.cc"), "-o", str(obj)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # the header is C as well
    c_src = tmp_path / "use.c"
    c_src.write_text('#include "tiny_caps_model_data.h"\n'
                     "unsigned int n(void) { return g_tiny_caps_model_data_len + "
                     "TINY_CAPS_TENSOR_ARENA_SIZE; }\n")
    proc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", f"-I{out}", "-c", str(c_src),
                           "-o", str(tmp_path / "use.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # cross compiler: the array lands 16-byte aligned in flash (.rodata)
    aobj = tmp_path / "data_arm.o"
    proc = subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m7", "-mthumb", "-std=c++11", "-Os",
                           "-c", str(out / "tiny_caps_model_data.cc"), "-o", str(aobj)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sections = subprocess.run(["arm-none-eabi-readelf", "-S", "-W", str(aobj)],
                              capture_output=True, text=True).stdout
    line = next(ln for ln in sections.splitlines() if ".rodata" in ln)
    assert int(line.split()[-1]) >= 16  # section alignment


# The parts of the TFLM API main.cc uses, declared with the shapes of
# TFLM's headers: a syntax and usage check of the generated program.
TFLM_STANDIN = {
    "tensorflow/lite/micro/micro_interpreter.h": """
#pragma once
#include <cstddef>
#include <cstdint>
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
struct TfLiteTensor { void* data; };
namespace tflite {
struct Model { uint32_t version() const; };
const Model* GetModel(const void* buf);
template <typename T> T* GetTensorData(TfLiteTensor* t) { return static_cast<T*>(t->data); }
template <typename T> const T* GetTensorData(const TfLiteTensor* t) {
  return static_cast<const T*>(t->data); }
class MicroOpResolver {};
class MicroInterpreter {
 public:
  MicroInterpreter(const Model*, const MicroOpResolver&, uint8_t*, size_t);
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor* input(size_t);
  TfLiteTensor* output(size_t);
  size_t arena_used_bytes() const;
};
}  // namespace tflite
""",
    "tensorflow/lite/micro/micro_log.h": "#pragma once\nvoid MicroPrintf(const char*, ...);\n",
    "tensorflow/lite/micro/micro_mutable_op_resolver.h": """
#pragma once
#include "tensorflow/lite/micro/micro_interpreter.h"
namespace tflite {
template <unsigned N> class MicroMutableOpResolver : public MicroOpResolver {
 public:
  TfLiteStatus AddReshape();
  TfLiteStatus AddConv2D();
  template <typename R> TfLiteStatus AddCustom(const char*, R*);
};
}  // namespace tflite
""",
    "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h": """
#pragma once
extern "C" {
typedef void (*DebugLogCallback)(const char* s);
void RegisterDebugLogCallback(DebugLogCallback callback);
}
""",
    "tensorflow/lite/schema/schema_generated.h": "#pragma once\n#define TFLITE_SCHEMA_VERSION (3)\n",
    "tflm/caps_ops.h": """
#pragma once
namespace tflm_caps {
constexpr int kNumCapsOps = 5;
template <typename R> TfLiteStatus AddCapsOps(R& resolver);
}
""",
}


def test_main_uses_the_tflm_api_consistently(exported, tmp_path):
    _, out = exported
    require_tools("g++")
    gxx = shutil.which("g++")
    for rel, text in TFLM_STANDIN.items():
        p = tmp_path / "inc" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    # with and without the debug-log callback cortex_m_generic needs (on by
    # default for Arm builds, where MicroPrintf is silent without it)
    for flag in ("-DTFLM_CAPS_LOG_CALLBACK=1", "-DTFLM_CAPS_LOG_CALLBACK=0"):
        proc = subprocess.run([gxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                               flag, f"-I{tmp_path / 'inc'}", f"-I{out}", str(out / "main.cc")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, flag + "\n" + proc.stderr
    main = (out / "main.cc").read_text()
    assert "RegisterDebugLogCallback(LogText)" in main
    assert "void LogText(const char* text)" in main and "UART" in main
    armgxx = shutil.which("arm-none-eabi-g++")
    if armgxx:  # the callback is registered by default on Arm
        proc = subprocess.run([armgxx, "-mcpu=cortex-m7", "-mthumb", "-std=c++17", "-E", "-P",
                               f"-I{tmp_path / 'inc'}", f"-I{out}", str(out / "main.cc")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "RegisterDebugLogCallback(LogText);" in proc.stdout


def test_strip_metadata_keeps_a_runnable_model(tmp_path):
    from tflm_caps.runtime import find_min_arena_size
    data = export_test_model(metadata=b"\x00" * 600 + b"tflite-support metadata stand-in")
    assert tflite.summarize(data).metadata == ["TFLITE_METADATA"]
    stripped = tflite.strip_metadata(data)
    assert len(stripped) < len(data) - 500
    s = tflite.summarize(stripped)
    assert s.metadata == [] and s.custom_ops == ["TFLMCaps_Length", "TFLMCaps_Squash"]
    assert s.inputs == tflite.summarize(data).inputs
    assert find_min_arena_size(stripped) > 0  # loads and runs in TFLM
    p = tmp_path / "meta.tflite"
    p.write_bytes(data)
    r = ex.export_model(p, tmp_path / "o", strip=True, arena_size=8000)
    assert r.stripped_bytes == len(stripped) and r.model_bytes == len(data)
    assert parse_c_array((tmp_path / "o" / "meta_model_data.cc").read_text()) == stripped
    assert r.arena_size == 8000 and r.arena_source == "user"


def test_cli_json_and_errors(model_path, tmp_path, capsys):
    rc = cli.main(["export", str(model_path), "--out", str(tmp_path / "c"), "--arena-size",
                   "20001", "--name", "net", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arena_size"] == 20016 and report["name"] == "net"
    assert (tmp_path / "c" / "net_model_data.h").exists()
    not_model = tmp_path / "x.tflite"
    not_model.write_bytes(b"hello world, not a flatbuffer")
    assert cli.main(["export", str(not_model), "--out", str(tmp_path / "d")]) == 2
    assert "not a .tflite model" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "missing.tflite"), "--out", str(tmp_path)]) == 2
    assert cli.main(["export", str(model_path), "--out", str(tmp_path / "c"),
                     "--arena-size", "20001", "--name", "net", "--no-overwrite"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_foreign_custom_ops_are_refused(tmp_path):
    data = export_test_model(custom=("SomeoneElses_Op", "TFLMCaps_Length"))
    with pytest.raises(ValueError, match="custom operators not provided by tflm-caps: "
                                         "SomeoneElses_Op"):
        ex.export_model(data, tmp_path, arena_size=1000)


def test_resolver_method_names():
    assert ex.resolver_method("CONV_2D") == "AddConv2D"
    assert ex.resolver_method("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D"
    assert ex.resolver_method("FULLY_CONNECTED") == "AddFullyConnected"
    assert ex.resolver_method("BATCH_MATMUL") == "AddBatchMatMul"
    assert ex.resolver_method("L2_NORMALIZATION") == "AddL2Normalization"
    assert ex.resolver_method("MAX_POOL_2D") == "AddMaxPool2D"
