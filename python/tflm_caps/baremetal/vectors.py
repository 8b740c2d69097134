"""The CAPV kernel-call format: kernel calls with their integer params and
inputs, for the C drivers that run them.

Two drivers read it with the same record parser
(``harness/common/caps_vector_records.h``):

- the bare-metal driver (``harness/kernel_vectors_main.c``) gets the calls
  and the numpy reference's outputs embedded in a C header
  (``write_header``), checks every call and counts its instructions;
- a host driver reads a vector file (``write_vectors``) and writes each
  call's status and output (``read_outputs``), e.g. under sanitizers.

``expected_outputs`` recomputes the outputs with the numpy reference.

Format (little-endian int32 unless noted): b"CAPV", version 1, count, then
per case an op code and its fields:

- 1 squash: n_caps, dim, zp, sq_multiplier, sq_exponent, int8 x[n_caps*dim]
- 2 length: n_caps, dim, zp, multiplier, shift, int8 x[n_caps*dim]
- 3 class caps: n_in, dim_in, n_out, dim_out, flags, pred zp, num_scales,
  multipliers[num_scales], shifts[num_scales], routings, per iteration
  (s multiplier, s shift, squash zp, squash multiplier, squash exponent),
  per update (agree m, s, carry m, s, exp_beta m, s), int8 u[n_in*dim_in],
  int8 W[n_in*n_out*dim_out*dim_in].  flags: 1 predictions, 2 routing on
  those predictions (needs 1), 4 class caps storing predictions, 8 class
  caps recomputing them, 16 W packed 4 bits (``quant.pack_int4``, half the
  bytes) and the ``_s4`` kernels instead of the ``_s8`` ones (the case
  holds the unpacked values, in [-8, 7]).
- 4 efficient squash: n_caps, dim, zp, exp multiplier, exp shift,
  int8 x[n_caps*dim]
- 5 self-attention: n_in, dim_in, n_out, dim_out, pred zp, num_scales,
  multipliers[num_scales], shifts[num_scales], acc_shift, coupling_shift,
  exp_beta (m, s), s (m, s), squash_exp (m, s), int8 u[n_in*dim_in],
  int8 W[n_in*n_out*dim_out*dim_in], int32 bias[n_in*n_out] (Q15)

Output file: per call, int32 status then the output bytes (written even on
error, zero-filled).  A squash case is two calls: with the gain table from
caps_squash_s8_init_table, then without a table; an efficient squash case
likewise (caps_efficient_squash_s8_init_table).
"""
import struct
from pathlib import Path

import numpy as np

from tflm_caps.reference import int8 as ref
from tflm_caps.reference.quant import (ClassCapsParams, EfficientSquashParams, LengthParams,
                                       SelfAttentionParams, SquashParams, pack_int4)

MAGIC = b"CAPV"
VERSION = 1
OP_SQUASH, OP_LENGTH, OP_CLASS_CAPS = 1, 2, 3
OP_EFFICIENT_SQUASH, OP_SELF_ATTENTION = 4, 5
F_PREDICTIONS, F_ROUTING, F_STORE, F_RECOMPUTE, F_INT4 = 1, 2, 4, 8, 16
ALL_CLASS_CAPS = F_PREDICTIONS | F_ROUTING | F_STORE | F_RECOMPUTE


def _ints(*values):
    return struct.pack(f"<{len(values)}i", *(int(v) for v in values))


def _i8(a):
    return np.ascontiguousarray(a, dtype=np.int8).tobytes()


def encode_case(case):
    """Bytes of one case: ('squash'|'length'|'efficient_squash', x, params),
    ('class_caps', u, W, params, flags) or ('self_attention', u, W, bias, params)."""
    kind = case[0]
    if kind == "efficient_squash":
        _, x, p = case
        if not isinstance(p, EfficientSquashParams):
            raise ValueError("efficient_squash case needs EfficientSquashParams")
        x = np.asarray(x, dtype=np.int8)
        n, dim = int(x.size // x.shape[-1]), int(x.shape[-1])
        return _ints(OP_EFFICIENT_SQUASH, n, dim, p.input_zp, p.exp_multiplier,
                     p.exp_shift) + _i8(x)
    if kind == "self_attention":
        _, u, W, bias, p = case
        if not isinstance(p, SelfAttentionParams):
            raise ValueError("self_attention case needs SelfAttentionParams")
        n_in, n_out, dim_out, dim_in = W.shape
        bias = np.ascontiguousarray(bias, dtype="<i4")
        if bias.shape != (n_in, n_out):
            raise ValueError(f"self_attention bias must be [{n_in}, {n_out}], got {bias.shape}")
        return (_ints(OP_SELF_ATTENTION, n_in, dim_in, n_out, dim_out, p.pred.input_zp,
                      len(p.pred.multipliers), *p.pred.multipliers, *p.pred.shifts,
                      p.acc_shift, p.coupling_shift, *p.exp_beta, *p.s, *p.squash_exp)
                + _i8(u) + _i8(W) + bias.tobytes())
    if kind in ("squash", "length"):
        _, x, p = case
        x = np.asarray(x, dtype=np.int8)
        n, dim = int(x.size // x.shape[-1]), int(x.shape[-1])
        if kind == "squash":
            if not isinstance(p, SquashParams):
                raise ValueError("squash case needs SquashParams")
            return _ints(OP_SQUASH, n, dim, p.input_zp, p.sq_multiplier, p.sq_exponent) + _i8(x)
        if not isinstance(p, LengthParams):
            raise ValueError("length case needs LengthParams")
        return _ints(OP_LENGTH, n, dim, p.input_zp, p.multiplier, p.shift) + _i8(x)
    if kind == "class_caps":
        _, u, W, p, flags = case
        if not isinstance(p, ClassCapsParams):
            raise ValueError("class_caps case needs ClassCapsParams")
        if flags & F_ROUTING and not flags & F_PREDICTIONS:
            raise ValueError("routing alone needs the predictions flag")
        n_in, n_out, dim_out, dim_in = W.shape
        rp = p.routing
        out = _ints(OP_CLASS_CAPS, n_in, dim_in, n_out, dim_out, flags, p.pred.input_zp,
                    len(p.pred.multipliers), *p.pred.multipliers, *p.pred.shifts, rp.routings)
        for r in range(rp.routings):
            sq = rp.squash[r]
            out += _ints(*rp.s[r], sq.input_zp, sq.sq_multiplier, sq.sq_exponent)
        for k in range(rp.routings - 1):
            out += _ints(*rp.agree[k], *rp.carry[k], *rp.exp_beta[k])
        if flags & F_INT4:
            return out + _i8(u) + pack_int4(W).tobytes()
        return out + _i8(u) + _i8(W)
    raise ValueError(f"unknown vector case kind {kind!r}")


def encode(cases):
    """Bytes of a vector file holding `cases`."""
    return MAGIC + _ints(VERSION, len(cases)) + b"".join(encode_case(c) for c in cases)


def write_vectors(path, cases):
    """Write cases to a vector file."""
    Path(path).write_bytes(encode(cases))


def case_calls(case):
    """[(op name, output bytes, MACs)] of a case in the drivers' call order."""
    if case[0] == "squash":  # with the gain table, then computing each gain
        x = np.asarray(case[1])
        return [("squash", x.size, x.size), ("squash_no_table", x.size, x.size)]
    if case[0] == "length":
        x = np.asarray(case[1])
        return [("length", x.size // x.shape[-1], x.size)]
    if case[0] == "efficient_squash":
        x = np.asarray(case[1])
        return [("efficient_squash", x.size, x.size),
                ("efficient_squash_no_table", x.size, x.size)]
    if case[0] == "self_attention":
        n_in, n_out, d_out, d_in = np.shape(case[2])
        # votes, then the vote sums, agreements and weighted sums: one MAC
        # per (i, j, d) each
        return [("self_attention", n_out * d_out, n_in * n_out * d_out * (d_in + 3))]
    _, u, W, p, flags = case
    n_in, n_out, d_out, d_in = W.shape
    routings = p.routing.routings
    pred_macs = n_in * n_out * d_out * d_in
    # s_j of every iteration + agreement of every update, one MAC per
    # (i, j, d) each.
    route_macs = n_in * n_out * d_out * (routings + routings - 1)
    s4 = "_s4" if flags & F_INT4 else ""
    calls = []
    if flags & F_PREDICTIONS:
        calls.append(("predictions" + s4, n_in * n_out * d_out, pred_macs))
        if flags & F_ROUTING:
            calls.append(("routing", n_out * d_out, route_macs))
    if flags & F_STORE:
        calls.append(("class_caps_store" + s4, n_out * d_out, pred_macs + route_macs))
    if flags & F_RECOMPUTE:
        calls.append(("class_caps_recompute" + s4, n_out * d_out,
                      pred_macs * routings + route_macs))
    return calls


def read_outputs(path, cases):
    """Per case, a list of (status, int8 array) in call order."""
    data = Path(path).read_bytes()
    pos = 0
    result = []
    for case in cases:
        calls = []
        for _, size, _ in case_calls(case):
            if pos + 4 + size > len(data):
                raise ValueError(f"{path}: output truncated at byte {pos}")
            status = struct.unpack_from("<i", data, pos)[0]
            arr = np.frombuffer(data, dtype=np.int8, count=size, offset=pos + 4).copy()
            calls.append((status, arr))
            pos += 4 + size
        result.append(calls)
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} unexpected trailing bytes")
    return result


def expected_outputs(case):
    """The numpy reference's outputs of a case, flattened, in call order."""
    if case[0] == "squash":
        return [ref.squash_s8(case[1], case[2]).reshape(-1)] * 2
    if case[0] == "length":
        return [ref.length_s8(case[1], case[2]).reshape(-1)]
    if case[0] == "efficient_squash":
        return [ref.efficient_squash_s8(case[1], case[2]).reshape(-1)] * 2
    if case[0] == "self_attention":
        _, u, W, bias, p = case
        return [ref.self_attention_s8(u, W, bias, p).reshape(-1)]
    _, u, W, p, flags = case
    u_hat = ref.predictions_s8(u, W, p.pred)
    v = ref.dynamic_routing_s8(u_hat, p.routing).reshape(-1)
    outs = []
    if flags & F_PREDICTIONS:
        outs.append(u_hat.reshape(-1))
    for bit in (F_ROUTING, F_STORE, F_RECOMPUTE):
        if flags & bit:
            outs.append(v)
    return outs


# Bare-metal driver: the calls and expected outputs embedded in a C header.

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


def _case_arena(case, scratch_offset):
    """Arena bytes the bare-metal driver needs for one case: exact scratch
    sizes from the host library (the same C code the images link)."""
    from tflm_caps import native
    if case[0] == "squash":
        x = np.asarray(case[1])
        return x.size + native.squash_buffer_size(x.shape[-1], case[2]) + 2 * ALIGN
    if case[0] == "length":
        return np.asarray(case[1]).size + 2 * ALIGN
    if case[0] == "efficient_squash":
        x = np.asarray(case[1])
        return x.size + native.efficient_squash_buffer_size(x.shape[-1], case[2]) + 2 * ALIGN
    if case[0] == "self_attention":
        n_in, n_out, d_out, d_in = np.shape(case[2])
        dims = (n_in, d_in, n_out, d_out)
        return (n_out * d_out + 4 * n_in * n_out + native.self_attention_buffer_size(dims)
                + 3 * ALIGN + 8 * scratch_offset)
    _, u, W, p, flags = case
    n_in, n_out, d_out, d_in = W.shape
    dims = (n_in, d_in, n_out, d_out)
    scratch = (native.predictions_buffer_size(dims) + native.routing_buffer_size(dims)
               + native.class_caps_buffer_size(dims, True)
               + native.class_caps_buffer_size(dims, False))
    md = n_out * d_out
    extra = 3 * ((2 * n_out * min(n_in, 256) + 7) & ~7)  # CAPS_EXTRA_BLOCK_SCRATCH
    total = md + n_in * md + scratch + extra
    return total + 8 * (ALIGN + scratch_offset)


def write_header(path, cases, scratch_offset=0):
    """Write the bare-metal driver's caps_vectors.h for `cases` (both
    arrays are string literals: they compile much faster than brace
    initializers at megabyte sizes; the driver drops the trailing NUL).
    Returns the calls [{index, case, op, outputs, macs}] in program order."""
    expected = bytearray()
    calls = []
    arena = 64
    for index, case in enumerate(cases):
        outs = expected_outputs(case)
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
        "/* Generated by tflm_caps.baremetal.vectors: kernel calls (CAPV format)",
        " * and the numpy reference's outputs, in call order. */",
        "#ifndef CAPS_VECTORS_H",
        "#define CAPS_VECTORS_H",
        "#include <stdint.h>",
        f"#define CAPS_ARENA_BYTES {arena}u",
        f"#define CAPS_VECTOR_CALLS {len(calls)}",
        _literal("caps_vectors", encode(cases)),
        _literal("caps_expected", bytes(expected)),
        "#endif",
        "",
    ])
    Path(path).write_text(text)
    return calls
