"""Structured model mutator: fuzzes the Python host runtime with whole models.

Each mutant is a seed ``.tflite`` with one to three structured mutations
(tensor shapes, types, buffer indices, quantization, operator tensor and
opcode indices, builtin and custom options, constant data, raw bytes of the
serialized flatbuffer).  Mutants run in a worker subprocess: loaded with
``TFLMRunner`` and invoked once on random input.  The expected outcomes are
"ok" (the model runs) or "refused" (ModelFormatError, TFLMError,
ArenaTooSmallError: a clear error).  Findings, each saved to the findings
folder for replay:

- crash: the worker died (signal, abort), i.e. the process of a user would;
- hang: one mutant ran longer than ``--timeout`` seconds;
- bug: any other Python exception (a traceback a user would see).

    python tests/fuzz/mutate_models.py --mutants 300            # CI smoke
    python tests/fuzz/mutate_models.py --mutants 100000 --findings fuzz-findings
    python tests/fuzz/mutate_models.py --replay fuzz-findings/crash-*.tflite

See docs/fuzzing_models.md.  Exit status 1 when there were findings.
"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SEEDS = [os.path.join(HERE, "models", "tiny8.tflite")]
# A mutant that runs longer than this is reported as slow (not a finding).
SLOW_SECONDS = 2.0

# ----------------------------------------------------------------------------
# Mutations (on the schema's object API, ModelT)
# ----------------------------------------------------------------------------

_INTERESTING = [0, 1, 2, 3, -1, -2, 7, 8, 15, 16, 127, 128, 255, 256, 1023, 4096, 65535,
                1 << 20, 1 << 24, (1 << 31) - 1, -(1 << 31)]
_INTERESTING_FLOATS = [0.0, -0.0, -1.0, 1e-45, 1e-38, 1e-10, 1.0, 2.0 ** 23, 1e10, 3.4e38,
                       float("inf"), float("-inf"), float("nan")]


def _pick_int(rng, current=None):
    r = rng.random()
    if current is not None and r < 0.35:
        return int(current) + rng.choice([-2, -1, 1, 2]) if r < 0.2 else int(current) * 2
    if r < 0.8:
        return rng.choice(_INTERESTING)
    return rng.randint(-(1 << 31), (1 << 31) - 1)


def _graph(model):
    return model.subgraphs[0]


def mutate_shape(rng, model):
    tensors = _graph(model).tensors
    t = rng.choice(tensors)
    shape = [int(d) for d in (t.shape if t.shape is not None else [])]
    r = rng.random()
    if not shape or r < 0.1:
        shape = shape + [rng.choice([1, 2, 3])]
    elif r < 0.2:
        shape = shape[:-1]
    else:
        k = rng.randrange(len(shape))
        shape[k] = _pick_int(rng, shape[k]) if rng.random() < 0.5 else rng.randint(0, 64)
    t.shape = shape
    return f"shape of tensor {t.name!r} -> {shape}"


def mutate_type(rng, model):
    t = rng.choice(_graph(model).tensors)
    t.type = rng.randint(0, 25) if rng.random() < 0.9 else _pick_int(rng) % 128
    return f"type of tensor {t.name!r} -> {t.type}"


def mutate_buffer_index(rng, model):
    t = rng.choice(_graph(model).tensors)
    t.buffer = rng.randint(0, len(model.buffers) + 1)
    return f"buffer of tensor {t.name!r} -> {t.buffer}"


def mutate_quantization(rng, model):
    schema = _schema()
    t = rng.choice(_graph(model).tensors)
    q = t.quantization or schema.QuantizationParametersT()
    t.quantization = q
    what = rng.choice(["scale", "zero_point", "dim", "length", "drop"])
    if what == "scale":
        scale = list(q.scale) if q.scale is not None and len(q.scale) else [1.0]
        scale[rng.randrange(len(scale))] = rng.choice(_INTERESTING_FLOATS)
        q.scale = scale
    elif what == "zero_point":
        zp = list(q.zeroPoint) if q.zeroPoint is not None and len(q.zeroPoint) else [0]
        zp[rng.randrange(len(zp))] = _pick_int(rng)
        q.zeroPoint = zp
    elif what == "dim":
        q.quantizedDimension = rng.choice([-1, 0, 1, 2, 3, 4, 100])
    elif what == "length":
        n = rng.choice([0, 1, 2, 3, 16, 32])
        q.scale = [0.05] * n
        q.zeroPoint = [0] * rng.choice([n, n, 0, 1])
    else:
        t.quantization = None
    return f"quantization {what} of tensor {t.name!r}"


def mutate_op_tensor(rng, model):
    g = _graph(model)
    op = rng.choice(g.operators)
    field = "inputs" if rng.random() < 0.6 else "outputs"
    ids = [int(v) for v in (getattr(op, field) if getattr(op, field) is not None else [])]
    r = rng.random()
    if not ids or r < 0.15:
        ids.append(rng.randint(-1, len(g.tensors) - 1))
    elif r < 0.3:
        ids.pop(rng.randrange(len(ids)))
    else:
        ids[rng.randrange(len(ids))] = rng.randint(-1, len(g.tensors))
    setattr(op, field, ids)
    return f"{field} of an operator -> {ids}"


def mutate_opcode(rng, model):
    op = rng.choice(_graph(model).operators)
    if rng.random() < 0.5:
        op.opcodeIndex = rng.randint(0, len(model.operatorCodes))
        return f"opcode index -> {op.opcodeIndex}"
    code = rng.choice(model.operatorCodes)
    # The builtins a converted CapsNet uses (and their neighbours), whose shape
    # consistency the pre-check covers; TFLM's other reference kernels are
    # out of scope.  200 is an unknown code.
    code.builtinCode = rng.choice([0, 1, 3, 4, 6, 9, 17, 18, 22, 25, 32, 41, 114, 200])
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    return f"builtin code -> {code.builtinCode}"


_OPTION_FIELDS = ["padding", "strideW", "strideH", "dilationWFactor", "dilationHFactor",
                  "fusedActivationFunction", "depthMultiplier", "filterWidth", "filterHeight",
                  "keepNumDims", "weightsFormat", "beta", "newShape", "axis"]


def mutate_builtin_options(rng, model):
    ops = [op for op in _graph(model).operators if op.builtinOptions is not None]
    if not ops or rng.random() < 0.15:
        op = rng.choice(_graph(model).operators)
        op.builtinOptionsType = rng.randint(0, 130)
        if op.builtinOptionsType and op.builtinOptions is None:
            op.builtinOptionsType = 0
        return f"builtin options type -> {op.builtinOptionsType}"
    op = rng.choice(ops)
    present = [f for f in _OPTION_FIELDS if hasattr(op.builtinOptions, f)]
    field = rng.choice(present)
    old = getattr(op.builtinOptions, field)
    if isinstance(old, float):
        new = rng.choice(_INTERESTING_FLOATS)
    elif isinstance(old, bool):
        new = not old
    elif isinstance(old, (list, tuple)) or (old is not None and hasattr(old, "__len__")):
        new = [_pick_int(rng) if rng.random() < 0.3 else rng.randint(-1, 64)
               for _ in range(rng.randint(0, 5))]
    elif field in ("padding", "fusedActivationFunction", "weightsFormat"):
        new = rng.randint(-3, 8)
    else:
        new = _pick_int(rng, old or 0) if rng.random() < 0.5 else rng.randint(-1, 9)
    setattr(op.builtinOptions, field, new)
    return f"builtin option {field} -> {new}"


def mutate_custom_options(rng, model):
    ops = [op for op in _graph(model).operators if op.customOptions is not None
           and len(op.customOptions)]
    if not ops:
        return None
    op = rng.choice(ops)
    data = bytearray(bytes(bytearray(op.customOptions)))
    r = rng.random()
    if r < 0.5:
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif r < 0.7:
        data = data[:rng.randrange(len(data))]
    else:
        # A 4-byte aligned word (ints and floats of the map) set to an extreme value.
        k = rng.randrange(max(len(data) // 4, 1)) * 4
        word = struct.pack("<i", _pick_int(rng)) if rng.random() < 0.6 else \
            struct.pack("<f", rng.choice(_INTERESTING_FLOATS))
        data[k:k + 4] = word
        data = data[:len(data)]
    op.customOptions = list(data)
    return f"custom options ({len(data)} bytes)"


def mutate_buffer_data(rng, model):
    bufs = [b for b in model.buffers if b.data is not None and len(b.data)]
    if not bufs:
        return None
    b = rng.choice(bufs)
    data = bytearray(bytes(bytearray(b.data)))
    if rng.random() < 0.7:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    else:
        data = data[:rng.randrange(len(data))]
    b.data = list(data)
    return f"buffer data ({len(data)} bytes)"


MUTATIONS = [mutate_shape, mutate_shape, mutate_type, mutate_buffer_index, mutate_quantization,
             mutate_op_tensor, mutate_opcode, mutate_builtin_options, mutate_builtin_options,
             mutate_custom_options, mutate_custom_options, mutate_buffer_data]


def _schema():
    from tflm_caps.tflite import tables
    return tables.schema()


def _flip_bytes(rng, data):
    """Raw corruption of the serialized flatbuffer (offsets, vtables, option bytes)."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        k = rng.randrange(len(data))
        data[k] = rng.randrange(256) if rng.random() < 0.7 else data[k] ^ (1 << rng.randrange(8))
    return bytes(data)


def make_mutant(rng, seed_bytes):
    """(mutant bytes, description) of one mutant of ``seed_bytes``."""
    from tflm_caps import tflite

    if rng.random() < 0.2:
        return _flip_bytes(rng, seed_bytes), "raw byte flips"
    model = tflite.load(seed_bytes)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        what = rng.choice(MUTATIONS)(rng, model)
        if what:
            done.append(what)
    try:
        data = tflite.dump(model)
    except Exception as exc:  # a mutation the serializer itself refuses
        return _flip_bytes(rng, seed_bytes), f"raw byte flips (dump failed: {exc!r})"
    if rng.random() < 0.1:
        data, done = _flip_bytes(rng, data), done + ["raw byte flips"]
    return data, "; ".join(done)


# ----------------------------------------------------------------------------
# Worker: runs mutants, one at a time, from stdin
# ----------------------------------------------------------------------------

def _run_one(data):
    import numpy as np

    from tflm_caps.runtime import ArenaTooSmallError, ModelFormatError, TFLMError, TFLMRunner

    try:
        runner = TFLMRunner(data)
        try:
            for k, t in enumerate(runner.input_details):
                if t.dtype is None or not np.issubdtype(t.dtype, np.number):
                    return "refused", f"input {k} has type {t.type_name}"
            x = []
            rng = np.random.default_rng(len(data))
            for t in runner.input_details:
                if np.issubdtype(t.dtype, np.integer):
                    info = np.iinfo(t.dtype)
                    x.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1,
                                          size=t.shape).astype(t.dtype))
                else:
                    x.append(rng.standard_normal(t.shape).astype(t.dtype))
            runner.invoke(*x)
        finally:
            runner.close()
    except (ModelFormatError, TFLMError, ArenaTooSmallError) as exc:
        return "refused", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    except Exception as exc:  # noqa: BLE001 - every other exception is a finding
        return "bug", f"{type(exc).__name__}: {exc}"[:500]
    return "ok", ""


def worker():
    """Reads [u32 length][model] records from stdin, answers one JSON line each."""
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return 0
        (n,) = struct.unpack("<I", head)
        data = stdin.read(n)
        t0 = time.perf_counter()
        outcome, detail = _run_one(data)
        stdout.write(json.dumps({"outcome": outcome, "detail": detail,
                                 "seconds": time.perf_counter() - t0}) + "\n")
        stdout.flush()


class Worker:
    """The worker subprocess; restarted after a crash or a hang."""

    def __init__(self):
        self.proc = None

    def start(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)

    def run(self, data, timeout):
        """(outcome, detail, seconds); outcome crash or hang when the worker dies or stalls."""
        import selectors

        if self.proc is None or self.proc.poll() is not None:
            self.start()
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        if not ready:
            self.stop()
            return "hang", f"no answer in {timeout} s", time.perf_counter() - t0
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return "crash", f"worker exited with status {code}", time.perf_counter() - t0
        answer = json.loads(line)
        return answer["outcome"], answer["detail"], answer["seconds"]

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------

def fuzz(seeds, mutants, seed=0, max_seconds=None, timeout=30.0, findings_dir=None,
         progress_every=0):
    """Runs mutants; returns a summary dict (counts, rate, findings)."""
    rng = random.Random(seed)
    seed_data = []
    for path in seeds:
        with open(path, "rb") as f:
            seed_data.append(f.read())
    counts = {"ok": 0, "refused": 0, "bug": 0, "crash": 0, "hang": 0}
    findings, slow = [], []
    w = Worker()
    t0 = time.perf_counter()
    done = 0
    try:
        while done < mutants and (max_seconds is None or time.perf_counter() - t0 < max_seconds):
            data, what = make_mutant(rng, rng.choice(seed_data))
            outcome, detail, seconds = w.run(data, timeout)
            counts[outcome] += 1
            done += 1
            if seconds > SLOW_SECONDS:
                slow.append({"mutant": done, "seconds": round(seconds, 2), "mutation": what})
            if outcome in ("bug", "crash", "hang"):
                entry = {"mutant": done, "outcome": outcome, "detail": detail, "mutation": what}
                if findings_dir:
                    os.makedirs(findings_dir, exist_ok=True)
                    path = os.path.join(findings_dir, f"{outcome}-{seed}-{done}.tflite")
                    with open(path, "wb") as f:
                        f.write(data)
                    entry["file"] = path
                findings.append(entry)
            if progress_every and done % progress_every == 0:
                rate = done / (time.perf_counter() - t0)
                print(f"{done} mutants, {rate:.0f}/s, {counts}", file=sys.stderr, flush=True)
    finally:
        w.stop()
    elapsed = time.perf_counter() - t0
    return {"mutants": done, "seconds": round(elapsed, 1),
            "mutants_per_second": round(done / elapsed, 1) if elapsed else 0.0,
            "counts": counts, "findings": findings, "slow": slow}


def replay(paths, timeout):
    w = Worker()
    bad = 0
    try:
        for path in paths:
            with open(path, "rb") as f:
                outcome, detail, seconds = w.run(f.read(), timeout)
            bad += outcome in ("bug", "crash", "hang")
            print(f"{path}: {outcome} ({seconds:.2f} s) {detail}")
    finally:
        w.stop()
    return 1 if bad else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", default=DEFAULT_SEEDS, metavar="MODEL.tflite",
                   help="seed models (default: tests/fuzz/models/tiny8.tflite)")
    p.add_argument("--mutants", type=int, default=300, help="number of mutants (default 300)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="random seed of the mutations")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds one mutant may run before it is a hang (default 30)")
    p.add_argument("--findings", metavar="DIR", help="save crashing/hanging/bug mutants here")
    p.add_argument("--progress", type=int, default=0, metavar="N",
                   help="print a status line every N mutants (stderr)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--replay", nargs="+", metavar="MODEL.tflite",
                   help="run these saved mutants and report their outcome")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker()
    if args.replay:
        return replay(args.replay, args.timeout)
    summary = fuzz(args.seeds, args.mutants, args.seed, args.max_seconds, args.timeout,
                   args.findings, args.progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['mutants']} mutants in {summary['seconds']} s "
              f"({summary['mutants_per_second']}/s): {summary['counts']}")
        for f in summary["findings"]:
            print(f"  {f['outcome']}: mutant {f['mutant']} ({f['mutation']}): {f['detail']}"
                  + (f" -> {f['file']}" if "file" in f else ""))
        for s in summary["slow"]:
            print(f"  slow: mutant {s['mutant']} {s['seconds']} s ({s['mutation']})")
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
