"""Build bare-metal images of the kernels for the emulated cores.

The kernel library is assembled the way TFLM's OPTIMIZED_KERNEL_DIR works:
``src/common`` + the backend directory + every portable source the backend
does not replace by a file of the same name (``Makefile_internal.inc`` and
``CMakeLists.txt`` of the operator sources follow the same rule).  The
harness (``harness/``: startup, linker script, semihosting, instruction
counter) is linked into every image.

Also a command line, to build (and run) an image around your own main:

    python -m tflm_caps.baremetal.build --target cortex-m7 --run my_main.c
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tflm_caps import ops_sources
from tflm_caps.baremetal import McuError
from tflm_caps.baremetal import qemu
from tflm_caps.baremetal.targets import TARGETS, get_target, missing_tools

HARNESS_DIR = Path(__file__).resolve().parent / "harness"
# The bare-metal kernel-vector driver: runs and checks an embedded
# vectors.write_header() blob, counts each call's instructions.
KERNEL_VECTORS_MAIN = HARNESS_DIR / "kernel_vectors_main.c"

BACKENDS = ("portable", "cortex_m", "helium", "riscv")


def kernel_sources(backend):
    """C sources of the kernel library for `backend` (TFLM-style override:
    a backend file replaces the portable file of the same name)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    src = ops_sources() / "src"
    # the optimized backends' fast exact primitives, built only with one of them
    backend_math = src / "common" / "caps_nn_backend_math.c"
    sources = [p for p in sorted((src / "common").glob("*.c")) if p != backend_math]
    portable = sorted((src / "portable").glob("*.c"))
    if backend == "portable":
        return sources + portable
    optimized = sorted((src / backend).glob("*.c"))
    replaced = {p.name for p in optimized}
    return sources + [backend_math] + optimized + [p for p in portable if p.name not in replaced]


def harness_sources(target):
    """Startup code and instruction counter linked into every image."""
    if get_target(target).arch == "arm":
        return [HARNESS_DIR / "cortex_m" / "startup_cortex_m.c",
                HARNESS_DIR / "cortex_m" / "counter_systick.c"]
    return [HARNESS_DIR / "riscv" / "counter_minstret.c"]


def _compile_flags(target, include_dirs, defines, opt, extra_flags):
    flags = [*target.cflags, opt, "-std=c99", "-g", "-Wall", "-Wextra",
             "-Wno-unused-parameter", "-ffunction-sections", "-fdata-sections"]
    flags += [f"-I{p}" for p in (HARNESS_DIR / "common", ops_sources() / "include",
                                 *include_dirs)]
    flags += [f"-D{d}" for d in defines]
    if target.arch == "arm":
        flags += ["-mthumb", "--specs=rdimon.specs"]
    else:
        flags += ["--specs=picolibc.specs", "--oslib=semihost", "--crt0=semihost"]
    return flags + list(extra_flags)


def _link_flags(target):
    code_origin, code_size = target.code
    ram_origin, ram_size = target.ram
    if target.arch == "arm":
        flags = ["-Wl,--gc-sections", "-nostartfiles",
                 f"-T{HARNESS_DIR / 'cortex_m' / 'cortex_m.ld'}",
                 f"-Wl,--defsym=__code_origin={code_origin:#x}",
                 f"-Wl,--defsym=__code_size={code_size:#x}",
                 f"-Wl,--defsym=__ram_origin={ram_origin:#x}",
                 f"-Wl,--defsym=__ram_size={ram_size:#x}"]
        if target.const:
            flags += [f"-Wl,--defsym=__const_origin={target.const[0]:#x}",
                      f"-Wl,--defsym=__const_size={target.const[1]:#x}"]
        return flags
    return ["-Wl,--gc-sections",
            f"-Wl,--defsym=__flash={code_origin:#x}",
            f"-Wl,--defsym=__flash_size={code_size:#x}",
            f"-Wl,--defsym=__ram={ram_origin:#x}",
            f"-Wl,--defsym=__ram_size={ram_size:#x}"]


def build(target, sources, elf, include_dirs=(), defines=(), opt="-O2", extra_flags=(),
          cache_dir=None, program_defines=()):
    """Compile and link `sources` (+ the harness) into `elf`; returns its path.

    `defines` apply to every source, `program_defines` only to sources
    outside the operator sources (the test program), so that changing a
    test setting does not rebuild the kernel library.  Each object is cached
    in `cache_dir` (default: next to the ELF) under a digest of the source,
    its flags and the headers it includes (gcc -MM); compiles run in
    parallel.  Raises McuError with the compiler output on failure."""
    target = get_target(target)
    missing = missing_tools(target)
    if missing:
        raise McuError(f"{target.name}: toolchain not installed: {', '.join(missing)} "
                       "(scripts/install.sh installs it)")
    cc = target.tools[0]
    elf = Path(elf)
    cache = Path(cache_dir) if cache_dir else elf.parent / ".objcache"
    cache.mkdir(parents=True, exist_ok=True)
    all_sources = [Path(p) for p in sources] + harness_sources(target)
    compile_flags = _compile_flags(target, include_dirs, defines, opt, extra_flags)
    ops = str(ops_sources().resolve())

    def compile_one(src):
        own = [] if str(src.resolve()).startswith(ops) else [f"-D{d}" for d in program_defines]
        cflags = [*compile_flags, *own, f"-I{src.parent}"]
        deps = subprocess.run([cc, *cflags, "-MM", str(src)], capture_output=True, text=True)
        if deps.returncode != 0:
            raise McuError(f"{target.name}: preprocessing {src} failed:\n{deps.stderr}")
        h = hashlib.sha1("\0".join(cflags).encode())
        for dep in deps.stdout.replace("\\\n", " ").split()[1:]:
            h.update(dep.encode())
            h.update(Path(dep).read_bytes())
        obj = cache / f"{src.stem}-{h.hexdigest()[:20]}.o"
        if not obj.exists():
            cmd = [cc, *cflags, "-c", str(src), "-o", str(obj) + ".tmp"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise McuError(f"{target.name}: compiling {src} failed:\n{' '.join(cmd)}\n"
                               f"{proc.stdout}{proc.stderr}")
            os.replace(str(obj) + ".tmp", obj)
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, all_sources))
    cmd = [cc, *[a for a in compile_flags if not a.startswith(("-I", "-D"))],
           *_link_flags(target), *[str(o) for o in objects], "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise McuError(f"{target.name}: linking {elf} failed:\n{' '.join(cmd)}\n"
                       f"{proc.stdout}{proc.stderr}")
    return elf


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tflm_caps.baremetal.build",
        description="Build (and optionally run under QEMU) a bare-metal image with the "
                    "tflm-caps kernels and the harness (semihosting printf, "
                    "mcu_counter_start/mcu_counter_read from mcu_harness.h).")
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
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout and nothing else")
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
    for s in args.sources:
        if not os.path.isfile(s):
            parser.error(f"source not found: {s}")

    target = get_target(args.target)
    backend = args.backend or target.backend
    sources = [Path(s) for s in args.sources]
    if backend != "none":
        sources += kernel_sources(backend)
    out_dir = None
    if args.output:
        elf = Path(args.output)
    else:
        out_dir = tempfile.mkdtemp(prefix="tflm_caps_baremetal_")
        elf = Path(out_dir) / "image.elf"
    try:
        build(target, sources, elf, args.include, args.define, f"-O{args.opt}")
        report = {"target": target.name, "backend": backend, "elf": str(elf)}
        if args.run:
            result = qemu.run(target, elf, args.timeout)
            report.update(returncode=result.returncode, seconds=round(result.seconds, 3),
                          output=result.output)
        if args.json:
            print(json.dumps(report, indent=2))
        elif args.run:
            sys.stdout.write(report["output"])
            print(f"[{target.name}] exit code {report['returncode']} "
                  f"in {report['seconds']} s", file=sys.stderr)
        else:
            print(elf)
        return report.get("returncode", 0)
    except McuError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if out_dir and args.run:
            shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
