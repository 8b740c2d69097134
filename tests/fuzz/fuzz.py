"""Build and run the native fuzz harnesses of tests/fuzz (docs/fuzzing.md).

Harnesses (one libFuzzer target each, ASan + UBSan, corpus in corpus/NAME):
  options   FlexBuffer options reader, each operator's Init/Prepare/Eval
  prepare   each operator's Prepare (then Eval) over arbitrary tensors
  kernels   the kernels' public C API, all three backends side by side

    python tests/fuzz/fuzz.py build [NAME ...]
    python tests/fuzz/fuzz.py run NAME [--time SECONDS | --runs N]
    python tests/fuzz/fuzz.py replay NAME [PATH ...]

`run` needs clang with the libFuzzer runtime; `replay` runs inputs through
the same harness code under any C compiler with sanitizers (gcc by
default), without libFuzzer.  Build products go to build/fuzz/ (or
--build-dir); run output (grown corpus, crash artifacts) to
build/fuzz/run-NAME/ (or --work-dir).
"""
import argparse
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OPS = ROOT / "tflm_caps_ops"
CORPUS = HERE / "corpus"
DEFAULT_BUILD = ROOT / "build" / "fuzz"

HARNESSES = ("options", "prepare", "kernels")
# kernels: each backend's symbols renamed with its prefix so all three link
# into one binary; the RISC-V team runs 8 cores one after the other.
BACKENDS = {"portable": ("pt_", ()), "cortex_m": ("cm_", ()),
            "riscv": ("rv_", ("-DCAPS_NN_NUM_CORES=8",))}
MAX_LEN = {"options": 2048, "prepare": 1024, "kernels": 1024}

INCLUDES = ["-I", str(OPS / "include"), "-I", str(OPS), "-I", str(HERE)]
COMMON_FLAGS = ["-g", "-O1", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
                "-Wall", "-Wextra", "-Wno-unused-parameter"]
C_FLAGS = ["-std=c99"]
CXX_FLAGS = ["-std=c++17", "-DTFLM_CAPS_HOST_ABI=1"]
SANITIZE_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:symbolize=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


class ToolchainMissing(RuntimeError):
    """The compiler (or libFuzzer runtime) a build needs is not installed."""


def _sources(sub, pattern):
    return sorted((OPS / sub).glob(pattern))


def _headers():
    found = []
    for d in (OPS / "include" / "tflm_caps", OPS / "tflm", OPS / "host", HERE):
        found += sorted(d.glob("*.h"))
    return found


@dataclasses.dataclass
class Toolchain:
    """Compilers and sanitizer flags of one build flavour.

    fuzz: clang + libFuzzer; replay: any compiler + replay_main.c."""
    mode: str
    cc: str
    cxx: str
    obj_sanitize: tuple
    link_sanitize: tuple

    @classmethod
    def get(cls, mode):
        if mode == "fuzz":
            cc, cxx = os.environ.get("FUZZ_CC", "clang"), os.environ.get("FUZZ_CXX", "clang++")
            tc = cls(mode, cc, cxx, ("-fsanitize=fuzzer-no-link,address,undefined",),
                     ("-fsanitize=fuzzer,address,undefined",))
        elif mode == "replay":
            cc, cxx = os.environ.get("REPLAY_CC", "gcc"), os.environ.get("REPLAY_CXX", "g++")
            tc = cls(mode, cc, cxx, ("-fsanitize=address,undefined",),
                     ("-fsanitize=address,undefined",))
        else:
            raise ValueError(f"unknown build mode {mode!r}")
        for tool in (tc.cc, tc.cxx, "nm", "objcopy"):
            if shutil.which(tool) is None:
                raise ToolchainMissing(f"{tool} is not installed (needed for the {mode} build)")
        if mode == "fuzz":
            res = subprocess.run([tc.cc, "-print-runtime-dir"], capture_output=True, text=True)
            runtime = Path(res.stdout.strip())
            if res.returncode != 0 or not list(runtime.glob("libclang_rt.fuzzer*")):
                raise ToolchainMissing(f"the libFuzzer runtime of {tc.cc} is not installed "
                                       f"(Debian: libclang-rt-<version>-dev)")
        return tc


def _run(cmd, **kw):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"command failed ({res.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{res.stdout}{res.stderr}")
    return res


def _compile(tc, src, obj_dir, extra=()):
    """Object of src (cached by the hash of flags, source and every header)."""
    is_cxx = src.suffix in (".cc", ".cpp")
    flags = [*COMMON_FLAGS, *(CXX_FLAGS if is_cxx else C_FLAGS), *tc.obj_sanitize, *INCLUDES,
             *extra]
    h = hashlib.sha256(" ".join([tc.cc, tc.cxx, *flags]).encode())
    h.update(src.read_bytes())
    for header in _headers():
        h.update(header.read_bytes())
    obj = obj_dir / f"{src.stem}-{h.hexdigest()[:16]}.o"
    if not obj.exists():
        obj_dir.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_suffix(".tmp.o")
        _run([tc.cxx if is_cxx else tc.cc, *flags, "-c", src, "-o", tmp])
        tmp.replace(obj)
    return obj


def _renamed_backend(tc, name, obj_dir):
    """A backend's objects with every symbol it defines renamed prefix+name."""
    prefix, defines = BACKENDS[name]
    objs = [_compile(tc, src, obj_dir, defines) for src in _sources(f"src/{name}", "*.c")]
    defined = set()
    for obj in objs:
        for line in _run(["nm", "--defined-only", "-g", "-P", obj]).stdout.splitlines():
            sym = line.split()[0]
            if sym.startswith("caps_"):
                defined.add(sym)
    out_dir = obj_dir / f"renamed-{name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    mapping = out_dir / "symbols.map"
    mapping.write_text("".join(f"{s} {prefix}{s}\n" for s in sorted(defined)))
    renamed = []
    for obj in objs:
        out = out_dir / obj.name
        _run(["objcopy", f"--redefine-syms={mapping}", obj, out])
        renamed.append(out)
    return renamed


def build(name, mode="fuzz", build_dir=DEFAULT_BUILD):
    """Path of the harness binary (rebuilt only when a source changed)."""
    if name not in HARNESSES:
        raise ValueError(f"unknown harness {name!r}; known: {', '.join(HARNESSES)}")
    tc = Toolchain.get(mode)
    obj_dir = Path(build_dir) / mode / "obj"
    common = [_compile(tc, s, obj_dir) for s in _sources("src/common", "*.c")]
    if name == "kernels":
        objs = [_compile(tc, HERE / "fuzz_kernels.c", obj_dir), *common]
        for backend in BACKENDS:
            objs += _renamed_backend(tc, backend, obj_dir)
        linker = tc.cc
    else:
        glue = [_compile(tc, s, obj_dir) for s in _sources("tflm", "*.cc")]
        portable = [_compile(tc, s, obj_dir) for s in _sources("src/portable", "*.c")]
        objs = [_compile(tc, HERE / f"fuzz_{name}.cc", obj_dir),
                _compile(tc, HERE / "fuzz_host.cc", obj_dir), *glue, *common, *portable]
        linker = tc.cxx
    if mode == "replay":
        objs.append(_compile(tc, HERE / "replay_main.c", obj_dir))
    exe = Path(build_dir) / mode / f"fuzz_{name}"
    stamp = hashlib.sha256(" ".join(sorted(str(o) for o in objs)).encode()).hexdigest()
    stamp_file = exe.with_suffix(".inputs")
    if not exe.exists() or not stamp_file.exists() or stamp_file.read_text() != stamp:
        _run([linker, *tc.link_sanitize, *objs, "-o", exe])
        stamp_file.write_text(stamp)
    return exe


@dataclasses.dataclass
class RunResult:
    name: str
    returncode: int
    inputs: int          # inputs executed
    exec_per_sec: int
    new_units: int       # inputs added to the working corpus
    peak_rss_mb: int
    artifacts: list      # crash / timeout / leak reproducers written
    log: str

    @property
    def findings(self):
        return len(self.artifacts) + (1 if self.returncode != 0 and not self.artifacts else 0)

    def summary(self):
        return (f"{self.name}: {self.inputs:,} inputs, {self.exec_per_sec:,} exec/s, "
                f"{self.findings} finding(s), corpus +{self.new_units}, "
                f"peak RSS {self.peak_rss_mb} MB")


def _stat(log, key):
    m = re.findall(rf"stat::{key}:\s+(\d+)", log)
    return int(m[-1]) if m else 0


def run(name, binary, work_dir, seconds=None, runs=None, seed=None, extra=()):
    """Fuzz `name` from its committed corpus; new inputs go to work_dir/corpus,
    reproducers of findings to work_dir/artifacts, libFuzzer's output to
    work_dir/fuzz.log."""
    work_dir = Path(work_dir)
    corpus, artifacts = work_dir / "corpus", work_dir / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    cmd = [str(binary), str(corpus), str(CORPUS / name), f"-artifact_prefix={artifacts}/",
           f"-max_len={MAX_LEN[name]}", "-timeout=25",
           # Some kernels count ASan's shadow mappings as resident, so process
           # RSS says nothing about the harness: bound single allocations
           # instead (an input that makes a kernel ask for gigabytes is a
           # finding) and leave leaks to LeakSanitizer.
           "-rss_limit_mb=0", "-malloc_limit_mb=512",
           "-print_final_stats=1"]
    if seconds is not None:
        cmd.append(f"-max_total_time={int(seconds)}")
    if runs is not None:
        cmd.append(f"-runs={int(runs)}")
    if seed is not None:
        cmd.append(f"-seed={int(seed)}")
    cmd += list(extra)
    log_path = work_dir / "fuzz.log"  # follow a long run with tail -f
    with open(log_path, "w") as log_file:
        res = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                             env={**os.environ, **SANITIZE_ENV})
    log = log_path.read_text(errors="replace")
    new_artifacts = sorted(set(artifacts.iterdir()) - before)
    return RunResult(name, res.returncode, _stat(log, "number_of_executed_units"),
                     _stat(log, "average_exec_per_sec"), _stat(log, "new_units_added"),
                     _stat(log, "peak_rss_mb"), new_artifacts, log)


def replay(name, paths, build_dir=DEFAULT_BUILD):
    """Runs the inputs at `paths` (files or directories) through the replay
    build of `name`; returns the CompletedProcess."""
    exe = build(name, "replay", build_dir)
    return subprocess.run([str(exe), *map(str, paths)], capture_output=True, text=True,
                          errors="replace", env={**os.environ, **SANITIZE_ENV})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", default=str(DEFAULT_BUILD))
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build harnesses (all by default)")
    p_build.add_argument("names", nargs="*", metavar="NAME", help=", ".join(HARNESSES))
    p_build.add_argument("--replay", action="store_true", help="the replay build (no libFuzzer)")
    p_run = sub.add_parser("run", help="fuzz one harness")
    p_run.add_argument("name", choices=HARNESSES)
    p_run.add_argument("--time", type=int, help="seconds to fuzz (default 60 unless --runs)")
    p_run.add_argument("--runs", type=int, help="stop after this many inputs")
    p_run.add_argument("--seed", type=int)
    p_run.add_argument("--work-dir", help="grown corpus and crash artifacts "
                       "(default BUILD_DIR/run-NAME)")
    p_run.add_argument("libfuzzer_args", nargs="*", help="extra libFuzzer flags, after --")
    p_replay = sub.add_parser("replay", help="run inputs without libFuzzer (gcc build)")
    p_replay.add_argument("name", choices=HARNESSES)
    p_replay.add_argument("paths", nargs="*", help="files or directories "
                          "(default: the committed corpus)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name in args.names or HARNESSES:
                print(build(name, "replay" if args.replay else "fuzz", args.build_dir))
            return 0
        if args.command == "replay":
            res = replay(args.name, args.paths or [CORPUS / args.name], args.build_dir)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr[-20000:])
            return res.returncode
        exe = build(args.name, "fuzz", args.build_dir)
        seconds = args.time if args.time is not None or args.runs is not None else 60
        work = Path(args.work_dir or Path(args.build_dir) / f"run-{args.name}")
        result = run(args.name, exe, work, seconds=seconds, runs=args.runs, seed=args.seed,
                     extra=args.libfuzzer_args)
        if result.returncode != 0:
            sys.stderr.write(result.log[-20000:])
        print(result.summary())
        for a in result.artifacts:
            print(f"  reproducer: {a}")
        return 0 if result.findings == 0 else 1
    except ToolchainMissing as exc:
        print(f"fuzz.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
