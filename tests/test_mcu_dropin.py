"""Firmware drop-in: tflm_caps_ops/Makefile_internal.inc inside TFLM's make
flow (a stand-in Makefile reproducing how TFLM finds and includes it) and
tflm_caps_ops/CMakeLists.txt for a cross-compiled firmware project.

No TFLM tree is available here: the make test reproduces the parts of
TFLM's Makefile the fragment relies on (EXTERNAL_DIR's recursive search for
Makefile_internal.inc, the source/flag variables it appends to) and then
compiles the selected kernel sources with TFLM's C warning flags.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPS = REPO / "tflm_caps_ops"
sys.path.insert(0, str(REPO / "firmware"))
import mcu_build  # noqa: E402

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
    if shutil.which("make") is None:
        pytest.skip("make not installed")
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
def test_make_fragment_selects_backend_like_mcu_build(tmp_path, variables, backend):
    rc, out = make_show(tmp_path, **variables)
    assert rc == 0, out
    assert out["BACKEND"] == [backend]
    names = sorted(Path(p).name + "@" + Path(p).parent.name for p in out["KERNELS"])
    want = sorted(p.name + "@" + p.parent.name for p in mcu_build.kernel_sources(backend))
    assert names == want
    ops = sorted(Path(p).name for p in out["OPS"])
    assert ops == sorted(p.name for p in (OPS / "tflm").glob("*.cc"))
    assert any(i.endswith("tflm_caps_ops/include") for i in out["INCLUDES"])
    assert any(i.endswith("tflm_caps_ops") for i in out["INCLUDES"])


def test_make_fragment_options_and_errors(tmp_path):
    rc, out = make_show(tmp_path, TARGET="riscv32_generic", CAPS_NN_NUM_CORES=8, CAPS_NN_PULP=1)
    assert rc == 0 and "-DCAPS_NN_NUM_CORES=8" in out["CCFLAGS"] and "-DCAPS_NN_PULP" in out["CCFLAGS"]
    rc, out = make_show(tmp_path, OPTIMIZED_KERNEL_DIR="cmsis_nn", CAPS_NN_USE_CMSIS_NN=1)
    assert rc == 0 and "-DCAPS_NN_USE_CMSIS_NN" in out["CCFLAGS"]
    rc, err = make_show(tmp_path, CAPS_NN_BACKEND="avx")
    assert rc != 0 and "CAPS_NN_BACKEND must be portable, cortex_m, helium or riscv" in err
    rc, err = make_show(tmp_path, TARGET="riscv32_generic", CAPS_NN_USE_CMSIS_NN=1)
    assert rc != 0 and "needs the cortex_m backend" in err


@pytest.mark.parametrize("target,variables", [
    ("cortex-m7", {"TARGET": "cortex_m_generic"}),
    ("cortex-m55", {"TARGET": "cortex_m_generic", "TARGET_ARCH": "cortex-m55"}),
    ("rv32imac", {"TARGET": "riscv32_generic", "CAPS_NN_NUM_CORES": 8}),
])
def test_make_selected_sources_compile_with_tflm_warning_flags(tmp_path, target, variables):
    missing = mcu_build.missing_tools(target)
    if missing:
        pytest.skip(f"{target}: toolchain not installed ({', '.join(missing)})")
    rc, out = make_show(tmp_path, **variables)
    assert rc == 0, out
    t = mcu_build.get_target(target)
    cc = mcu_build.tools(t)[0]
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
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    missing = mcu_build.missing_tools(target)
    if missing:
        pytest.skip(f"{target}: toolchain not installed ({', '.join(missing)})")
    t = mcu_build.get_target(target)
    cc = shutil.which(mcu_build.tools(t)[0])
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
    want = {p.name + ".obj" for p in mcu_build.kernel_sources(backend)} | \
           {p.name + ".o" for p in mcu_build.kernel_sources(backend)}
    assert len(members) == len(mcu_build.kernel_sources(backend))
    assert set(members) <= want


def test_cmake_rejects_bad_backend(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    cfg = subprocess.run(["cmake", "-S", str(OPS), "-B", str(tmp_path / "b"),
                          "-DCAPS_NN_BACKEND=avx"], capture_output=True, text=True)
    assert cfg.returncode != 0
    assert "CAPS_NN_BACKEND must be portable, cortex_m, helium or riscv" in cfg.stdout + cfg.stderr
