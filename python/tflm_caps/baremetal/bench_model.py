"""Instruction counts and MACs of a user's converted model
(``tflm-caps bench MODEL.tflite``).

Reads the int8 ``.tflite`` (``tflm_caps.tflite``), and for every capsule
CUSTOM op takes its actual shapes, quantization and constant weights,
derives the kernels' integer params exactly as the TFLM glue does, and runs
one kernel call per op bare-metal under QEMU (``bench.run_config``: the
harness checks every output bit for bit against the numpy reference).  The
op's input is random int8 from ``seed`` when a builtin (or the graph input)
produces it, and the reference output of the capsule op before it
otherwise (ClassCaps then sees unit-length capsules, as in the model).
Given an image, every capsule op gets its real input instead: the model
runs in the TFLM host interpreter and its tensors are read back.  The
routing's instruction count depends on the data, so use an image for the
numbers of a trained model.

Also reported: MACs of every builtin layer (``tflite.summary.op_macs``:
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED; other builtins None), the
model's bytes and its minimum tensor arena in the TFLM host interpreter
(``runtime.find_min_arena_size``).  Capsule ops with a kernel case:
Squash (with its gain table), Length, ClassCaps (int8 or packed int4
weights; the store or recompute kernel the op's options choose, and the
predictions and routing phases), EfficientSquash and SelfAttentionCaps.
A capsule op that cannot be emulated (an op kind without a kernel case, a
float op, inconsistent tensors) is listed with the reason, never dropped.
"""
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tflm_caps import ops_contract as C
from tflm_caps.baremetal import McuError
from tflm_caps.baremetal import vectors as vec
from tflm_caps.baremetal.bench import CONFIG_NAMES, CONFIGS, NOTES, calibrate, run_config
from tflm_caps.baremetal.targets import get_target, missing_tools

# Cortex-M7 with the cortex_m backend, Cortex-M55 with Helium (MVE).
DEFAULT_CONFIGS = ("m7-cortex_m", "m55-helium")


class BenchModelError(ValueError):
    """The file is not a model this benchmark can read (missing, not a .tflite)."""


@dataclasses.dataclass
class CapsuleOp:
    """A capsule CUSTOM op of the model and the kernel call that emulates it.

    ``case`` is the CAPV case (``vectors``) or None with ``reason`` saying
    why the op cannot be emulated.  ``kernel``: the harness call TFLM's
    Invoke makes for this op; ``repeat``: how many times per inference
    (ClassCaps runs once per batch item)."""
    index: int
    op: str
    inputs: list
    output: list
    quantization: dict
    options: dict = dataclasses.field(default_factory=dict)
    case: tuple = None
    kernel: str = None
    repeat: int = 1
    reason: str = None

    @property
    def shape(self):
        if self.case is None:
            return " ".join("x".join(map(str, s)) for s in self.inputs[:1])
        if self.case[0] == "class_caps":
            n_in, n_out, d_out, d_in = self.case[2].shape
            int4 = " int4" if self.case[4] & vec.F_INT4 else ""
            return f"{n_in}x{d_in}D->{n_out}x{d_out}D r{self.case[3].routing.routings}{int4}"
        if self.case[0] == "self_attention":
            n_in, n_out, d_out, d_in = self.case[2].shape
            return f"{n_in}x{d_in}D->{n_out}x{d_out}D attention"
        x = np.asarray(self.case[1])
        return f"{x.shape[0]}x{x.shape[1]}D"

    @property
    def macs(self):
        if self.case is None:
            return None
        calls = {name: macs for name, _, macs in vec.case_calls(self.case)}
        return calls[self.kernel] * self.repeat


def read_model(path):
    """Bytes of the .tflite at ``path``; BenchModelError with one clear line
    for a missing file, a directory, or a file that is not a .tflite."""
    from tflm_caps.tflite import check_identifier
    from tflm_caps.tflite.reader import ModelFormatError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise BenchModelError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise BenchModelError(f"{path}: is a directory, expected a .tflite file")
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        check_identifier(data, path)
    except ModelFormatError as exc:
        hint = (" (a Keras model: convert it first with `tflm-caps convert`)"
                if path.endswith((".keras", ".h5")) else "")
        raise BenchModelError(f"{exc}{hint}") from None
    return data


def _quant(t):
    return {"scale": [float(s) for s in t.scale], "zero_point": [int(z) for z in t.zero_point],
            "quantized_dimension": int(t.quantized_dimension)}


def _int8_input(t, op):
    if t.type_name != "int8":
        raise ValueError(f"input {t.name!r} is {t.type_name}: the kernels run int8 models "
                         "(convert with the default int8 quantization)")
    if t.quantization is None:
        raise ValueError(f"input {t.name!r} has no per-tensor quantization")
    return t.quantization


def _weights(info, op, allow_int4=False):
    """(int8 W [N_in, N_out, D_out, D_in], int4 packed?, weight scales) of a
    capsule layer's constant input 1; ValueError with the reason otherwise."""
    from tflm_caps.reference import int8 as ref

    w_t = info.tensors[op.inputs[1]]
    kinds = ("int8", "int4") if allow_int4 else ("int8",)
    if w_t.type_name not in kinds or w_t.data is None:
        raise ValueError(f"weights {w_t.name!r} must be constant {' or '.join(kinds)}, got "
                         f"{'constant ' if w_t.data is not None else ''}{w_t.type_name}")
    x_shape = info.tensors[op.inputs[0]].shape
    if len(w_t.shape) != 4 or w_t.shape[0] != x_shape[1] or w_t.shape[3] != x_shape[2]:
        raise ValueError(f"weights {w_t.name!r} {list(w_t.shape)} do not fit input "
                         f"{list(x_shape)} (expected [N_in, N_out, D_out, D_in])")
    if np.any(w_t.zero_point != 0):
        raise ValueError(f"weights {w_t.name!r} must be symmetric (zero point 0)")
    if w_t.scale.size > 1 and w_t.quantized_dimension != 1:
        raise ValueError(f"per-capsule weight scales need quantized_dimension 1, got "
                         f"{w_t.quantized_dimension}")
    if w_t.type_name == "int4":
        W = ref.unpack_weights_s4(w_t.data, w_t.shape)
    else:
        W = np.frombuffer(w_t.data, np.int8).reshape(w_t.shape)
    return W, w_t.type_name == "int4", tuple(float(s) for s in w_t.scale)


def _capsule_case(info, op, rng, produced):
    """(case, kernel, repeat, options) of one capsule op; ValueError with the
    reason when it cannot be emulated.  ``produced``: tensor index -> int8
    array (the model's activations, or the reference outputs of the capsule
    ops already seen)."""
    from tflm_caps.converter import options as caps_options
    from tflm_caps.reference import int8 as ref
    from tflm_caps.reference import quant as q

    x_t = info.tensors[op.inputs[0]]
    if len(x_t.shape) != 3:
        raise ValueError(f"input {x_t.name!r} has shape {list(x_t.shape)}, expected "
                         "[batch, capsules, dim]")
    scale, zp = _int8_input(x_t, op)
    opts = caps_options.decode(op.op_name, op.custom_options)
    x = produced.get(op.inputs[0])
    if x is not None and x.shape != tuple(x_t.shape):
        raise ValueError(f"input {x_t.name!r}: activation of shape {list(x.shape)}, tensor "
                         f"shape {list(x_t.shape)}")
    if x is None:
        x = rng.integers(-128, 128, size=x_t.shape).astype(np.int8)
    batch, n, dim = (int(d) for d in x_t.shape)
    repeat = 1
    if op.op_name == C.SQUASH:
        params = q.squash_params(scale, zp)
        if len(op.inputs) > 1 and op.inputs[1] >= 0:
            table = info.tensors[op.inputs[1]]
            data = np.frombuffer(table.data or b"", np.int32)
            if not np.array_equal(data, ref.squash_table(dim, params)):
                raise ValueError(f"gain table {table.name!r} was not written for capsule dim "
                                 f"{dim} and the input quantization (TFLM refuses it)")
        case = ("squash", x.reshape(batch * n, dim), params)
        out = ref.squash_s8(case[1], params).reshape(x_t.shape)
        kernel = "squash"  # with its gain table, as TFLM runs it
    elif op.op_name == C.EFFICIENT_SQUASH:
        params = q.efficient_squash_params(scale, zp)
        case = ("efficient_squash", x.reshape(batch * n, dim), params)
        out = ref.efficient_squash_s8(case[1], params).reshape(x_t.shape)
        kernel = "efficient_squash"  # with the table TFLM fills in Prepare
    elif op.op_name == C.LENGTH:
        params = q.length_params(scale, zp)
        case = ("length", x.reshape(batch * n, dim), params)
        out = ref.length_s8(case[1], params).reshape(batch, n)
        kernel = "length"
    elif op.op_name == C.CLASS_CAPS:
        W, int4, w_scales = _weights(info, op, allow_int4=True)
        quant = q.ClassCapsQuant(scale, zp, w_scales, opts[C.OPT_U_HAT_SCALE],
                                 tuple(opts[C.OPT_S_SCALES]), tuple(opts[C.OPT_B_SCALES]))
        if quant.routings != int(opts[C.OPT_NUM_ROUTING]):
            raise ValueError(f"num_routing {opts[C.OPT_NUM_ROUTING]} but "
                             f"{quant.routings} s_scales")
        params = q.class_caps_params(q.ClassCapsDims.from_shapes(x_t.shape, W.shape), quant)
        store = bool(opts[C.OPT_STORE_PREDICTIONS])
        kernel = ("class_caps_store" if store else "class_caps_recompute") + \
            ("_s4" if int4 else "")
        # the predictions and routing phases too, for where the time goes
        flags = vec.F_PREDICTIONS | vec.F_ROUTING | (vec.F_STORE if store else vec.F_RECOMPUTE)
        case = ("class_caps", x[0], W, params, flags | (vec.F_INT4 if int4 else 0))
        out = ref.class_caps_s8(x, W, params)
        repeat = batch  # the glue calls the kernel once per batch item
    elif op.op_name == C.SELF_ATTENTION_CAPS:
        W, _, w_scales = _weights(info, op)
        b_t = info.tensors[op.inputs[2]] if len(op.inputs) > 2 else None
        if (b_t is None or b_t.type_name != "int32" or b_t.data is None
                or b_t.quantization != (C.ATTENTION_BIAS_SCALE, C.ATTENTION_BIAS_ZERO_POINT)):
            raise ValueError("the coupling bias must be a constant int32 tensor with scale "
                             "2^-15 and zero point 0")
        bias = np.frombuffer(b_t.data, np.int32).reshape(b_t.shape)
        quant = q.SelfAttentionQuant(scale, zp, w_scales, opts[C.OPT_U_HAT_SCALE],
                                     opts[C.OPT_S_SCALE])
        params = q.self_attention_params(q.ClassCapsDims.from_shapes(x_t.shape, W.shape),
                                         quant, bias)
        case = ("self_attention", x[0], W, bias, params)
        out = ref.self_attention_s8(x, W, bias, params)
        kernel, repeat = "self_attention", batch
    else:
        raise ValueError("no bare-metal kernel case for this capsule op kind")
    produced.setdefault(op.outputs[0], np.asarray(out, np.int8))
    return case, kernel, repeat, opts


def model_activations(data, image, what="model"):
    """{tensor index: int8 array} of every non-constant tensor after one
    inference of ``image`` (one model batch, float in the model's input
    range or already in the input's type) in the TFLM host interpreter.
    BenchModelError when the image does not fit the model's input."""
    from tflm_caps.runtime import TFLMRunner

    runner = TFLMRunner(data, preserve_all_tensors=True)
    (t_in,) = runner.info.input_tensors()
    image = np.asarray(image)
    if image.shape != tuple(t_in.shape):
        raise BenchModelError(f"{what}: input image of shape {list(image.shape)}, the model "
                              f"takes {list(t_in.shape)}")
    runner.predict(image, dequantize=False)
    return {t.index: runner.tensor(t.index).reshape(t.shape)
            for t in runner.info.tensors if not t.is_constant and t.type_name == "int8"}


def analyze(data, what="model", seed=0, image=None):
    """Layers and capsule ops of a .tflite (bytes), without emulating.

    ``image``: one model batch whose activations feed the capsule ops
    (default: random int8 inputs from ``seed``).  Returns ``(info, layers,
    capsule_ops)``: ``layers`` one dict per operator in execution order
    (index, op, kind, input/output shapes, MACs), ``capsule_ops`` a
    CapsuleOp per custom op (emulatable or with its reason).  Raises
    ModelFormatError for a malformed file."""
    from tflm_caps.tflite import check_model
    from tflm_caps.tflite.summary import op_macs

    info = check_model(bytes(data), what)
    rng = np.random.default_rng(seed)
    produced = {} if image is None else model_activations(data, image, what)
    layers, capsule_ops = [], []
    for op in info.operators:
        shapes = [list(info.tensors[i].shape) for i in op.inputs if i >= 0]
        out_shape = [list(info.tensors[i].shape) for i in op.outputs]
        row = {"index": op.index, "op": op.op_name, "inputs": shapes, "outputs": out_shape}
        if op.custom_code is None:
            row.update(kind="builtin", macs=op_macs(info, op))
            layers.append(row)
            continue
        cop = CapsuleOp(op.index, op.op_name, shapes, out_shape[0] if out_shape else [],
                        {info.tensors[i].name: _quant(info.tensors[i])
                         for i in op.inputs if i >= 0})
        if op.op_name not in C.CUSTOM_OPS:
            cop.reason = ("no bare-metal kernel case for this capsule op kind"
                          if op.op_name.startswith(C.OP_PREFIX)
                          else "not a tflm-caps custom op")
        else:
            try:
                cop.case, cop.kernel, cop.repeat, cop.options = _capsule_case(
                    info, op, rng, produced)
            except (ValueError, TypeError, KeyError) as exc:
                cop.reason = str(exc) or type(exc).__name__
        row.update(kind="capsule" if op.op_name.startswith(C.OP_PREFIX) else "custom",
                   macs=cop.macs, shape=cop.shape)
        layers.append(row)
        capsule_ops.append(cop)
    return info, layers, capsule_ops


def emulate(capsule_ops, configs=DEFAULT_CONFIGS, timeout=600.0, progress=True,
            cache_dir=None):
    """Run the emulatable ops' kernel calls on every configuration.

    Returns ``(rows, instructions_per_tick)``: the rows of
    ``bench.run_config`` (one per kernel call, all bit-exact) with ``op``
    (the operator index) added.  Raises McuError when a toolchain is
    missing, a run fails or an output differs from the reference."""
    from tflm_caps.console import progress as progress_bar

    selected = [c for c in CONFIGS if c[0] in configs]
    ops = [c for c in capsule_ops if c.case is not None]
    if not ops or not selected:
        return [], {}
    missing = sorted({t for _, target, *_ in selected for t in missing_tools(target)})
    if missing:
        raise McuError(f"toolchains/emulators not installed: {', '.join(missing)} "
                       "(scripts/install.sh installs them)")
    labels = [f"op {c.index} {c.op}" for c in ops]
    cases = [c.case for c in ops]
    rows, calibration = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        header_dir = Path(tmp)
        calls = vec.write_header(header_dir / "caps_vectors.h", cases)
        for call in calls:
            call["shape"] = ops[call["case"]].shape
        cache = Path(cache_dir) if cache_dir else header_dir / "objcache"
        with progress_bar(selected, desc="emulate", unit="config", enabled=progress) as bar:
            for config in bar:
                bar.set_postfix_str(config[0])
                target = config[1]
                if target not in calibration and get_target(target).arch == "arm":
                    calibration[target] = calibrate(target, tmp, cache, timeout)
                for row in run_config(config, header_dir, calls, labels, cache, timeout):
                    row["op"] = ops[labels.index(row["layer"])].index
                    row["bit_exact"] = True  # run_config raises otherwise
                    rows.append(row)
    return rows, calibration


def run(model, configs=DEFAULT_CONFIGS, seed=0, timeout=600.0, progress=True, arena=True,
        cache_dir=None, image=None):
    """Benchmark a converted model (path or bytes): the report dict of
    ``tflm-caps bench MODEL.tflite --json``.  ``image``: see ``analyze``.

    Raises BenchModelError (missing file, not a .tflite), ModelFormatError
    (malformed), ValueError (unknown configuration) and McuError (missing
    toolchain, failed run, output not bit-exact)."""
    unknown = [c for c in configs if c not in CONFIG_NAMES]
    if unknown:
        raise ValueError(f"unknown configuration {unknown[0]!r}; expected one of "
                         f"{', '.join(CONFIG_NAMES)}")
    t0 = time.time()
    if isinstance(model, (bytes, bytearray)):
        data, name = bytes(model), "model"
    else:
        data, name = read_model(model), os.fspath(model)
    info, layers, capsule_ops = analyze(data, name, seed, image)
    rows, calibration = emulate(capsule_ops, configs, timeout, progress, cache_dir)

    report = {"model": name, "model_bytes": len(data), "seed": seed,
              "inputs": "random int8" if image is None else "model activations of an image",
              "configs": [{"name": c[0], "target": c[1], "backend": c[2]}
                          for c in CONFIGS if c[0] in configs],
              "layers": layers}
    if arena:
        report.update(_arena(data, name))
    ops_out = []
    for cop in capsule_ops:
        entry = {"index": cop.index, "op": cop.op, "shape": cop.shape, "inputs": cop.inputs,
                 "output": cop.output, "quantization": cop.quantization,
                 "emulated": cop.case is not None and bool(rows), "reason": cop.reason,
                 "kernel": cop.kernel, "repeat": cop.repeat, "macs": cop.macs,
                 "instructions": {}, "calls": []}
        if cop.options:
            entry["options"] = {k: v for k, v in cop.options.items()}
        for r in rows:
            if r["op"] != cop.index:
                continue
            call = {k: r[k] for k in ("config", "target", "backend", "kernel", "shape", "macs",
                                      "instructions", "instructions_per_mac", "bit_exact")}
            if "busiest_core" in r:
                call["busiest_core"] = r["busiest_core"]
            entry["calls"].append(call)
            if r["kernel"] == cop.kernel:
                per_item = r.get("busiest_core", r["instructions"])
                entry["instructions"][r["config"]] = per_item * cop.repeat
        ops_out.append(entry)
    report["capsule_ops"] = ops_out
    builtin = [r for r in layers if r["kind"] == "builtin"]
    emulated = [o for o in ops_out if o["emulated"]]
    report["totals"] = {
        "builtin_macs": sum(r["macs"] or 0 for r in builtin),
        "capsule_macs": sum(o["macs"] or 0 for o in emulated),
        "capsule_instructions": {c["name"]: sum(o["instructions"].get(c["name"], 0)
                                                for o in emulated)
                                 for c in report["configs"]} if emulated else {},
        "capsule_ops": len(ops_out), "emulated_ops": len(emulated),
    }
    report["instructions_per_tick"] = calibration
    report["notes"] = {t: NOTES[t] for t in {c["target"] for c in report["configs"]}}
    report["seconds"] = round(time.time() - t0, 1)
    return report


def _arena(data, name):
    """Minimum arena in the TFLM host interpreter and the 32-bit estimate;
    None with the reason when the model does not run there."""
    from tflm_caps.runtime import TFLMError, find_min_arena_size, target_arena_estimate

    try:
        host = find_min_arena_size(data)
    except TFLMError as exc:
        return {"arena_bytes": None,
                "arena_error": "; ".join(line.strip() for line in str(exc).splitlines()
                                         if line.strip())}
    est = target_arena_estimate(data, host)
    return {"arena_bytes": int(host), "arena_target_estimate": int(est["estimate"])}


def _num(v):
    return "n.a." if v is None else f"{v:,}"


def print_table(report, file=None):
    """The report as text: one line per operator, then the totals."""
    file = file or sys.stdout
    configs = [c["name"] for c in report["configs"]]
    ops = {o["index"]: o for o in report["capsule_ops"]}
    arena = report.get("arena_bytes")
    line = f"{report['model']}: {report['model_bytes']:,} bytes"
    if arena is not None:
        line += (f", minimum tensor arena {arena:,} B (TFLM host; "
                 f"~{report['arena_target_estimate']:,} B on a 32-bit MCU)")
    elif "arena_error" in report:
        line += f", arena not measured: {report['arena_error']}"
    print(line, file=file)
    w = 14
    head = (f"{'#':>3}  {'operator':<22}{'shape':<24}{'MACs':>12}"
            + "".join(f"{c:>{w}}" for c in configs))
    print(head, file=file)
    print("-" * len(head), file=file)
    for layer in report["layers"]:
        if layer["kind"] == "builtin":
            shape = "x".join(map(str, layer["outputs"][0])) if layer["outputs"] else ""
        else:
            shape = layer.get("shape", "")
        text = f"{layer['index']:>3}  {layer['op'][:21]:<22}{shape[:23]:<24}{_num(layer['macs']):>12}"
        o = ops.get(layer["index"])
        if o is not None and o["emulated"]:
            text += "".join(f"{_num(o['instructions'].get(c)):>{w}}" for c in configs)
        print(text, file=file)
        if o is None:
            continue
        if o["reason"]:
            print(f"{'':>5}not emulated: {o['reason']}", file=file)
        for kernel in dict.fromkeys(c["kernel"] for c in o["calls"]):
            if kernel == o["kernel"]:
                continue
            by = {c["config"]: c for c in o["calls"] if c["kernel"] == kernel}
            text = f"{'':>5}{'  ' + kernel:<46}{_num(next(iter(by.values()))['macs']):>12}"
            text += "".join(f"{_num(by[c]['instructions']) if c in by else '':>{w}}"
                            for c in configs)
            print(text, file=file)
    t = report["totals"]
    print(f"\nbuiltin layers: {t['builtin_macs']:,} MACs (CONV_2D, DEPTHWISE_CONV_2D, "
          "FULLY_CONNECTED; other builtins n.a.)", file=file)
    if t["capsule_instructions"]:
        print("capsule ops: " + ", ".join(f"{c} {v:,} instructions"
                                          for c, v in t["capsule_instructions"].items())
              + f" ({t['emulated_ops']} of {t['capsule_ops']} ops emulated, every output "
                "bit-exact with the numpy reference)", file=file)
    elif t["capsule_ops"]:
        print(f"capsule ops: none of the {t['capsule_ops']} could be emulated", file=file)
    else:
        print("capsule ops: none in this model", file=file)
    if report.get("instructions_per_tick"):
        print("Instructions, not cycles, under QEMU -icount shift=0; SysTick measured: "
              + ", ".join(f"{k} {v:g} instructions per tick"
                          for k, v in report["instructions_per_tick"].items()), file=file)
