"""`tflm-caps profile`: every part that does not need a real TFLM tree.

No TFLM tree ships with the repository, so the pieces are tested on their
own: argument checks and the missing-download messages (a stand-in tree),
cache keys and the synchronised operator copy, the library build and its
reuse (a stand-in of TFLM's make flow that compiles the real kernels into
the cache), the generated firmware (its TFLM part compiled against stand-in
TFLM headers; its C part and linker insert built with the harness and run
on every emulated board, where the SysTick calibration is measured), the
parsing of the emulator's output, the on-target arena search, the flash
accounting of a linker map, the inputs and the host reference.  A real
tree is exercised by hand (docs/firmware.md lists the command and results).
"""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support.toolchains import require_tools

from tflm_caps import cli
from tflm_caps.profiling import api, build, cache, emulator, firmware, flash, report, sources
from tflm_caps.profiling import targets, tree
from support.model_builder import OpSpec, TensorSpec, build_model, encode_options

REPO = Path(__file__).resolve().parents[1]
OPS = REPO / "tflm_caps_ops"
HARNESS = sources.harness_dir(REPO)
BOARDS = sources.harness_boards(REPO).TARGETS


def pipeline_model():
    """RESHAPE [1,28,28,1] -> [1,196,4], TFLMCaps_Squash, TFLMCaps_Length: an
    int8 model that takes MNIST images (written with the schema only)."""
    x = TensorSpec("image", (1, 28, 28, 1), "int8", scale=1 / 255, zero_point=-128)
    shape = TensorSpec("shape", (3,), "int32", data=np.array([1, 196, 4]))
    caps = TensorSpec("caps", (1, 196, 4), "int8", scale=1 / 255, zero_point=-128)
    v = TensorSpec("v", (1, 196, 4), "int8", scale=1 / 128, zero_point=0)
    length = TensorSpec("length", (1, 196), "int8", scale=1 / 256, zero_point=-128)
    opts = encode_options({"version": 1})
    ops = [OpSpec("RESHAPE", [0, 1], [2]), OpSpec("TFLMCaps_Squash", [2], [3], opts),
           OpSpec("TFLMCaps_Length", [3], [4], opts)]
    return build_model([x, shape, caps, v, length], ops, [0], [4])


def standin_tree(root, missing=()):
    """A directory shaped like a tflite-micro checkout with its downloads."""
    (root / tree.MAKEFILE).parent.mkdir(parents=True, exist_ok=True)
    (root / tree.MAKEFILE).write_text(STANDIN_MAKEFILE)
    for rel, _ in tree.required_paths("cortex-m55") + tree.required_paths("cortex-m7"):
        if any(rel.startswith(f"{tree.DOWNLOADS}/{m}") for m in missing):
            continue
        path = root / rel
        if rel.endswith("pigweed"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("/* stand-in */\n")
    return root


def need(*tools):
    require_tools(*tools)  # a skip, or a failure under TFLM_CAPS_REQUIRE_TOOLCHAINS=1


# --------------------------------------------------------------------------
# Arguments and the tree check
# --------------------------------------------------------------------------

@pytest.fixture
def model_path(tmp_path):
    p = tmp_path / "pipeline.tflite"
    p.write_bytes(pipeline_model())
    return p


def run_cli(argv, capsys):
    rc = cli.main(["profile", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_cli_refuses_bad_arguments_before_any_work(model_path, tmp_path, capsys):
    root = str(tmp_path / "nowhere")
    rc, _, err = run_cli([str(model_path), "--tflm-root", root, "--images", "0"], capsys)
    assert rc == 2 and "--images" in err and "positive integer" in err
    rc, _, err = run_cli([str(tmp_path / "missing.tflite"), "--tflm-root", root], capsys)
    assert rc == 2 and "missing.tflite" in err
    rc, _, err = run_cli([str(model_path), "--tflm-root", root, "--report",
                          str(tmp_path / "no" / "r.json")], capsys)
    assert rc == 2 and "--report" in err and str(tmp_path / "no") in err
    rc, _, err = run_cli([str(model_path), "--tflm-root", root, "--make-var", "X"], capsys)
    assert rc == 2 and "NAME=VALUE" in err
    rc, _, err = run_cli([str(model_path), "--tflm-root", root, "-j", "0"], capsys)
    assert rc == 2 and "--jobs" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["profile", str(model_path), "--tflm-root", root, "--target", "cortex-m0"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_names_a_missing_tree(model_path, tmp_path, capsys):
    rc, _, err = run_cli([str(model_path), "--tflm-root", str(tmp_path / "nowhere")], capsys)
    assert rc == 2 and "TFLM tree not found" in err and "nowhere" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli([str(model_path), "--tflm-root", str(tmp_path / "empty")], capsys)
    assert rc == 2 and "not a tflite-micro checkout" in err and tree.MAKEFILE in err


@pytest.mark.parametrize("missing,script", [
    ("flatbuffers", "flatbuffers_download.sh"),
    ("kissfft", "kissfft_download.sh"),
    ("cmsis_nn", "ext_libs/cmsis_nn_download.sh"),
    ("cmsis/Cortex_DFP", "ext_libs/cmsis_download.sh"),
    ("gemmlowp", "third_party_downloads"),
    ("pigweed", "pigweed_download.sh"),
])
def test_missing_download_names_path_and_script(tmp_path, missing, script, model_path, capsys):
    root = standin_tree(tmp_path / "tflm", missing=[missing])
    with pytest.raises(tree.TreeError) as exc:
        tree.check_tree(root, "cortex-m55")
    text = str(exc.value)
    assert f"{root}/{tree.DOWNLOADS}/{missing}" in text and script in text
    assert "never downloads" in text
    # and through the command line, as one clear line per missing path
    rc, _, err = run_cli([str(model_path), "--tflm-root", str(root), "--target", "cortex-m55"],
                         capsys)
    assert rc == 2 and f"{tree.DOWNLOADS}/{missing}" in err and script in err


def test_device_header_is_checked_per_core(tmp_path):
    root = standin_tree(tmp_path / "tflm")
    (root / tree.DOWNLOADS / "cmsis/Cortex_DFP/Device/ARMCM55/Include/ARMCM55.h").unlink()
    tree.check_tree(root, "cortex-m7")  # the M7 header is there
    with pytest.raises(tree.TreeError, match="ARMCM55.h"):
        tree.check_tree(root, "cortex-m55")


def test_tree_identity_follows_commit_and_local_changes(tmp_path):
    need("git")
    root = standin_tree(tmp_path / "tflm")
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", tree.MAKEFILE], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    clean = tree.check_tree(root, "cortex-m7")
    assert clean.commit == head and clean.state == "" and clean.identity == head
    (root / tree.MAKEFILE).write_text(STANDIN_MAKEFILE + "# local edit\n")
    dirty = tree.identify(root)
    assert dirty.commit == head and dirty.state and dirty.identity != clean.identity
    # untracked downloads do not change the identity
    (root / tree.DOWNLOADS / "extra.txt").write_text("x")
    assert tree.identify(root) == dirty


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------

def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "tflm-caps"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "tflm-caps"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "env"))
    assert cache.cache_root() == tmp_path / "env"
    assert cache.cache_root(tmp_path / "flag") == tmp_path / "flag"


def test_cache_key_separates_tree_target_flags_and_compiler():
    t1 = tree.TreeInfo(Path("/t"), "a" * 40, "")
    t2 = tree.TreeInfo(Path("/t"), "a" * 40, "0123456789ab")
    t3 = tree.TreeInfo(Path("/elsewhere"), "a" * 40, "")
    m7, m55 = targets.TARGETS["cortex-m7"], targets.TARGETS["cortex-m55"]
    name = cache.entry_name(t1, m7, [], "12.2.1")
    assert name.startswith("cortex-m7-aaaaaaaaaa-")
    assert cache.entry_name(t1, m7, [], "12.2.1") == name          # deterministic
    assert cache.entry_name(t3, m7, [], "12.2.1") == name          # same commit, same build
    others = {cache.entry_name(t2, m7, [], "12.2.1"), cache.entry_name(t1, m55, [], "12.2.1"),
              cache.entry_name(t1, m7, ["CAPS_NN_USE_CMSIS_NN=1"], "12.2.1"),
              cache.entry_name(t1, m7, [], "13.3.1")}
    assert len(others) == 4 and name not in others
    assert cache.entry_name(t1, m7, ["A=1", "B=2"], "x") == cache.entry_name(t1, m7, ["B=2", "A=1"],
                                                                            "x")


def test_sync_tree_rewrites_only_changed_files(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "a.c").write_text("int a;\n")
    (src / "sub" / "b.h").write_text("#define B 1\n")
    assert cache.sync_tree(src, dst)
    digest = cache.tree_digest(dst)
    assert digest == cache.tree_digest(src)
    old = time.time() - 1000
    os.utime(dst / "a.c", (old, old))
    assert not cache.sync_tree(src, dst)
    assert (dst / "a.c").stat().st_mtime == pytest.approx(old)  # untouched
    (src / "sub" / "b.h").write_text("#define B 2\n")
    (src / "a.c").unlink()
    assert cache.sync_tree(src, dst)
    assert not (dst / "a.c").exists() and (dst / "sub" / "b.h").read_text() == "#define B 2\n"
    assert cache.tree_digest(dst) != digest


# --------------------------------------------------------------------------
# Library build through (a stand-in of) TFLM's make
# --------------------------------------------------------------------------

# The parts of TFLM's Makefile the build driver relies on: the command-line
# variables it passes (TARGET_ARCH, TARGET_TOOLCHAIN_ROOT, EXTERNAL_DIR,
# GENDIR), Makefile_internal.inc found below EXTERNAL_DIR, the microlite
# goal producing $(MICROLITE_LIB_PATH) and the print-% goal.  Only the C
# kernels are compiled (the operator glue needs TFLM's headers).
STANDIN_MAKEFILE = r"""
recursive_find = $(wildcard $(1)$(2)) $(foreach dir,$(wildcard $(1)*),$(call recursive_find,$(dir)/,$(2)))
TARGET ?= linux
TARGET_ARCH ?= cortex-m7+fp
GENDIR := gen/$(TARGET)_$(TARGET_ARCH)/
CC := $(TARGET_TOOLCHAIN_ROOT)arm-none-eabi-gcc
AR := $(TARGET_TOOLCHAIN_ROOT)arm-none-eabi-ar
CCFLAGS := -mcpu=$(patsubst %+fp,%,$(TARGET_ARCH)) -mthumb -mfloat-abi=hard -DTF_LITE_STATIC_MEMORY
CXXFLAGS := $(CCFLAGS) -std=c++17 -fno-threadsafe-statics
INCLUDES := -I. -Itensorflow/lite/micro/tools/make/downloads/flatbuffers/include
LDFLAGS :=
MICROLITE_LIBS := -lm
THIRD_PARTY_KERNEL_CC_SRCS :=
MICROLITE_CC_KERNEL_SRCS :=
include $(call recursive_find,$(EXTERNAL_DIR)/,Makefile_internal.inc)
MICROLITE_LIB_PATH := $(GENDIR)lib/libtensorflow-microlite.a
OBJS := $(addprefix $(GENDIR)obj/third_party_kernels/,$(patsubst %.c,%.o,$(THIRD_PARTY_KERNEL_CC_SRCS)))
$(GENDIR)obj/third_party_kernels/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CCFLAGS) -O2 $(INCLUDES) -c $< -o $@
microlite: $(MICROLITE_LIB_PATH)
$(MICROLITE_LIB_PATH): $(OBJS)
	@mkdir -p $(dir $@)
	$(AR) -r $@ $^
print-%:
	@echo '$*=$($*)'
	@echo '  origin = $(origin $*)'
"""


def test_parse_printed_and_absolute_includes():
    values = build.parse_printed("CXXFLAGS=-O2 -DX=\\\"a.h\\\"\n  origin = file\n"
                                 "INCLUDES=-I. -Ia/b -I/abs\n  flavor = simple\n")
    assert values == {"CXXFLAGS": '-O2 -DX=\\"a.h\\"', "INCLUDES": "-I. -Ia/b -I/abs"}
    assert build.absolute_includes(["-I.", "-Ia/b", "-I/abs", "-DX"], "/root") == \
        ["-I/root", "-I/root/a/b", "-I/abs", "-DX"]


def test_make_command_passes_what_tflm_needs(tmp_path):
    need("arm-none-eabi-gcc")
    info = tree.TreeInfo(tmp_path, "c" * 40, "")
    cmd = build.make_command(info, targets.TARGETS["cortex-m55"], tmp_path / "e",
                             ["CAPS_NN_USE_CMSIS_NN=1"], jobs=3)
    assert cmd[:3] == ["make", "-f", tree.MAKEFILE]
    assert "TARGET=cortex_m_generic" in cmd and "TARGET_ARCH=cortex-m55" in cmd
    assert "OPTIMIZED_KERNEL_DIR=cmsis_nn" in cmd and "CAPS_NN_USE_CMSIS_NN=1" in cmd
    root = next(c for c in cmd if c.startswith("TARGET_TOOLCHAIN_ROOT="))
    assert root.endswith("/") and Path(root.split("=", 1)[1], "arm-none-eabi-gcc").exists()
    assert f"EXTERNAL_DIR={tmp_path / 'e' / 'ext'}" in cmd
    assert f"GENDIR={tmp_path / 'e' / 'gen'}/" in cmd and cmd[-2:] == ["-j3", "microlite"]


def _members(library):
    out = subprocess.run(["arm-none-eabi-ar", "t", str(library)], capture_output=True,
                         text=True, check=True).stdout
    return sorted(out.split())


def test_library_build_is_cached_and_follows_operator_changes(tmp_path):
    need("make", "arm-none-eabi-gcc", "arm-none-eabi-ar")
    root = standin_tree(tmp_path / "tflm")
    info = tree.check_tree(root, "cortex-m7")
    ops = tmp_path / "ops"
    shutil.copytree(OPS, ops)
    target = targets.TARGETS["cortex-m7"]
    cache_dir = tmp_path / "cache"

    first = build.build_library(info, target, ops, cache_dir=cache_dir)
    assert first.compiled and first.library.is_file()
    assert first.directory.parent == cache_dir / "tflm"
    from tflm_caps.baremetal.build import kernel_sources
    want = sorted(p.stem + ".o" for p in kernel_sources("cortex_m"))
    assert _members(first.library) == want  # the cortex_m backend, as OPTIMIZED_KERNEL_DIR says
    assert "-mcpu=cortex-m7" in first.cpu_flags and "-mfloat-abi=hard" in first.cpu_flags
    assert f"-I{root.resolve()}" in first.includes
    assert any(i.endswith("ext/tflm_caps_ops/include") for i in first.includes)
    assert "caps_squash_op.cc" in first.ops_sources and "caps_squash_s8.c" in first.ops_sources
    stamp = json.loads((first.directory / "build.json").read_text())
    assert stamp["key"]["tree"] == info.identity and stamp["key"]["target_arch"] == "cortex-m7+fp"

    objects = {p: p.stat().st_mtime_ns for p in (first.directory / "gen").rglob("*.o")}
    again = build.build_library(info, target, ops, cache_dir=cache_dir)
    assert not again.compiled and again.library == first.library
    assert again.seconds < 5
    assert {p: p.stat().st_mtime_ns for p in objects} == objects

    # a header of the operators changed: every operator object is rebuilt
    header = ops / "include" / "tflm_caps" / "caps_nn_types.h"
    header.write_text(header.read_text() + "\n/* changed */\n")
    changed = build.build_library(info, target, ops, cache_dir=cache_dir)
    assert changed.compiled and changed.directory == first.directory
    assert all(p.stat().st_mtime_ns != t for p, t in objects.items() if p.exists())
    assert _members(changed.library) == want
    # another target is another entry
    m55 = build.build_library(tree.check_tree(root, "cortex-m55"), targets.TARGETS["cortex-m55"],
                              ops, cache_dir=cache_dir)
    assert m55.directory != first.directory and "-mcpu=cortex-m55" in m55.cpu_flags


def test_make_failure_reports_the_log(tmp_path):
    need("make", "arm-none-eabi-gcc")
    root = standin_tree(tmp_path / "tflm")
    info = tree.check_tree(root, "cortex-m7")
    with pytest.raises(build.BuildError) as exc:
        build.build_library(info, targets.TARGETS["cortex-m7"], OPS, cache_dir=tmp_path / "c",
                            make_vars=["CAPS_NN_BACKEND=avx"])
    assert "CAPS_NN_BACKEND must be portable, cortex_m, helium or riscv" in str(exc.value)
    assert "build.log" in str(exc.value)


# --------------------------------------------------------------------------
# Generated firmware
# --------------------------------------------------------------------------

def test_main_registers_the_models_builtins_and_the_caps_ops(tmp_path):
    text = firmware.main_source("mnist", "mnist_model_data.h", ["CONV_2D", "RESHAPE"], 123456)
    assert "g_resolver.AddConv2D()" in text and "g_resolver.AddReshape()" in text
    assert "tflm_caps::AddCapsOps(g_resolver)" in text
    assert f"kOpSlots = {2 + firmware.CAPS_OP_SLOTS}" in text
    assert "kArenaCapacity = 123456u" in text and "g_mnist_model_data" in text
    assert "RegisterDebugLogCallback(LogToStdout)" in text
    assert 'section(".arena")' in text
    with pytest.raises(ValueError, match="MADE_UP_OP"):
        firmware.main_source("m", "m.h", ["MADE_UP_OP"], 1000)


# The TFLM API the generated main uses, declared with the shapes of TFLM's
# headers (tree 90b983c2): a usage check of the generated program.
TFLM_STANDIN = {
    "tensorflow/lite/micro/micro_profiler_interface.h": """
#pragma once
#include <cstdint>
namespace tflite {
class MicroProfilerInterface {
 public:
  virtual ~MicroProfilerInterface() {}
  virtual uint32_t BeginEvent(const char* tag) = 0;
  virtual void EndEvent(uint32_t event_handle) = 0;
};
}  // namespace tflite
""",
    "tensorflow/lite/micro/micro_interpreter.h": """
#pragma once
#include <cstddef>
#include <cstdint>
#include "tensorflow/lite/micro/micro_profiler_interface.h"
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef union TfLitePtrUnion { int8_t* int8; void* raw; } TfLitePtrUnion;
struct TfLiteTensor { int type; TfLitePtrUnion data; void* dims; size_t bytes; };
namespace tflite {
struct Model { uint32_t version() const; };
const Model* GetModel(const void* buf);
class MicroOpResolver {};
class MicroResourceVariables;
class MicroInterpreter {
 public:
  MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver,
                   uint8_t* tensor_arena, size_t tensor_arena_size,
                   MicroResourceVariables* resource_variables = nullptr,
                   MicroProfilerInterface* profiler = nullptr,
                   bool preserve_all_tensors = false);
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor* input(size_t index);
  TfLiteTensor* output(size_t index);
  size_t inputs_size() const;
  size_t outputs_size() const;
  size_t arena_used_bytes() const;
};
}  // namespace tflite
""",
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
namespace tflm_caps { template <typename R> TfLiteStatus AddCapsOps(R& resolver); }
""",
}


def test_generated_main_compiles_against_the_tflm_api(tmp_path):
    need("arm-none-eabi-g++")
    for rel, text in TFLM_STANDIN.items():
        p = tmp_path / "inc" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    (work / "model_model_data.h").write_text(
        "#pragma once\nextern const unsigned char g_model_model_data[];\n")
    files = firmware.write_sources(work, "model", "model_model_data.h", ["CONV_2D", "RESHAPE"],
                                   4096)
    proc = subprocess.run(
        ["arm-none-eabi-g++", "-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-std=c++17",
         "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-fsyntax-only", "-Wall",
         "-Wextra", "-Werror", f"-I{tmp_path / 'inc'}", f"-I{work}", f"-I{HARNESS / 'common'}",
         str(files["main"])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# A C program using the generated support file the way the profiling main
# does, and a 5 MB model array: checks the calibration loop, the
# semihosting config and hex output, and the linker insert placing model
# and arena in each board's large memory.
SUPPORT_PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
#include "mcu_harness.h"
#include "profile_support.h"
extern const unsigned char g_model_model_data[];
__attribute__((section(".arena"), aligned(16))) unsigned char g_arena[1u << 20];
int main(void) {
  unsigned mode, arena, invocations;
  mcu_counter_start();
  if (profile_read_config("profile.cfg", &mode, &arena, &invocations) != 0) {
    printf("FAIL config\n");
    return 1;
  }
  profile_calibrate(%(iterations)du);
  g_arena[arena] = (unsigned char)invocations;
  printf("O 0 ");
  profile_print_hex(g_model_model_data, 70);
  printf("\nARENA ok %%u %%lu\nDONE\n", arena, (unsigned long)(uintptr_t)g_arena);
  return g_arena[arena] == invocations ? 0 : 3;
}
"""


@pytest.mark.emulated
@pytest.mark.parametrize("name,per_tick", [("cortex-m4", 40.0), ("cortex-m7", 40.0),
                                           ("cortex-m33", 50.0), ("cortex-m55", 31.25)])
def test_support_code_and_bulk_memory_on_each_board(tmp_path, name, per_tick):
    need("arm-none-eabi-gcc", "qemu-system-arm")
    target, board = targets.TARGETS[name], BOARDS[name]
    firmware.write_sources(tmp_path, "model", "model_model_data.h", [], 16)
    (tmp_path / "main.c").write_text(SUPPORT_PROGRAM % {"iterations": firmware.CAL_ITERATIONS})
    pattern = bytes(range(7, 77))
    (tmp_path / "model_data.c").write_text(
        "__attribute__((aligned(16))) const unsigned char g_model_model_data[5u << 20] = {"
        + ",".join(str(b) for b in pattern) + "};\n")
    (tmp_path / firmware.CONFIG_FILE).write_text("0 1000 77\n")
    cpu = [*board.cflags, "-mthumb"]
    objects = []
    for src in ["main.c", "profile_support.c", "model_data.c",
                *firmware.harness_c_sources(HARNESS)]:
        obj = Path(src).stem + ".o"
        subprocess.run(["arm-none-eabi-gcc", *cpu, "-O2", "-std=c99", "-Wall", "-Werror",
                        f"-I{tmp_path}", f"-I{HARNESS / 'common'}", "-c", str(src), "-o", obj],
                       cwd=tmp_path, check=True)
        objects.append(obj)
    subprocess.run(["arm-none-eabi-gcc", *cpu, "--specs=rdimon.specs", "-nostartfiles",
                    "-Wl,--gc-sections", "-Wl,-Map=t.map", "-Tbulk.ld",
                    f"-T{HARNESS / 'cortex_m' / 'cortex_m.ld'}",
                    *firmware.memory_defsyms(board, target.bulk), *objects, "-o", "t.elf"],
                   cwd=tmp_path, check=True)
    run = emulator.parse_output(emulator.run_image(board, tmp_path / "t.elf", tmp_path,
                                                   timeout=60)).check(name)
    # SysTick under -icount shift=0: 1e9 / the board's SysTick clock
    assert run.instructions_per_tick == pytest.approx(per_tick, rel=1e-5)
    assert run.calibration[0] == 2 * firmware.CAL_ITERATIONS
    assert run.outputs == {0: pattern}
    bulk_origin, bulk_size = target.bulk
    assert bulk_origin <= run.arena[2] < bulk_origin + bulk_size
    # the model array is in the bulk memory and counted as model, not code
    sizes = flash.section_sizes(tmp_path / "t.elf")
    assert sizes[".model"] >= 5 << 20
    report_ = flash.flash_report(tmp_path / "t.elf", tmp_path / "t.map", [])
    assert report_["model"] == sizes[".model"]
    assert report_["code_parts"]["harness"] > 0 and report_["code_parts"]["runtime"] > 0
    assert "model" not in report_["code_parts"]
    assert report_["total"] == report_["model"] + report_["code"]


# --------------------------------------------------------------------------
# Emulator output, arena search, flash map
# --------------------------------------------------------------------------

SAMPLE_OUTPUT = """\
CAL 4000000 100000 8000000 200000
OVERHEAD 1000 512
ALLOC 24000 90148
EVENT 0 0 CONV_2D
EVENT 1 0 TFLMCaps_Squash
EVENT 2 1 NESTED
P 0 250100 200000 50000 10
O 0 80ff017f
P 1 250140 200000 50040 10
O 1 80ff0180
Node foo (number 1) failed to invoke with status 1\r
DONE
"""


def test_parse_output_reads_every_record():
    run = emulator.parse_output(SAMPLE_OUTPUT)
    assert run.instructions_per_tick == 40.0
    assert run.overhead == (1000, 512) and run.alloc == (24000, 90148)
    assert run.events == [(0, 0, "CONV_2D"), (1, 0, "TFLMCaps_Squash"), (2, 1, "NESTED")]
    assert run.invocations == [(0, 250100, [200000, 50000, 10]),
                               (1, 250140, [200000, 50040, 10])]
    assert run.outputs == {0: bytes([0x80, 0xFF, 0x01, 0x7F]), 1: bytes([0x80, 0xFF, 0x01, 0x80])}
    assert run.done and run.failure is None
    assert run.log == ["Node foo (number 1) failed to invoke with status 1"]
    assert run.check("x") is run


def test_parse_output_errors():
    with pytest.raises(emulator.EmulatorError, match="2 operator counts for 3 events"):
        emulator.parse_output("EVENT 0 0 A\nEVENT 1 0 B\nEVENT 2 0 C\nP 0 10 1 2\n")
    with pytest.raises(emulator.EmulatorError, match="malformed P"):
        emulator.parse_output("P 0 x\n")
    with pytest.raises(emulator.EmulatorError, match="malformed output"):
        emulator.parse_output("O 0 zz\n")
    with pytest.raises(emulator.EmulatorError, match="AllocateTensors"):
        emulator.parse_output("Failed to allocate memory\nFAIL AllocateTensors\n").check("run")
    with pytest.raises(emulator.EmulatorError, match="stopped before the end"):
        emulator.parse_output("CAL 1 1 2 2\n").check("run")
    with pytest.raises(emulator.EmulatorError, match="not running"):
        _ = emulator.parse_output("CAL 4 7 8 7\n").instructions_per_tick
    arena = emulator.parse_output("ARENA fail 1000 allocate\n").arena
    assert arena == (False, 1000, "allocate")
    assert emulator.parse_output("ARENA ok 90152 90148\nDONE\n").arena == (True, 90152, 90148)


@pytest.mark.parametrize("minimum,start", [(90152, 90148), (90152, 91008), (90152, 90152),
                                           (90152, 20000), (64, 5000), (1, 1)])
def test_minimum_arena_search_is_exact_and_short(minimum, start):
    seen = []

    def probe(size):
        seen.append(size)
        return size >= minimum

    found, probes = emulator.minimum_arena(probe, start, capacity=200000)
    assert found == minimum and probes == len(seen)
    assert minimum in seen and minimum - 1 in seen or minimum == 1
    assert probes <= 2 * (abs(start - minimum).bit_length() + 4) + 2


def test_minimum_arena_search_fails_clearly():
    with pytest.raises(emulator.EmulatorError, match="whole 5000-byte arena"):
        emulator.minimum_arena(lambda size: False, 4000, capacity=5000)


MAP_SAMPLE = """\
Archive member included to satisfy reference by file (symbol)

Linker script and memory map

.text           0x00000000     0x1000
 *(.vectors)
 .vectors       0x00000000       0x40 startup_cortex_m.o
 .text._ZN6tflite16MicroInterpreter6InvokeEv
                0x00000040      0x200 /c/gen/lib/libtensorflow-microlite.a(micro_interpreter.o)
                0x00000040                _ZN6tflite16MicroInterpreter6InvokeEv
 .text.arm_convolve_s8
                0x00000240      0x300 /c/gen/lib/libtensorflow-microlite.a(arm_convolve_s8.o)
 .text.caps_squash_s8
                0x00000540       0x80 /c/gen/lib/libtensorflow-microlite.a(caps_squash_s8.o)
 .text.Eval     0x000005c0       0x60 /c/gen/lib/libtensorflow-microlite.a(caps_squash_op.o)
 *fill*         0x00000620        0x4 
 .text.printf   0x00000624       0x44 /usr/lib/arm-none-eabi/lib/thumb/v7e-m+dp/hard/libc.a(libc_a-printf.o)
 .text.main     0x00000668      0x100 profile_main.o

.model          0x60000000     0x5000
 .rodata.g_model_model_data
                0x60000000     0x5000 model_data.o

.debug_info     0x00000000    0x12345
 .debug_info    0x00000000    0x12345 profile_main.o
"""


def test_map_contributions_split_the_code_by_origin():
    parts = flash.map_contributions(MAP_SAMPLE, ["caps_squash_s8.c", "caps_squash_op.cc"])
    assert parts == {"harness": 0x40 + 0x100, "tflm": 0x200, "cmsis_nn": 0x300,
                     "tflm_caps": 0x80 + 0x60, "padding": 0x4, "runtime": 0x44}
    assert flash.map_contributions(MAP_SAMPLE, [], sections=(".model",)) == {"model": 0x5000}


# --------------------------------------------------------------------------
# Inputs, host reference, results
# --------------------------------------------------------------------------

def test_quantized_inputs_follow_the_model_and_refuse_mismatches():
    from tflm_caps.runtime import check_model, quantize_like_tflite
    from tflm_caps import data as caps_data

    info = check_model(pipeline_model())
    batches, name = api.quantized_inputs(info, "bundled", 3)
    ds = caps_data.load("bundled")
    assert name == ds.name and len(batches) == 3
    want = quantize_like_tflite(ds.x_test[:3], 1 / 255, -128, np.int8)
    np.testing.assert_array_equal(np.concatenate(batches), want)
    assert batches[0].dtype == np.int8 and batches[0].shape == (1, 28, 28, 1)
    with pytest.raises(ValueError, match="held-out split .* has 1000 images"):
        api.quantized_inputs(info, "bundled", 1001)
    with pytest.raises(ValueError, match=r"\[8, 8, 1\] images, the model expects \[28, 28, 1\]"):
        api.quantized_inputs(info, "digits", 2)
    with pytest.raises(ValueError, match="positive integer"):
        api.check_arguments(0, "cortex-m7")
    with pytest.raises(ValueError, match="unknown target"):
        api.check_arguments(1, "cortex-m3")


def test_host_outputs_and_comparison():
    from tflm_caps.runtime import check_model

    model = pipeline_model()
    batches, _ = api.quantized_inputs(check_model(model), "bundled", 4)
    host = api.host_outputs(model, batches)
    assert len(host) == 4 and all(len(h) == 196 for h in host)
    # the squash/length pair of a zero-point capsule is the zero length (-128)
    assert host[0][0] == 0x80
    target = {n: h for n, h in enumerate(host)}
    assert api.compare_outputs(host, target) == {"compared": 4, "identical": 4,
                                                 "mismatched_invocations": []}
    target[2] = host[2][:-1] + bytes([host[2][-1] ^ 1])
    del target[3]
    assert api.compare_outputs(host, target) == {"compared": 4, "identical": 2,
                                                 "mismatched_invocations": [2, 3]}


def fake_result():
    from tflm_caps.runtime import check_model

    info = check_model(pipeline_model())
    run = emulator.parse_output(
        "CAL 4000000 100000 8000000 200000\nOVERHEAD 1000 500\nALLOC 30000 4100\n"
        "EVENT 0 0 RESHAPE\nEVENT 1 0 TFLMCaps_Squash\nEVENT 2 0 TFLMCaps_Length\n"
        "P 0 3000 10 2500 400\nP 1 3002 10 2502 400\nDONE\n")
    ops = api.op_profiles(info, run, run.instructions_per_tick)
    return api.ProfileResult(
        model="pipeline.tflite", target="cortex-m7", board="mps2-an500", tree="f" * 40,
        ops=ops, invoke_instructions=120040.0, invoke_min=120000.0, invoke_max=120080.0,
        allocate_instructions=1.2e6, instructions_per_tick=40.0, profiler_overhead=20.0,
        arena={"host_minimum": 4500, "export_header": 5536, "target_used": 4100,
               "target_minimum": 4104, "probes": 9},
        flash={"model": 2000, "code": 90000, "code_for_inference": 60000,
               "code_parts": {"tflm_caps": 9000}, "total": 92000, "sections": {}},
        bit_exact={"compared": 2, "identical": 2, "mismatched_invocations": []},
        build={}, images=2, data="bundled", seconds=1.0)


def test_op_profiles_match_the_model():
    r = fake_result()
    assert [(o.name, o.kind, o.output_shape) for o in r.ops] == [
        ("RESHAPE", "builtin", [1, 196, 4]), ("TFLMCaps_Squash", "custom", [1, 196, 4]),
        ("TFLMCaps_Length", "custom", [1, 196])]
    squash = r.ops[1]
    assert (squash.instructions, squash.min_instructions, squash.max_instructions) == \
        (100040.0, 100000.0, 100080.0)
    from tflm_caps.runtime import check_model
    wrong = emulator.parse_output("EVENT 0 0 CONV_2D\nP 0 1 1\nDONE\n")
    with pytest.raises(emulator.EmulatorError, match="do not match the model"):
        api.op_profiles(check_model(pipeline_model()), wrong, 40.0)


def test_report_table_markdown_png_and_json(tmp_path):
    r = fake_result()
    text = report.table(r)
    assert "TFLMCaps_Squash" in text and "100,040" in text and "1x196x4" in text
    assert "120,040 instructions per inference (min 120,000, max 120,080)" in text
    assert "40.000 instructions per SysTick tick" in text
    assert "target minimum 4,104 B" in text and "2 of 2 inferences identical" in text
    md = report.markdown_rows([r, r])
    assert "| TFLMCaps_Length | 1x196 | 16,000 | 16,000 |" in md
    assert "| whole Invoke | | **120,040** | **120,040** |" in md
    png = report.plot(r, tmp_path / "ops.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = r.to_json()
    assert json.loads(json.dumps(doc))["ops"][1]["name"] == "TFLMCaps_Squash"
