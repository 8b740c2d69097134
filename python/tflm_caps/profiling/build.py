"""TFLM's library with CMSIS-NN and the tflm-caps operators, built by TFLM's
own make (``EXTERNAL_DIR`` + ``OPTIMIZED_KERNEL_DIR=cmsis_nn``) into the
user cache, plus the compiler flags it was built with (the profiling
firmware is compiled with the same ones)."""
import dataclasses
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

from tflm_caps.profiling import cache as _cache
from tflm_caps.profiling import tree as _tree

OPS_NAME = "tflm_caps_ops"
_QUERIED = ("CXXFLAGS", "CCFLAGS", "INCLUDES", "MICROLITE_LIB_PATH", "LDFLAGS", "MICROLITE_LIBS")


class BuildError(RuntimeError):
    """TFLM's make failed; the message holds the end of its log."""


@dataclasses.dataclass
class LibraryBuild:
    directory: Path          # the cache entry
    library: Path            # libtensorflow-microlite.a
    cxxflags: list
    ccflags: list
    includes: list           # absolute -I flags
    ldflags: list
    libs: list
    ops_sources: list        # file names of the operator sources compiled into the library
    compiled: bool           # False: reused as it was
    seconds: float

    @property
    def cpu_flags(self):
        """Code-generation flags shared by every object of the image."""
        keep = ("-mcpu=", "-mfpu=", "-mfloat-abi=", "-mthumb", "-mlittle-endian")
        return [f for f in self.cxxflags if f.startswith(keep)]


def make_command(tree, target, entry, make_vars, jobs=None, goal="microlite"):
    cmd = ["make", "-f", _tree.MAKEFILE, "TARGET=cortex_m_generic",
           f"TARGET_ARCH={target.tflm_arch}", "OPTIMIZED_KERNEL_DIR=cmsis_nn",
           f"TARGET_TOOLCHAIN_ROOT={_tree.toolchain_root()}",
           f"EXTERNAL_DIR={Path(entry) / 'ext'}", f"GENDIR={Path(entry) / 'gen'}/",
           *make_vars]
    if jobs:
        cmd.append(f"-j{int(jobs)}")
    return cmd + ([goal] if isinstance(goal, str) else list(goal))


def parse_printed(text):
    """Values printed by TFLM's ``make print-NAME`` goals: {NAME: value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith(" ") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        out[name.strip()] = value.strip()
    return out


def absolute_includes(flags, root):
    """-I flags with tree-relative directories made absolute."""
    out = []
    for flag in flags:
        if flag.startswith("-I"):
            path = Path(flag[2:])
            flag = "-I" + str(path if path.is_absolute() else (Path(root) / path).resolve())
        out.append(flag)
    return out


def _stale_ops_objects(gen):
    """Objects TFLM compiled from the operator copy (TFLM's make tracks no
    header dependencies, so all of them are rebuilt when any operator file
    changes)."""
    return [p for p in Path(gen).rglob("*.o") if f"/ext/{OPS_NAME}/" in str(p)]


def _count_compiles(tree, target, entry, make_vars):
    proc = subprocess.run(make_command(tree, target, entry, make_vars, goal=["-n", "microlite"]),
                          cwd=tree.root, capture_output=True, text=True)
    return sum(1 for line in proc.stdout.splitlines() if " -c " in line)


def _run_make(tree, target, entry, make_vars, jobs, progress):
    log_path = Path(entry) / "build.log"
    total = _count_compiles(tree, target, entry, make_vars) if progress else 0
    cmd = make_command(tree, target, entry, make_vars, jobs or os.cpu_count() or 1)
    with open(log_path, "w") as log:
        log.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=tree.root, stdout=log, stderr=subprocess.STDOUT)
        bar = None
        if progress and total:
            from tqdm import tqdm
            bar = tqdm(total=total, desc=f"TFLM library {target.name}", unit="file",
                       leave=False)
        gen = Path(entry) / "gen"
        before = len(list(gen.rglob("*.o"))) if gen.is_dir() else 0
        while proc.poll() is None:
            time.sleep(2)
            if bar is not None:
                done = len(list(gen.rglob("*.o"))) - before if gen.is_dir() else 0
                bar.n = min(done, total)
                bar.refresh()
        if bar is not None:
            bar.close()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        raise BuildError(f"TFLM's make failed for {target.name} (full log: {log_path}):\n"
                         + "\n".join(tail))


def query_flags(tree, target, entry, make_vars):
    """The flags TFLM's make builds with for this target."""
    proc = subprocess.run(make_command(tree, target, entry, make_vars,
                                       goal=[f"print-{n}" for n in _QUERIED]),
                          cwd=tree.root, capture_output=True, text=True)
    values = parse_printed(proc.stdout)
    if proc.returncode != 0 or not all(n in values for n in _QUERIED):
        raise BuildError(f"cannot read TFLM's build flags (make print-...):\n{proc.stderr[-2000:]}")
    return values


def build_library(tree, target, ops, *, cache_dir=None, make_vars=(), jobs=None, progress=False):
    """LibraryBuild for `target` from the TFLM tree `tree` (TreeInfo) and the
    operator sources in `ops`, reusing the cache entry when it is current."""
    start = time.monotonic()
    make_vars = [str(v) for v in make_vars]
    compiler = _tree.toolchain_version()
    entry = _cache.entry_dir(_cache.cache_root(cache_dir), tree, target, make_vars, compiler)
    with _cache.locked(entry):
        stamp_path = entry / "build.json"
        stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
        _cache.sync_tree(ops, entry / "ext" / OPS_NAME)
        ops_digest = _cache.tree_digest(entry / "ext" / OPS_NAME)
        library = Path(stamp.get("library", entry / "gen" / "lib" / "none"))
        current = stamp.get("ops_digest") == ops_digest and library.is_file()
        if not current:
            if stamp.get("ops_digest") != ops_digest:
                for obj in _stale_ops_objects(entry / "gen"):
                    obj.unlink()
                for lib in (entry / "gen" / "lib").glob("*.a"):
                    lib.unlink()
            _run_make(tree, target, entry, make_vars, jobs, progress)
            values = query_flags(tree, target, entry, make_vars)
            library = Path(values["MICROLITE_LIB_PATH"])
            if not library.is_absolute():
                library = (tree.root / library).resolve()
            if not library.is_file():
                raise BuildError(f"TFLM's make succeeded but {library} is missing")
            stamp = {"key": _cache.key_fields(tree, target, make_vars, compiler),
                     "ops_digest": ops_digest, "library": str(library),
                     "flags": {n: values[n] for n in _QUERIED}, "built": time.time()}
            stamp_path.write_text(json.dumps(stamp, indent=2))
    flags = stamp["flags"]
    ops_sources = sorted(p.name for p in (entry / "ext" / OPS_NAME).rglob("*")
                         if p.suffix in (".c", ".cc") and p.parent.name != "host")
    return LibraryBuild(entry, library, shlex.split(flags["CXXFLAGS"]),
                        shlex.split(flags["CCFLAGS"]),
                        absolute_includes(shlex.split(flags["INCLUDES"]), tree.root),
                        shlex.split(flags["LDFLAGS"]), shlex.split(flags["MICROLITE_LIBS"]),
                        ops_sources, not current, time.monotonic() - start)
