#!/usr/bin/env python3
"""Build and run bare-metal images for the emulated MCU targets.

One entry per target holds everything the toolchain and QEMU need: compiler
flags, memory map, QEMU board and the board clock (SysTick ticks are turned
into instruction counts with it).  The kernel library is assembled the way
TFLM's OPTIMIZED_KERNEL_DIR works: ``src/common`` + the backend directory +
every portable source the backend does not replace by a file of the same
name.  ``Makefile_internal.inc`` and ``CMakeLists.txt`` in ``tflm_caps_ops``
follow the same rule.

Used by the emulated tests, the instruction-count benchmark and directly:

    python3 firmware/mcu_build.py --target cortex-m7 --backend cortex_m \\
        --run my_main.c
"""
import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRMWARE_DIR = Path(__file__).resolve().parent
REPO_ROOT = FIRMWARE_DIR.parent
OPS_DIR = REPO_ROOT / "tflm_caps_ops"

BACKENDS = ("portable", "cortex_m", "helium", "riscv")

# Instructions per second QEMU retires under -icount shift=0 (1 ns each).
ICOUNT_HZ = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    arch: str            # "arm" or "riscv"
    board: str           # QEMU machine
    cflags: tuple        # CPU / FPU / ABI selection
    code: tuple          # (origin, size) of the code memory
    ram: tuple           # (origin, size) of the data memory
    clock_hz: int        # SysTick processor clock (Arm); unused on RISC-V
    backend: str         # optimized backend for this core
    note: str = ""
    const: tuple = None  # (origin, size) of the constants, if not after the code

    @property
    def instructions_per_count(self):
        """Instructions per raw counter unit printed by the firmware."""
        if self.arch == "riscv":
            return 1.0
        return ICOUNT_HZ / self.clock_hz

    @property
    def counter_resolution(self):
        return self.instructions_per_count


_MB = 1 << 20
TARGETS = {
    "cortex-m4": Target(
        "cortex-m4", "arm", "mps2-an386",
        ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
        (0x00000000, 4 * _MB), (0x20000000, 4 * _MB), 25_000_000, "cortex_m",
        "MPS2 AN386, 25 MHz SysTick clock"),
    "cortex-m7": Target(
        "cortex-m7", "arm", "mps2-an500",
        ("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
        (0x00000000, 4 * _MB), (0x20000000, 4 * _MB), 25_000_000, "cortex_m",
        "MPS2 AN500, 25 MHz SysTick clock"),
    "cortex-m33": Target(
        "cortex-m33", "arm", "mps2-an505",
        ("-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
        (0x10000000, 4 * _MB), (0x38000000, 2 * _MB), 20_000_000, "cortex_m",
        "MPS2 AN505, secure aliases of SSRAM1/2, 20 MHz SysTick clock"),
    "cortex-m55": Target(
        "cortex-m55", "arm", "mps3-an547",
        ("-mcpu=cortex-m55", "-mfloat-abi=hard"),
        (0x00000000, 512 * 1024), (0x21000000, 4 * _MB), 32_000_000, "helium",
        "MPS3 AN547, code in ITCM, data in SRAM, constants in DDR, 32 MHz SysTick clock",
        (0x60000000, 16 * _MB)),
    "rv32imac": Target(
        "rv32imac", "riscv", "virt",
        ("-march=rv32imac", "-mabi=ilp32", "-misa-spec=2.2"),
        (0x80000000, 4 * _MB), (0x80400000, 4 * _MB), 0, "riscv",
        "QEMU virt, picolibc semihosting, minstret"),
}

ARM_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")
RISCV_TOOLS = ("riscv64-unknown-elf-gcc", "qemu-system-riscv32")


class McuError(RuntimeError):
    """Build or emulation failure, with the tool's output attached."""


@dataclasses.dataclass
class RunResult:
    target: str
    returncode: int
    output: str
    seconds: float

    def records(self, tag):
        return parse_records(self.output, tag)


def get_target(name):
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown MCU target {name!r}; expected one of "
                         f"{', '.join(TARGETS)}") from None


def tools(target):
    return ARM_TOOLS if target.arch == "arm" else RISCV_TOOLS


def missing_tools(target):
    """Names of the compiler/emulator for `target` not found on PATH."""
    return [t for t in tools(get_target(target) if isinstance(target, str) else target)
            if shutil.which(t) is None]


def kernel_sources(backend):
    """C sources of the kernel library for `backend` (TFLM-style override:
    a backend file replaces the portable file of the same name)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    src = OPS_DIR / "src"
    sources = sorted((src / "common").glob("*.c"))
    portable = sorted((src / "portable").glob("*.c"))
    if backend == "portable":
        return sources + portable
    optimized = sorted((src / backend).glob("*.c"))
    replaced = {p.name for p in optimized}
    return sources + optimized + [p for p in portable if p.name not in replaced]


def harness_sources(target):
    target = get_target(target) if isinstance(target, str) else target
    if target.arch == "arm":
        return [FIRMWARE_DIR / "cortex_m" / "startup_cortex_m.c",
                FIRMWARE_DIR / "cortex_m" / "counter_systick.c"]
    return [FIRMWARE_DIR / "riscv" / "counter_minstret.c"]


def compile_command(target, sources, elf, include_dirs=(), defines=(), opt="-O2",
                    extra_flags=()):
    target = get_target(target) if isinstance(target, str) else target
    includes = [FIRMWARE_DIR / "common", OPS_DIR / "include", *include_dirs]
    cmd = [tools(target)[0], *target.cflags, opt, "-std=c99", "-g",
           "-Wall", "-Wextra", "-Wno-unused-parameter",
           "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections"]
    cmd += [f"-I{p}" for p in includes]
    cmd += [f"-D{d}" for d in defines]
    code_origin, code_size = target.code
    ram_origin, ram_size = target.ram
    if target.arch == "arm":
        cmd += ["-mthumb", "--specs=rdimon.specs", "-nostartfiles",
                f"-T{FIRMWARE_DIR / 'cortex_m' / 'cortex_m.ld'}",
                f"-Wl,--defsym=__code_origin={code_origin:#x}",
                f"-Wl,--defsym=__code_size={code_size:#x}",
                f"-Wl,--defsym=__ram_origin={ram_origin:#x}",
                f"-Wl,--defsym=__ram_size={ram_size:#x}"]
        if target.const:
            cmd += [f"-Wl,--defsym=__const_origin={target.const[0]:#x}",
                    f"-Wl,--defsym=__const_size={target.const[1]:#x}"]
    else:
        cmd += ["--specs=picolibc.specs", "--oslib=semihost", "--crt0=semihost",
                f"-Wl,--defsym=__flash={code_origin:#x}",
                f"-Wl,--defsym=__flash_size={code_size:#x}",
                f"-Wl,--defsym=__ram={ram_origin:#x}",
                f"-Wl,--defsym=__ram_size={ram_size:#x}"]
    cmd += list(extra_flags)
    cmd += [str(s) for s in sources]
    cmd += ["-o", str(elf)]
    return cmd


def build(target, sources, elf, include_dirs=(), defines=(), opt="-O2", extra_flags=(),
          with_harness=True, cache_dir=None, jobs=None, program_defines=()):
    """Compile and link `sources` (+ the harness) into `elf`; returns its path.

    `defines` apply to every source, `program_defines` only to sources
    outside tflm_caps_ops (the test program), so that changing a test
    setting does not rebuild the kernel library.  Each object is cached in
    `cache_dir` (default: next to the ELF) under a digest of the source, its
    flags and the headers it includes (gcc -MM); compiles run in parallel.
    Raises McuError with the compiler output on failure."""
    target = get_target(target) if isinstance(target, str) else target
    missing = missing_tools(target)
    if missing:
        raise McuError(f"{target.name}: toolchain not installed: {', '.join(missing)}")
    elf = Path(elf)
    cache = Path(cache_dir) if cache_dir else elf.parent / ".objcache"
    cache.mkdir(parents=True, exist_ok=True)
    all_sources = [Path(p) for p in sources] + (harness_sources(target) if with_harness else [])
    link = compile_command(target, [], elf, include_dirs, defines, opt, extra_flags)
    flags = [a for a in link if a not in ("-o", str(elf))]
    compile_flags = [a for a in flags[1:] if not a.startswith(("-Wl,", "-T", "-nostartfiles"))]
    ops = str(OPS_DIR.resolve())

    def compile_one(src):
        own = [] if str(src.resolve()).startswith(ops) else [f"-D{d}" for d in program_defines]
        cflags = [*compile_flags, *own, f"-I{src.parent}"]
        deps = subprocess.run([flags[0], *cflags, "-MM", str(src)], capture_output=True,
                              text=True)
        if deps.returncode != 0:
            raise McuError(f"{target.name}: preprocessing {src} failed:\n{deps.stderr}")
        h = hashlib.sha1("\0".join(cflags).encode())
        for dep in deps.stdout.replace("\\\n", " ").split()[1:]:
            h.update(dep.encode())
            h.update(Path(dep).read_bytes())
        obj = cache / f"{src.stem}-{h.hexdigest()[:20]}.o"
        if not obj.exists():
            cmd = [flags[0], *cflags, "-c", str(src), "-o", str(obj) + ".tmp"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise McuError(f"{target.name}: compiling {src} failed:\n{' '.join(cmd)}\n"
                               f"{proc.stdout}{proc.stderr}")
            os.replace(str(obj) + ".tmp", obj)
        return obj

    workers = jobs or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        objects = list(pool.map(compile_one, all_sources))
    cmd = [flags[0], *[a for a in flags[1:] if not a.startswith("-I") and not a.startswith("-D")],
           *[str(o) for o in objects], "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise McuError(f"{target.name}: linking {elf} failed:\n{' '.join(cmd)}\n"
                       f"{proc.stdout}{proc.stderr}")
    return elf


def qemu_command(target, elf):
    target = get_target(target) if isinstance(target, str) else target
    cmd = [tools(target)[1], "-M", target.board, "-nographic", "-monitor", "none",
           "-semihosting-config", "enable=on,target=native",
           "-icount", "shift=0", "-kernel", str(elf)]
    if target.arch == "riscv":
        cmd[3:3] = ["-bios", "none"]
    return cmd


def run(target, elf, timeout=120.0):
    """Run `elf` under QEMU with deterministic instruction counting.
    Returns a RunResult (stdout and stderr merged: picolibc writes to stderr)."""
    target = get_target(target) if isinstance(target, str) else target
    cmd = qemu_command(target, elf)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace")
        raise McuError(f"{target.name}: {elf} did not finish within {timeout:.0f} s "
                       f"under {' '.join(cmd)}; output so far:\n{out}") from None
    return RunResult(target.name, proc.returncode, proc.stdout.decode(errors="replace"),
                     time.monotonic() - start)


_RECORD = re.compile(r"^(?P<tag>[A-Z_]+)\s+(?P<body>.*)$")


def parse_records(output, tag):
    """Lines ``TAG key=value key=value ...`` -> list of dicts (ints where
    the value is an integer)."""
    rows = []
    for line in output.splitlines():
        m = _RECORD.match(line.strip())
        if not m or m.group("tag") != tag:
            continue
        row = {}
        for field in m.group("body").split():
            key, sep, value = field.partition("=")
            if not sep:
                continue
            row[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
        rows.append(row)
    return rows


def counts_to_instructions(target, raw):
    """Raw counter value printed by the firmware -> instructions."""
    target = get_target(target) if isinstance(target, str) else target
    return int(round(raw * target.instructions_per_count))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Build (and optionally run under QEMU) a bare-metal image with the "
                    "tflm-caps kernels and the test harness.")
    parser.add_argument("sources", nargs="*", help="extra C sources (your main)")
    parser.add_argument("--target", default="cortex-m7", choices=sorted(TARGETS))
    parser.add_argument("--backend", choices=BACKENDS + ("none",),
                        help="kernel library to link (default: the target's optimized one)")
    parser.add_argument("-D", "--define", action="append", default=[], metavar="NAME[=VALUE]")
    parser.add_argument("-I", "--include", action="append", default=[], metavar="DIR")
    parser.add_argument("-O", "--opt", default="2", help="optimization level (default 2)")
    parser.add_argument("-o", "--output", help="ELF path (default: a temporary directory)")
    parser.add_argument("--run", action="store_true", help="run the image under QEMU")
    parser.add_argument("--timeout", type=float, default=120.0, help="emulation timeout (s)")
    parser.add_argument("--list-targets", action="store_true")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    if args.list_targets:
        rows = [dict(name=t.name, board=t.board, backend=t.backend, cflags=list(t.cflags),
                     instructions_per_count=t.instructions_per_count,
                     missing_tools=missing_tools(t), note=t.note) for t in TARGETS.values()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                state = "missing " + ", ".join(r["missing_tools"]) if r["missing_tools"] else "ok"
                print(f"{r['name']:<11} {r['board']:<11} {r['backend']:<9} {state:<8} {r['note']}")
        return 0
    if not args.sources:
        parser.error("give at least one source file (the image's main)")

    target = get_target(args.target)
    backend = args.backend or target.backend
    sources = [Path(s) for s in args.sources]
    if backend != "none":
        sources += kernel_sources(backend)
    out_dir = None
    if args.output:
        elf = Path(args.output)
    else:
        out_dir = tempfile.mkdtemp(prefix="tflm_caps_fw_")
        elf = Path(out_dir) / "image.elf"
    try:
        build(target, sources, elf, args.include, args.define, f"-O{args.opt}")
        report = {"target": target.name, "backend": backend, "elf": str(elf)}
        if args.run:
            result = run(target, elf, args.timeout)
            report.update(returncode=result.returncode, seconds=round(result.seconds, 3),
                          output=result.output)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            if args.run:
                sys.stdout.write(report["output"])
                print(f"[{target.name}] exit code {report['returncode']} "
                      f"in {report['seconds']} s", file=sys.stderr)
            else:
                print(elf)
        return report.get("returncode", 0)
    except McuError as exc:
        print(f"mcu_build: {exc}", file=sys.stderr)
        return 2
    finally:
        if out_dir and args.run:
            shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
