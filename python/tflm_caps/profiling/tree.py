"""Checks of the user's TFLM tree and toolchain before anything is built.

The profiler never downloads: TFLM's make runs its download scripts only for
folders that are missing, so every folder they would fetch is checked here
first, and a missing one is reported with the path and the TFLM script that
fetches it.
"""
import dataclasses
import hashlib
import shutil
import subprocess
from pathlib import Path

MAKE_DIR = "tensorflow/lite/micro/tools/make"
MAKEFILE = f"{MAKE_DIR}/Makefile"
DOWNLOADS = f"{MAKE_DIR}/downloads"
_THIRD_PARTY = f"make -f {MAKEFILE} third_party_downloads (tools/make/download_and_extract.sh)"

# (file proving the download is in place, TFLM script that fetches it)
REQUIRED = (
    ("gemmlowp/fixedpoint/fixedpoint.h", _THIRD_PARTY),
    ("ruy/ruy/profiler/instrumentation.h", _THIRD_PARTY),
    ("flatbuffers/include/flatbuffers/flatbuffers.h", f"{MAKE_DIR}/flatbuffers_download.sh"),
    ("kissfft/kiss_fft.h", f"{MAKE_DIR}/kissfft_download.sh"),
    ("pigweed", f"{MAKE_DIR}/pigweed_download.sh (an empty folder is enough for a library "
                "build)"),
    ("cmsis/CMSIS/Core/Include/cmsis_compiler.h", f"{MAKE_DIR}/ext_libs/cmsis_download.sh"),
    ("cmsis_nn/Include/arm_nnfunctions.h", f"{MAKE_DIR}/ext_libs/cmsis_nn_download.sh"),
)
# Cortex_DFP device header per TFLM TARGET_ARCH core.
_DEVICE = {"cortex-m4": "ARMCM4", "cortex-m7": "ARMCM7", "cortex-m33": "ARMCM33",
           "cortex-m55": "ARMCM55"}
TOOLS = ("make", "arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-ar",
         "arm-none-eabi-size", "qemu-system-arm")


class TreeError(RuntimeError):
    """The TFLM tree or the toolchain is not ready; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class TreeInfo:
    root: Path
    commit: str          # git commit, or "unversioned"
    state: str           # "" (clean), a digest of local changes, or of the Makefile

    @property
    def identity(self):
        return f"{self.commit}{'+' + self.state if self.state else ''}"


def required_paths(target_name):
    """[(path relative to the tree, TFLM script fetching it)] for a profile target."""
    rows = [(f"{DOWNLOADS}/{rel}", script) for rel, script in REQUIRED]
    device = _DEVICE[target_name]
    rows.append((f"{DOWNLOADS}/cmsis/Cortex_DFP/Device/{device}/Include/{device}.h",
                 f"{MAKE_DIR}/ext_libs/cmsis_download.sh (it skips an existing cmsis/ folder: "
                 "remove it first)"))
    return rows


def _git(root, *args):
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def identify(root):
    """TreeInfo of `root`: the git commit plus a digest of uncommitted changes
    to tracked files (the downloads folder is not tracked), so an edited tree
    gets its own cache entry."""
    root = Path(root).resolve()
    head = _git(root, "rev-parse", "HEAD") if shutil.which("git") else None
    if head:
        diff = _git(root, "diff", "HEAD", "--binary") or b""
        state = hashlib.sha256(diff).hexdigest()[:12] if diff.strip() else ""
        return TreeInfo(root, head.decode().strip(), state)
    makefile = (root / MAKEFILE).read_bytes()
    return TreeInfo(root, "unversioned", hashlib.sha256(makefile).hexdigest()[:12])


def check_tree(root, target_name):
    """TreeInfo of a usable TFLM tree; TreeError naming the first missing path
    and the TFLM script that fetches it."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TreeError(f"TFLM tree not found: {root} is not a directory")
    if not (root / MAKEFILE).is_file():
        raise TreeError(f"{root} is not a tflite-micro checkout: {root / MAKEFILE} is missing "
                        "(git clone https://github.com/tensorflow/tflite-micro)")
    missing = [(rel, script) for rel, script in required_paths(target_name)
               if not (root / rel).exists()]
    if missing:
        lines = [f"  {root / rel}\n      fetched by {script}" for rel, script in missing]
        raise TreeError(
            "the TFLM tree lacks third-party downloads (tflm-caps profile never downloads; "
            f"run TFLM's scripts in {root}, or `make -f {MAKEFILE} TARGET=cortex_m_generic "
            "OPTIMIZED_KERNEL_DIR=cmsis_nn microlite` once, which runs them):\n"
            + "\n".join(lines))
    return identify(root)


def check_tools():
    """TreeError unless the cross toolchain (with its C++ library) and QEMU exist."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise TreeError(f"not installed: {', '.join(missing)} (Debian: gcc-arm-none-eabi "
                        "libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib "
                        "qemu-system-arm)")
    proc = subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-E", "-x", "c++",
                           "-", "-o", "/dev/null"], input="#include <cstdarg>\n",
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise TreeError("arm-none-eabi-g++ has no C++ library headers (<cstdarg> not found); "
                        "TFLM's C++ needs them (Debian: libstdc++-arm-none-eabi-newlib)")


def toolchain_root():
    """TFLM's TARGET_TOOLCHAIN_ROOT for the arm-none-eabi-gcc on PATH (with
    the trailing slash TFLM expects); without it TFLM fetches its own GCC."""
    gcc = shutil.which("arm-none-eabi-gcc")
    return str(Path(gcc).parent) + "/"


def toolchain_version():
    proc = subprocess.run(["arm-none-eabi-gcc", "-dumpversion"], capture_output=True, text=True)
    return proc.stdout.strip()
