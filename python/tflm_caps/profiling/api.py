"""``tflm_caps.profiling.profile()``: a model on an emulated Cortex-M core
with the user's TFLM tree: instructions per operator and per inference,
the true minimum arena on the target, flash, and bit-exactness against the
host TFLM runner."""
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tflm_caps import tflite
from tflm_caps.profiling import build as _build
from tflm_caps.profiling import emulator as _emu
from tflm_caps.profiling import firmware as _fw
from tflm_caps.profiling import flash as _flash
from tflm_caps.profiling import sources as _sources
from tflm_caps.profiling import targets as _targets
from tflm_caps.profiling import tree as _tree


@dataclasses.dataclass
class OpProfile:
    index: int
    name: str             # builtin name (CONV_2D) or custom code (TFLMCaps_Squash)
    kind: str             # "builtin" or "custom"
    output_shape: list
    instructions: float   # mean over the profiled inferences
    min_instructions: float
    max_instructions: float


@dataclasses.dataclass
class ProfileResult:
    model: str
    target: str
    board: str
    tree: str                     # tree commit (+ digest of local changes)
    ops: list                     # OpProfile, execution order
    invoke_instructions: float    # mean of the whole Invoke
    invoke_min: float
    invoke_max: float
    allocate_instructions: float  # AllocateTensors (includes the operators' Prepare)
    instructions_per_tick: float  # measured SysTick calibration
    profiler_overhead: float      # instructions an empty event counts
    arena: dict                   # target minimum, used, host figures
    flash: dict
    bit_exact: dict               # compared, identical, first mismatches
    build: dict                   # cache entry, reused or built, seconds
    images: int
    data: str
    seconds: float

    def to_json(self):
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def _model_bytes(model):
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "model"
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path.read_bytes(), path.name


def check_arguments(images, target):
    """ValueError for arguments that need no model or tree to refuse."""
    _targets.get_target(target)
    if isinstance(images, bool) or not isinstance(images, (int, np.integer)) or images < 1:
        raise ValueError(f"images must be a positive integer, got {images!r}")


def quantized_inputs(info, data, images):
    """(int arrays per model input, per invocation) of the first `images`
    held-out images of `data`, quantized as TFLite does; checks shapes."""
    from tflm_caps import data as caps_data
    from tflm_caps.runtime import quantize_like_tflite

    tensors = info.input_tensors()
    if len(tensors) != 1:
        raise ValueError(f"the profiler feeds images to single-input models; this one has "
                         f"{len(tensors)} inputs")
    t = tensors[0]
    if t.dtype is None or not np.issubdtype(t.dtype, np.integer) or t.quantization is None:
        raise ValueError(f"input {t.name!r} is {t.type_name}: the profiler runs quantized "
                         "(int8) models")
    ds = data if isinstance(data, caps_data.Dataset) else caps_data.load(data)
    want = tuple(int(d) for d in t.shape[1:])
    if tuple(ds.input_shape) != want:
        raise ValueError(f"data {ds.name!r} has {list(ds.input_shape)} images, the model "
                         f"expects {list(want)}")
    batch = int(t.shape[0]) if t.shape else 1
    if images > len(ds.x_test):
        raise ValueError(f"--images {images}: the held-out split of {ds.name!r} has "
                         f"{len(ds.x_test)} images")
    if images % batch:
        raise ValueError(f"--images {images} is not a multiple of the model's batch {batch}")
    scale, zero_point = t.quantization
    q = quantize_like_tflite(ds.x_test[:images], scale, zero_point, t.dtype)
    return [q[i:i + batch] for i in range(0, images, batch)], ds.name


def host_outputs(model_bytes, batches, progress=False):
    """Raw output bytes of the host TFLM runner for each invocation."""
    from tflm_caps.runtime import TFLMRunner

    steps = batches
    if progress:
        from tqdm import tqdm
        steps = tqdm(batches, desc="host TFLM", unit="inference", leave=False)
    with TFLMRunner(model_bytes) as runner:
        return [b"".join(np.ascontiguousarray(y).tobytes() for y in runner.invoke(x))
                for x in steps]


def op_profiles(info, run, per_tick):
    """OpProfile per top-level operator event, checked against the model."""
    top = [(k, tag) for k, depth, tag in run.events if depth == 0]
    ops = info.operators
    if [tag for _, tag in top] != [op.op_name for op in ops]:
        raise _emu.EmulatorError(
            "the operators the firmware ran do not match the model: "
            f"{[tag for _, tag in top]} vs {[op.op_name for op in ops]}")
    rows = []
    for (k, tag), op in zip(top, ops):
        ticks = np.array([inv[2][k] for inv in run.invocations], dtype=np.float64)
        shape = list(info.tensors[op.outputs[0]].shape) if op.outputs else []
        rows.append(OpProfile(op.index, tag, "custom" if op.custom_code else "builtin", shape,
                               float(ticks.mean() * per_tick), float(ticks.min() * per_tick),
                               float(ticks.max() * per_tick)))
    return rows



def compare_outputs(host, target):
    """Bit-exactness of the target's outputs against the host's."""
    mismatches = [n for n, want in enumerate(host) if target.get(n) != want]
    return {"compared": len(host), "identical": len(host) - len(mismatches),
            "mismatched_invocations": mismatches[:20]}


def profile(model, tflm_root, target="cortex-m7", *, images=1000, data="bundled",
            cache_dir=None, source_root=None, make_vars=(), jobs=None, timeout=None,
            arena_search=True, workdir=None, progress=False, log=None):
    """Profile `model` (.tflite path or bytes) on the emulated `target`.

    tflm_root: a tflite-micro checkout with its third-party downloads in
    place (never downloaded here).  images: held-out images of `data` run
    on the target and on the host runner.  cache_dir: where TFLM library
    builds are kept (default: the user cache, see cache.cache_root).
    workdir: keep the generated sources and image there (default: a
    temporary directory).  log: callable receiving progress messages.
    Returns a ProfileResult."""
    t0 = time.monotonic()
    say = log or (lambda msg: None)
    check_arguments(images, target)
    model_bytes, model_name = _model_bytes(model)
    from tflm_caps import export as _export
    from tflm_caps.runtime import check_model

    info = check_model(model_bytes, model_name)
    summary = tflite.summarize(model_bytes)
    _fw.builtin_registrations(summary.builtin_ops)  # refuse unknown builtins early
    tgt = _targets.get_target(target)
    board = _sources.harness_boards(source_root).TARGETS[target]
    tree = _tree.check_tree(tflm_root, target)
    _tree.check_tools()
    ops = _sources.ops_dir(source_root)
    batches, data_name = quantized_inputs(info, data, images)

    say(f"TFLM library for {target} (tree {tree.identity[:12]})")
    lib = _build.build_library(tree, tgt, ops, cache_dir=cache_dir, make_vars=make_vars,
                               jobs=jobs, progress=progress)
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="tflm_caps_profile_") if own_dir else workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        say("exporting the model (host arena measurement)")
        exported = _export.export_model(model_bytes, work, name="model")
        capacity = _export.round_up(2 * exported.arena_size + 4096)
        _fw.write_sources(work, exported.name, f"{exported.name}_model_data.h",
                          summary.builtin_ops, capacity)
        elf, map_path = _fw.link_image(lib, board, tgt, work, ops)
        flash = _flash.flash_report(elf, map_path, lib.ops_sources)

        with open(work / _fw.INPUTS_FILE, "wb") as f:
            for batch in batches:
                f.write(np.ascontiguousarray(batch).tobytes())
        (work / _fw.CONFIG_FILE).write_text(f"{_fw.MODE_RUN} {capacity} {len(batches)}\n")
        say(f"running {len(batches)} inferences on {board.board}")
        text = _emu.run_image(board, elf, work, timeout=timeout,
                              progress_total=len(batches) if progress else 0,
                              desc=f"{target} {board.board}")
        run = _emu.parse_output(text).check(f"{target} profile run")
        per_tick = run.instructions_per_tick
        host = host_outputs(model_bytes, batches, progress)
        exact = compare_outputs(host, run.outputs)

        arena = {"host_minimum": exported.arena_measured,
                 "export_header": exported.arena_size,
                 "target_used": run.alloc[1] if run.alloc else None}
        if arena_search:
            say("searching the minimum arena on the target")

            def probe(size):
                (work / _fw.CONFIG_FILE).write_text(f"{_fw.MODE_ARENA} {int(size)} 1\n")
                out = _emu.parse_output(_emu.run_image(board, elf, work, timeout=timeout))
                if out.arena is None:
                    out.check(f"arena probe {size}")
                    raise _emu.EmulatorError(f"arena probe {size}: no ARENA line")
                return out.arena[0]

            minimum, probes = _emu.minimum_arena(probe, arena["target_used"] or capacity,
                                                 capacity)
            arena.update(target_minimum=minimum, probes=probes)
            if arena["target_used"]:
                # TFLM's advice for trimming: arena_used_bytes() + 16 (the
                # arena's end is aligned down to 16 bytes).
                arena["used_plus_16_suffices"] = minimum <= arena["target_used"] + 16
            arena["export_header_suffices"] = minimum <= exported.arena_size
        rows = op_profiles(info, run, per_tick)
        totals = np.array([inv[1] for inv in run.invocations], dtype=np.float64) * per_tick
        overhead = (run.overhead[1] / run.overhead[0] * per_tick) if run.overhead else None
        return ProfileResult(
            model=model_name, target=target, board=board.board, tree=tree.identity, ops=rows,
            invoke_instructions=float(totals.mean()), invoke_min=float(totals.min()),
            invoke_max=float(totals.max()),
            allocate_instructions=float(run.alloc[0] * per_tick) if run.alloc else None,
            instructions_per_tick=per_tick, profiler_overhead=overhead, arena=arena,
            flash=flash, bit_exact=exact,
            build={"cache_entry": str(lib.directory), "library": str(lib.library),
                   "compiled": lib.compiled, "seconds": round(lib.seconds, 1)},
            images=images, data=data_name, seconds=round(time.monotonic() - t0, 1))
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
