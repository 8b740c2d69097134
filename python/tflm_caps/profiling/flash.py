"""Flash of the profiling image: the model, and the code split by origin.

``arm-none-eabi-size -A`` gives the output sections; the linker map tells
which input file every byte of them came from, so the code a firmware
needs for the model (TFLM, CMSIS-NN, tflm-caps operators) is reported
apart from the C/C++ runtime and the profiling harness.
"""
import re
import subprocess
from pathlib import Path

# Output sections stored in flash (.data: its initial values).
FLASH_SECTIONS = (".text", ".init_array", ".ARM.exidx", ".data", ".model")
CODE_SECTIONS = (".text", ".init_array", ".ARM.exidx", ".data")
_RUNTIME = re.compile(r"(^|/)(lib(c|c_nano|m|g|gcc|stdc\+\+|supc\+\+|rdimon|nosys)\.a|crt\w*\.o)")
HARNESS_OBJECTS = ("profile_main.o", "profile_support.o", "startup_cortex_m.o",
                   "counter_systick.o")


def section_sizes(elf, size_tool="arm-none-eabi-size"):
    """{section: bytes} from ``size -A``."""
    out = subprocess.run([size_tool, "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def classify(origin, ops_sources):
    """Which part of the image an input file belongs to."""
    m = re.search(r"libtensorflow-microlite\.a\((?P<member>[^)]+)\)", origin)
    if m:
        stem = Path(m.group("member")).stem
        if stem in {Path(s).stem for s in ops_sources}:
            return "tflm_caps"
        return "cmsis_nn" if stem.startswith("arm_") else "tflm"
    name = Path(origin.split("(")[0]).name
    if _RUNTIME.search(origin.split("(")[0]):
        return "runtime"
    if name == "model_data.o":
        return "model"
    if name in HARNESS_OBJECTS:
        return "harness"
    return "other"


_OUTPUT = re.compile(r"^(?P<name>\.[\w.]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+")
_INPUT_FULL = re.compile(r"^ (?P<name>[\w.*$]\S*)\s+0x[0-9a-f]+\s+0x(?P<size>[0-9a-f]+)\s+"
                         r"(?P<file>\S.*)$")
_INPUT_NAME = re.compile(r"^ (?P<name>[\w.$]\S*)$")
_FILL = re.compile(r"^ \*fill\*\s+0x[0-9a-f]+\s+0x(?P<size>[0-9a-f]+)")
_INPUT_REST = re.compile(r"^\s+0x[0-9a-f]+\s+0x(?P<size>[0-9a-f]+)\s+(?P<file>\S.*)$")


def map_contributions(map_text, ops_sources, sections=CODE_SECTIONS):
    """{part: bytes} of the given output sections, from a GNU ld map."""
    parts = {}
    current = None
    pending = False
    started = False
    for line in map_text.splitlines():
        if line.startswith("Linker script and memory map"):
            started = True
            continue
        if not started:
            continue
        m = _OUTPUT.match(line)
        if m or (line and not line.startswith(" ")):
            current = m.group("name") if m else line.split()[0] if line.split() else None
            pending = False
            continue
        if current not in sections:
            continue
        m = _INPUT_FULL.match(line)
        fill = _FILL.match(line)
        if fill:
            origin, size = "*fill*", int(fill.group("size"), 16)
            pending = False
        elif m:
            origin, size = m.group("file"), int(m.group("size"), 16)
            pending = False
        elif _INPUT_NAME.match(line):
            pending = True
            continue
        elif pending and _INPUT_REST.match(line):
            m = _INPUT_REST.match(line)
            origin, size = m.group("file"), int(m.group("size"), 16)
            pending = False
        else:
            continue
        if size:
            part = "padding" if origin.startswith("*fill*") else classify(origin, ops_sources)
            parts[part] = parts.get(part, 0) + size
    return parts


def flash_report(elf, map_path, ops_sources):
    """Flash bytes: model, code (by part) and totals."""
    sizes = section_sizes(elf)
    parts = map_contributions(Path(map_path).read_text(errors="replace"), ops_sources)
    model = sizes.get(".model", 0)
    code = sum(sizes.get(s, 0) for s in CODE_SECTIONS)
    inference = sum(parts.get(p, 0) for p in ("tflm", "cmsis_nn", "tflm_caps"))
    return {"model": model, "code": code, "code_for_inference": inference,
            "code_parts": dict(sorted(parts.items())), "total": model + code,
            "sections": {s: sizes[s] for s in sizes if s in FLASH_SECTIONS}}
