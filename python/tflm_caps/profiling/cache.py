"""The user cache directory holding TFLM library builds.

One entry per (TFLM tree commit and local changes, target, build flags,
compiler version): ``<cache>/tflm/<target>-<commit>-<digest>/`` with the
copy of the operators TFLM compiled (``ext/``), TFLM's objects and library
(``gen/``), the make log and ``build.json``.  The operators are not part of
the key: their copy is synchronised and make recompiles what changed, so a
new tflm-caps version reuses the 30-minute TFLM build.
"""
import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

CACHE_ENV = "TFLM_CAPS_CACHE_DIR"
# Bumped when the layout of an entry or the way it is built changes.
LAYOUT_VERSION = 1


def cache_root(override=None):
    """`override`, else $TFLM_CAPS_CACHE_DIR, else $XDG_CACHE_HOME/tflm-caps,
    else ~/.cache/tflm-caps."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tflm-caps"


def key_fields(tree, target, make_vars, compiler):
    """What a cached library depends on (besides the operators)."""
    return {"layout": LAYOUT_VERSION, "tree": tree.identity, "target": "cortex_m_generic",
            "target_arch": target.tflm_arch, "optimized_kernel_dir": "cmsis_nn",
            "make_vars": sorted(make_vars), "compiler": compiler}


def entry_name(tree, target, make_vars, compiler):
    fields = key_fields(tree, target, make_vars, compiler)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"{target.name}-{tree.commit[:10]}-{digest}"


def entry_dir(root, tree, target, make_vars, compiler):
    return Path(root) / "tflm" / entry_name(tree, target, make_vars, compiler)


@contextlib.contextmanager
def locked(directory):
    """Exclusive lock on a cache entry (two profiles of the same target wait
    for each other instead of building into the same folder)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tree_digest(directory):
    """Digest of every file's relative path and contents below `directory`."""
    h = hashlib.sha256()
    directory = Path(directory)
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def sync_tree(src, dst):
    """Make `dst` a copy of `src`, rewriting only files whose contents differ
    (unchanged files keep their timestamps, so make does not rebuild them).
    Returns True when anything changed."""
    src, dst = Path(src), Path(dst)
    changed = False
    wanted = set()
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        wanted.add(rel)
        out = dst / rel
        data = path.read_bytes()
        if out.is_file() and out.read_bytes() == data:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        changed = True
    if dst.is_dir():
        for path in sorted(dst.rglob("*"), reverse=True):
            if path.is_file() and path.relative_to(dst) not in wanted:
                path.unlink()
                changed = True
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return changed
