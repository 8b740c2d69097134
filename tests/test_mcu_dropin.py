"""Firmware drop-in: tflm_caps_ops/Makefile_internal.inc inside TFLM's make
flow (a stand-in Makefile reproducing how TFLM finds and includes it) and
tflm_caps_ops/CMakeLists.txt for a cross-compiled firmware project.

No TFLM tree is available here: the make test reproduces the parts of
TFLM's Makefile the fragment relies on (EXTERNAL_DIR's recursive search for
Makefile_internal.inc, the source/flag variables it appends to) and then
compiles the selected kernel sources with TFLM's C warning flags.
"""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support.toolchains import require_target, require_tools

from tflm_caps import ops_sources
from tflm_caps.baremetal.build import kernel_sources
from tflm_caps.baremetal.targets import get_target

# The operator sources the installed package carries (a copy of tflm_caps_ops).
OPS = ops_sources()

# What TFLM's Makefile does around Makefile_internal.inc (2026 tree):
# sources.inc collects $(EXTERNAL_DIR)/**/Makefile_internal.inc, tests.inc
# includes them after flags and sources are set and before objects are
# listed.
TFLM_STANDIN = r"""
recursive_find = $(wildcard $(1)$(2)) $(foreach dir,$(wildcard $(1)*),$(call recursive_find,$(dir)/,$(2)))
TARGET ?= linux
OPTIMIZED_KERNEL_DIR ?=
INCLUDES := -I. -I$(EXTERNAL_DIR)
CCFLAGS := -Wimplicit-function-declaration -Wall -Wextra
CXXFLAGS := -fno-rtti -fno-exceptions
MICROLITE_CC_KERNEL_SRCS := tensorflow/lite/micro/kernels/add.cc
THIRD_PARTY_KERNEL_CC_SRCS :=
MICRO_LITE_EXAMPLE_TESTS := $(call recursive_find,$(EXTERNAL_DIR)/,Makefile_internal.inc)
include $(MICRO_LITE_EXAMPLE_TESTS)
show:
	@echo "KERNELS=$(THIRD_PARTY_KERNEL_CC_SRCS)"
	@echo "OPS=$(filter-out tensorflow/%,$(MICROLITE_CC_KERNEL_SRCS))"
	@echo "INCLUDES=$(INCLUDES)"
	@echo "CCFLAGS=$(CCFLAGS)"
	@echo "BACKEND=$(CAPS_NN_BACKEND)"
"""


def make_show(tmp_path, **variables):
    require_tools("make")
    ext = tmp_path / "external"
    ext.mkdir(exist_ok=True)
    link = ext / "tflm_caps_ops"
    if not link.exists():
        link.symlink_to(OPS, target_is_directory=True)
    mk = tmp_path / "Makefile"
    mk.write_text(TFLM_STANDIN)
    args = ["make", "--no-print-directory", "-f", str(mk), f"EXTERNAL_DIR={ext}", "show"]
    args += [f"{k}={v}" for k, v in variables.items()]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    if proc.returncode != 0:
        return proc.returncode, proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        out[key] = value.split()
    return 0, out


@pytest.mark.parametrize("variables,backend", [
    ({"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m4+fp"}, "cortex_m"),
    ({"TARGET": "linux", "OPTIMIZED_KERNEL_DIR": "cmsis_nn"}, "cortex_m"),
    # Helium cores, with and without CMSIS-NN, unless MVE is dropped
    ({"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m55"}, "helium"),
    ({"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m85",
      "OPTIMIZED_KERNEL_DIR": "cmsis_nn"}, "helium"),
    ({"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m55+nomve.fp"}, "helium"),
    ({"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m55+nomve",
      "OPTIMIZED_KERNEL_DIR": "cmsis_nn"}, "cortex_m"),
    ({"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m55+nodsp+nofp"}, "cortex_m"),
    ({"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m55",
      "CAPS_NN_BACKEND": "cortex_m"}, "cortex_m"),
    ({"TARGET": "riscv32_generic"}, "riscv"),
    ({"TARGET": "linux"}, "portable"),
    ({"TARGET": "cortex_m_generic", "CAPS_NN_BACKEND": "portable"}, "portable"),
])
def test_make_fragment_selects_backend_like_the_baremetal_build(tmp_path, variables, backend):
    rc, out = make_show(tmp_path, **variables)
    assert rc == 0, out
    assert out["BACKEND"] == [backend]
    names = sorted(Path(p).name + "@" + Path(p).parent.name for p in out["KERNELS"])
    want = sorted(p.name + "@" + p.parent.name for p in kernel_sources(backend))
    assert names == want
    ops = sorted(Path(p).name for p in out["OPS"])
    assert ops == sorted(p.name for p in (OPS / "tflm").glob("*.cc"))
    assert any(i.endswith("tflm_caps_ops/include") for i in out["INCLUDES"])
    assert any(i.endswith("tflm_caps_ops") for i in out["INCLUDES"])


def test_make_fragment_options_and_errors(tmp_path):
    rc, out = make_show(tmp_path, TARGET="riscv32_generic", CAPS_NN_NUM_CORES=8, CAPS_NN_PULP=1)
    assert rc == 0 and "-DCAPS_NN_NUM_CORES=8" in out["CCFLAGS"] and "-DCAPS_NN_PULP" in out["CCFLAGS"]
    assert not any("CMSIS_NN" in f for f in out["CCFLAGS"])
    rc, err = make_show(tmp_path, CAPS_NN_BACKEND="avx")
    assert rc != 0 and "CAPS_NN_BACKEND must be portable, cortex_m, helium or riscv" in err


@pytest.mark.parametrize("variables", [
    {"TARGET": "cortex_m_generic", "OPTIMIZED_KERNEL_DIR": "cmsis_nn"},
    {"TARGET": "cortex_m_generic"},
    {"TARGET": "riscv32_generic"},
])
def test_make_fragment_refuses_the_removed_cmsis_nn_route(tmp_path, variables):
    """CAPS_NN_USE_CMSIS_NN=1 fails the build with the reason, with or
    without CMSIS-NN; 0 (the old default) is still accepted."""
    rc, err = make_show(tmp_path, CAPS_NN_USE_CMSIS_NN=1, **variables)
    assert rc != 0
    assert "CAPS_NN_USE_CMSIS_NN was removed" in err and "2.6x slower" in err
    rc, out = make_show(tmp_path, CAPS_NN_USE_CMSIS_NN=0, **variables)
    assert rc == 0, out


@pytest.mark.parametrize("target,variables", [
    ("cortex-m7", {"TARGET": "cortex_m_generic"}),
    ("cortex-m55", {"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m55"}),
    ("rv32imac", {"TARGET": "riscv32_generic", "CAPS_NN_NUM_CORES": 8}),
])
def test_make_selected_sources_compile_with_tflm_warning_flags(tmp_path, target, variables):
    require_target(target)
    rc, out = make_show(tmp_path, **variables)
    assert rc == 0, out
    t = get_target(target)
    cc = t.tools[0]
    base = [cc, *t.cflags, "-mthumb" if t.arch == "arm" else "--specs=picolibc.specs",
            "-O2", "-c", "-Wsign-compare", "-Wdouble-promotion", "-Wvla",
            "-Wmissing-field-initializers", *out["CCFLAGS"],
            *[i for i in out["INCLUDES"] if i != "-I."]]
    for src in out["KERNELS"]:
        obj = tmp_path / (Path(src).stem + ".o")
        proc = subprocess.run(base + [src, "-o", str(obj)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{src}:\n{proc.stderr}"


@pytest.mark.parametrize("target,processor,backend", [
    ("cortex-m7", "cortex-m7", "cortex_m"),
    ("cortex-m55", "cortex-m55", "helium"),
    ("rv32imac", "riscv32", "riscv"),
])
def test_cmake_builds_kernel_library_for_target(tmp_path, target, processor, backend):
    require_tools("cmake")
    require_target(target)
    t = get_target(target)
    cc = shutil.which(t.tools[0])
    cflags = " ".join([*t.cflags, "-mthumb" if t.arch == "arm" else "--specs=picolibc.specs"])
    build = tmp_path / "build"
    cfg = subprocess.run(
        ["cmake", "-S", str(OPS), "-B", str(build), "-DCMAKE_SYSTEM_NAME=Generic",
         f"-DCMAKE_SYSTEM_PROCESSOR={processor}", f"-DCMAKE_C_COMPILER={cc}",
         f"-DCMAKE_CXX_COMPILER={cc.replace('gcc', 'g++')}",
         "-DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY", f"-DCMAKE_C_FLAGS={cflags}",
         "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    assert f"tflm_caps_ops: backend {backend}" in cfg.stdout
    bld = subprocess.run(["cmake", "--build", str(build), "--target", "tflm_caps_kernels"],
                         capture_output=True, text=True)
    assert bld.returncode == 0, bld.stdout + bld.stderr
    lib = next(build.rglob("libtflm_caps_kernels.a"))
    ar = "arm-none-eabi-ar" if t.arch == "arm" else "riscv64-unknown-elf-ar"
    members = subprocess.run([ar, "t", str(lib)], capture_output=True, text=True).stdout.split()
    want = {p.name + ".obj" for p in kernel_sources(backend)} | \
           {p.name + ".o" for p in kernel_sources(backend)}
    assert len(members) == len(kernel_sources(backend))
    assert set(members) <= want


def test_cmake_rejects_bad_backend(tmp_path):
    require_tools("cmake")
    cfg = subprocess.run(["cmake", "-S", str(OPS), "-B", str(tmp_path / "b"),
                          "-DCAPS_NN_BACKEND=avx"], capture_output=True, text=True)
    assert cfg.returncode != 0
    assert "CAPS_NN_BACKEND must be portable, cortex_m, helium or riscv" in cfg.stdout + cfg.stderr


def test_cmake_refuses_the_removed_cmsis_nn_route(tmp_path):
    require_tools("cmake")
    cfg = subprocess.run(["cmake", "-S", str(OPS), "-B", str(tmp_path / "b"),
                          "-DCAPS_NN_BACKEND=cortex_m", "-DCAPS_NN_USE_CMSIS_NN=ON"],
                         capture_output=True, text=True)
    assert cfg.returncode != 0
    assert "CAPS_NN_USE_CMSIS_NN was removed" in cfg.stdout + cfg.stderr


# A firmware project consuming tflm_caps_ops the way docs/firmware.md shows,
# with TFLM stood in by the host ABI header (host/tflm_host_abi.h, the same
# stand-in the host library is built against).
CMAKE_APP = r"""
cmake_minimum_required(VERSION 3.16)
project(caps_app C CXX)
set(CMAKE_CXX_STANDARD 17)
if(ROUTE STREQUAL "target")
  add_library(tflm_standin INTERFACE)
  target_include_directories(tflm_standin INTERFACE "@OPS@")
  target_compile_definitions(tflm_standin INTERFACE TFLM_CAPS_HOST_ABI=1)
  set(CAPS_NN_TFLM_TARGET tflm_standin)
else()
  set(CAPS_NN_TFLM_INCLUDE_DIRS "@OPS@")
  add_compile_definitions(TFLM_CAPS_HOST_ABI=1)
endif()
set(CAPS_NN_BACKEND portable)
add_subdirectory("@OPS@" tflm_caps_ops)
add_library(app STATIC app.cc)
target_link_libraries(app PRIVATE tflm_caps_ops)
"""

CMAKE_APP_SOURCE = r"""
#include "tflm/caps_ops.h"
#ifndef TF_LITE_STATIC_MEMORY_EXPECTED
#error "set by the test"
#endif
#if TF_LITE_STATIC_MEMORY_EXPECTED && !defined(TF_LITE_STATIC_MEMORY)
#error "TF_LITE_STATIC_MEMORY must reach the application on the include-dirs route"
#endif
const void* squash_registration() { return tflm_caps::Register_TFLMCAPS_SQUASH(); }
"""


@pytest.mark.parametrize("route", ["target", "include_dirs"])
def test_cmake_fresh_configure_honours_variables_set_before_add_subdirectory(tmp_path, route):
    """CAPS_NN_TFLM_TARGET / CAPS_NN_TFLM_INCLUDE_DIRS set as normal variables
    before add_subdirectory() count on a fresh configure; the glue is built
    without thread-safe statics (no __cxa_guard_*) and, on the include-dirs
    route, with TF_LITE_STATIC_MEMORY for itself and the application."""
    for tool in ("cmake", "g++", "nm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    app = tmp_path / "app"
    app.mkdir()
    (app / "CMakeLists.txt").write_text(CMAKE_APP.replace("@OPS@", str(OPS)))
    expected = 1 if route == "include_dirs" else 0
    (app / "app.cc").write_text(f"#define TF_LITE_STATIC_MEMORY_EXPECTED {expected}\n"
                                + CMAKE_APP_SOURCE)
    build = tmp_path / "build"
    assert not build.exists()  # fresh: no cache from an earlier configure
    cfg = subprocess.run(["cmake", "-S", str(app), "-B", str(build), f"-DROUTE={route}",
                          "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", "-DCMAKE_BUILD_TYPE=Release"],
                         capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    assert "building the kernels only" not in cfg.stdout
    bld = subprocess.run(["cmake", "--build", str(build), "--target", "app", "tflm_caps_ops"],
                         capture_output=True, text=True)
    assert bld.returncode == 0, bld.stdout + bld.stderr
    commands = json.loads((build / "compile_commands.json").read_text())
    glue = [c for c in commands if "/tflm/" in c["file"] and c["file"].endswith(".cc")]
    assert sorted(Path(c["file"]).name for c in glue) == \
        sorted(p.name for p in (OPS / "tflm").glob("*.cc"))
    for c in glue:
        assert "-fno-threadsafe-statics" in c["command"], c["command"]
    app_cmd = next(c["command"] for c in commands if c["file"].endswith("app.cc"))
    for cmd in [c["command"] for c in glue] + [app_cmd]:
        assert ("-DTF_LITE_STATIC_MEMORY" in cmd) == bool(expected), cmd
    lib = next(build.rglob("libtflm_caps_ops.a"))
    undefined = subprocess.run(["nm", "-u", "-C", str(lib)], capture_output=True,
                               text=True).stdout
    assert "__cxa_guard" not in undefined


def test_cmake_option_can_drop_static_memory(tmp_path):
    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.skip("cmake or g++ not installed")
    app = tmp_path / "app"
    app.mkdir()
    (app / "CMakeLists.txt").write_text(CMAKE_APP.replace("@OPS@", str(OPS)))
    (app / "app.cc").write_text("#define TF_LITE_STATIC_MEMORY_EXPECTED 0\n" + CMAKE_APP_SOURCE)
    build = tmp_path / "build"
    cfg = subprocess.run(["cmake", "-S", str(app), "-B", str(build), "-DROUTE=include_dirs",
                          "-DCAPS_NN_TFLM_STATIC_MEMORY=OFF",
                          "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"], capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    commands = json.loads((build / "compile_commands.json").read_text())
    assert not any("TF_LITE_STATIC_MEMORY" in c["command"] for c in commands)
