"""Build and install tflm-caps.

setup.py is the single build entry point: it installs the Python package
``tflm_caps`` (from ``python/``), the converter patches (from
``converter_patches/``) and compiles the host native library from
``tflm_caps_ops/`` (portable C99 kernels plus the TFLM operator glue built
against the pinned ``tflite-micro`` wheel's binary interface).  The library
is loaded with ctypes, so it is a plain shared object built as an extension
module only to reuse setuptools' compiler plumbing.  The operator sources
themselves are copied into the package (``tflm_caps/ops_src``,
``tflm_caps.ops_sources()``) for the bare-metal builds and the firmware
export of an installed package.
"""
import glob
import os
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
OPS = "tflm_caps_ops"

# Pins: TensorFlow 2.19.1 is the newest release that shares an environment
# with tflite-support 0.4.4 (protobuf < 4); tflite-micro offers one build.
# tests/test_environment.py fails loudly when the environment drifts.
INSTALL_REQUIRES = [
    "tensorflow-cpu==2.19.1",
    "tflite-support==0.4.4",
    "tflite-micro==0.dev20261023182759",
    "numpy>=1.26,<2.2",
    "flatbuffers>=24.3.25",
    "mlxtend==0.23.4",
    "scikit-learn>=1.3",
    "tqdm>=4.60",
    "matplotlib>=3.7",
]


def _rel(paths):
    return sorted(os.path.relpath(p, HERE) for p in paths)


def native_sources():
    """Sources of the host library: portable kernels + host TFLM glue (the
    optimized backends' caps_nn_backend_math.c is not part of it)."""
    srcs = [p for p in glob.glob(os.path.join(HERE, OPS, "src", "common", "*.c"))
            if os.path.basename(p) != "caps_nn_backend_math.c"]
    srcs += glob.glob(os.path.join(HERE, OPS, "src", "portable", "*.c"))
    srcs += glob.glob(os.path.join(HERE, OPS, "tflm", "*.cc"))
    srcs += glob.glob(os.path.join(HERE, OPS, "host", "*.cc"))
    srcs += glob.glob(os.path.join(HERE, OPS, "host", "*.c"))
    return _rel(srcs)


def python_packages():
    """Every package under python/tflm_caps, plus the converter patches."""
    found = []
    root = os.path.join(HERE, "python")
    for dirpath, _, files in os.walk(os.path.join(root, "tflm_caps")):
        if "__init__.py" in files:
            found.append(os.path.relpath(dirpath, root).replace(os.sep, "."))
    return sorted(found) + ["tflm_caps.converter_patches"]


class BuildPyWithOpsSources(build_py):
    """Also copy tflm_caps_ops/ into the package as tflm_caps/ops_src/."""

    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "tflm_caps", "ops_src")
        shutil.rmtree(dest, ignore_errors=True)  # no stale files from an earlier build
        shutil.copytree(os.path.join(HERE, OPS), dest,
                        ignore=shutil.ignore_patterns("*.o", "*.so", "__pycache__"))


class BuildNative(build_ext):
    """Compile C as C99 and C++ as C++17 with per-language flags."""

    C_FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    CXX_FLAGS = ["-std=c++17", "-O2", "-Wall", "-fno-exceptions", "-fno-rtti",
                 "-Wno-unused-parameter"]

    def build_extensions(self):
        compiler = self.compiler
        original = compiler._compile

        def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
            flags = self.CXX_FLAGS if src.endswith((".cc", ".cpp")) else self.C_FLAGS
            return original(obj, src, ext, cc_args, list(extra_postargs) + flags, pp_opts)

        compiler._compile = _compile
        try:
            super().build_extensions()
        finally:
            compiler._compile = original

    def get_export_symbols(self, ext):
        # A ctypes library, not a Python module: export nothing special.
        return []


native = Extension(
    "tflm_caps._libtflm_caps",
    sources=native_sources(),
    include_dirs=[os.path.join(OPS, "include"), OPS],
    # Headers hold static inline arithmetic: editing one must rebuild.
    depends=_rel(glob.glob(os.path.join(HERE, OPS, "include", "tflm_caps", "*.h"))
                 + glob.glob(os.path.join(HERE, OPS, "src", "common", "*.h"))
                 + glob.glob(os.path.join(HERE, OPS, "tflm", "*.h"))
                 + glob.glob(os.path.join(HERE, OPS, "host", "*.h"))),
    define_macros=[("TFLM_CAPS_HOST_ABI", "1")],
    libraries=["stdc++"],
    language="c++",
)

setup(
    name="tflm-caps",
    version="0.1.0",
    description="Int8 Capsule Networks for TensorFlow Lite Micro: Keras 3 layers, "
                "converter to custom ops, portable/Cortex-M/RISC-V kernels",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.12",
    packages=python_packages(),
    package_dir={"tflm_caps": "python/tflm_caps",
                 "tflm_caps.converter_patches": "converter_patches"},
    # the bare-metal harness (C sources, linker script) built by tflm_caps.baremetal
    package_data={"tflm_caps.baremetal": ["harness/*.c", "harness/*/*.c", "harness/*/*.h",
                                          "harness/*/*.ld"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=7"]},
    ext_modules=[native],
    cmdclass={"build_py": BuildPyWithOpsSources, "build_ext": BuildNative},
    entry_points={"console_scripts": ["tflm-caps=tflm_caps.cli:main"]},
    zip_safe=False,
)
