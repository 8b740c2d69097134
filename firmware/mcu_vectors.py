"""Embed kernel test vectors and expected outputs in a C header.

The blob is the vector format of ``tflm_caps.reference.vectors`` (the same
cases the host tests use); the expected outputs are the numpy reference's.
``firmware/kernel_vectors_main.c`` includes the header, runs every call and
compares.  Both arrays are string literals (they compile much faster than
brace initializers at megabyte sizes); the program drops the trailing NUL.
"""
import math
from pathlib import Path

import numpy as np

from tflm_caps.reference import float_ref
from tflm_caps.reference import quant as q
from tflm_caps.reference import vectors as vec

ALIGN = 16


def _literal(name, data, per_line=64):
    lines = [f"static const uint8_t {name}[] __attribute__((aligned(16))) ="]
    for start in range(0, len(data), per_line):
        chunk = data[start:start + per_line]
        lines.append('    "' + "".join(f"\\x{b:02x}" for b in chunk) + '"')
    if not data:
        lines.append('    ""')
    lines[-1] += ";"
    return "\n".join(lines)


# Published CapsNet class-capsule layers: (n_in, dim_in, n_out, dim_out).
SHAPES = {
    "costa2022-mnist": (1024, 4, 10, 6),
    "sabour2017-mnist": (1152, 8, 10, 16),
}


def calibrated_class_caps(rng, n_in, dim_in, n_out, dim_out, routings=3, per_capsule=True,
                          batch=2, weight_bits=8):
    """(u int8 [n_in, dim_in], W int8, ClassCapsParams) of a layer whose
    float predictions agree on one class, quantized with scales calibrated
    on a small batch: a routing that actually routes.  weight_bits 4: W
    values in [-7, 7] (pack them: vectors.F_INT4)."""
    u = float_ref.squash(rng.normal(size=(batch, n_in, dim_in)))
    W = rng.normal(size=(n_in, n_out, dim_out, dim_in)) / math.sqrt(dim_in)
    target = rng.normal(size=dim_out)
    W[:, 0] += 0.5 * np.einsum("d,k->dk", target, np.ones(dim_in)) / dim_in
    quant = q.calibrate_class_caps(u, W, routings, 1.0 / 128, 0, per_capsule=per_capsule,
                                   weight_bits=weight_bits)
    Wq = q.quantize_weights(W, quant.weight_scales, weight_bits)
    uq = q.quantize(u[0], 1.0 / 128)
    return uq, Wq, q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)


def random_class_caps(rng, n_in, dim_in, n_out, dim_out, routings=3, per_capsule=True,
                      weight_bits=8):
    """Uniform random int8 data with log-uniform random scales: saturation,
    odd multipliers, logits far apart (couplings of exactly 2^15).
    weight_bits 4: W uniform over every int4 code, -8 included."""
    def logu(lo, hi, size=None):
        return np.exp(rng.uniform(math.log(lo), math.log(hi), size=size))

    quant = q.ClassCapsQuant(float(logu(1e-3, 0.1)), int(rng.integers(-128, 128)),
                             logu(1e-3, 1e-1, n_out if per_capsule else 1),
                             float(logu(1e-3, 1.0)), logu(1e-4, 0.4, routings),
                             logu(1e-3, 2.0, routings - 1))
    u = rng.integers(-128, 128, size=(n_in, dim_in)).astype(np.int8)
    lim = 1 << (weight_bits - 1)
    W = rng.integers(-lim, lim, size=(n_in, n_out, dim_out, dim_in)).astype(np.int8)
    return u, W, q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)


def squash_case(rng, n_caps, dim, scale=0.05, zp=3):
    x = rng.integers(-128, 128, size=(n_caps, dim)).astype(np.int8)
    return ("squash", x, q.squash_params(scale, zp))


def length_case(rng, n_caps, dim, scale=1.0 / 128, zp=0):
    x = rng.integers(-128, 128, size=(n_caps, dim)).astype(np.int8)
    return ("length", x, q.length_params(scale, zp))


def _buffer_sizes(dims):
    """Scratch sizes the API promises (the host library computes them with
    the same C code the firmware links)."""
    from tflm_caps import native
    return (native.predictions_buffer_size(dims), native.routing_buffer_size(dims),
            native.class_caps_buffer_size(dims, True), native.class_caps_buffer_size(dims, False))


def case_calls(case):
    """[(op name, output bytes, MACs)] of a case in the program's call order."""
    if case[0] == "squash":  # with the gain table, then computing each gain
        x = np.asarray(case[1])
        return [("squash", x.size, x.size), ("squash_no_table", x.size, x.size)]
    if case[0] == "length":
        x = np.asarray(case[1])
        return [("length", x.size // x.shape[-1], x.size)]
    _, u, W, p, flags = case
    n_in, n_out, d_out, d_in = W.shape
    routings = p.routing.routings
    pred_macs = n_in * n_out * d_out * d_in
    # s_j of every iteration + agreement of every update, one MAC per
    # (i, j, d) each.
    route_macs = n_in * n_out * d_out * (routings + routings - 1)
    s4 = "_s4" if flags & vec.F_INT4 else ""
    calls = []
    if flags & vec.F_PREDICTIONS:
        calls.append(("predictions" + s4, n_in * n_out * d_out, pred_macs))
        if flags & vec.F_ROUTING:
            calls.append(("routing", n_out * d_out, route_macs))
    if flags & vec.F_STORE:
        calls.append(("class_caps_store" + s4, n_out * d_out, pred_macs + route_macs))
    if flags & vec.F_RECOMPUTE:
        calls.append(("class_caps_recompute" + s4, n_out * d_out,
                      pred_macs * routings + route_macs))
    return calls


def _case_arena(case, scratch_offset):
    if case[0] == "squash":
        from tflm_caps import native
        x = np.asarray(case[1])
        return x.size + native.squash_buffer_size(x.shape[-1], case[2]) + 2 * ALIGN
    if case[0] == "length":
        return np.asarray(case[1]).size + 2 * ALIGN
    _, u, W, p, flags = case
    n_in, n_out, d_out, d_in = W.shape
    dims = (n_in, d_in, n_out, d_out)
    pred, route, store, recompute = _buffer_sizes(dims)
    md = n_out * d_out
    extra = 3 * ((2 * n_out * min(n_in, 256) + 7) & ~7)  # CAPS_EXTRA_BLOCK_SCRATCH
    total = md + n_in * md + pred + route + store + recompute + extra
    return total + 8 * (ALIGN + scratch_offset)


def write_header(path, cases, scratch_offset=0):
    """Write caps_vectors.h for `cases`; returns the list of calls
    [{index, case, op, outputs, macs}] in program order."""
    blob = bytearray(vec.MAGIC + vec._ints(vec.VERSION, len(cases)))
    expected = bytearray()
    calls = []
    arena = 64
    for index, case in enumerate(cases):
        blob += vec.encode_case(case)
        outs = vec.expected_outputs(case)
        names = case_calls(case)
        if len(outs) != len(names):
            raise ValueError(f"case {index}: {len(outs)} expected outputs for {len(names)} calls")
        for (op, size, macs), out in zip(names, outs):
            if out.size != size:
                raise ValueError(f"case {index} {op}: expected {size} outputs, got {out.size}")
            expected += np.asarray(out, dtype=np.int8).tobytes()
            calls.append({"index": len(calls), "case": index, "op": op, "outputs": size,
                          "macs": macs})
        arena = max(arena, _case_arena(case, scratch_offset))
    text = "\n".join([
        "/* Generated by firmware/mcu_vectors.py: kernel calls (tflm_caps.reference.vectors",
        " * format) and the numpy reference's outputs, in call order. */",
        "#ifndef CAPS_VECTORS_H",
        "#define CAPS_VECTORS_H",
        "#include <stdint.h>",
        f"#define CAPS_ARENA_BYTES {arena}u",
        f"#define CAPS_VECTOR_CALLS {len(calls)}",
        _literal("caps_vectors", bytes(blob)),
        _literal("caps_expected", bytes(expected)),
        "#endif",
        "",
    ])
    Path(path).write_text(text)
    return calls
