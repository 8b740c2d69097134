"""Kernel test vectors for C drivers (tests/c/kernel_vectors_main.c).

A vector file holds kernel calls with their integer params and inputs; the
driver runs them and writes each call's status and output, which
``read_outputs`` parses and ``expected_outputs`` recomputes with the numpy
reference.  Used by the sanitizer test and the callgrind benchmark; any
backend can run the same files on an emulator.

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

Output file: per call, int32 status then the output bytes (written even on
error, zero-filled).  A squash case is two calls: with the gain table from
caps_squash_s8_init_table, then without a table.
"""
import struct

import numpy as np

from tflm_caps.reference import int8 as ref
from tflm_caps.reference.quant import ClassCapsParams, LengthParams, SquashParams, pack_int4

MAGIC = b"CAPV"
VERSION = 1
OP_SQUASH, OP_LENGTH, OP_CLASS_CAPS = 1, 2, 3
F_PREDICTIONS, F_ROUTING, F_STORE, F_RECOMPUTE, F_INT4 = 1, 2, 4, 8, 16
ALL_CLASS_CAPS = F_PREDICTIONS | F_ROUTING | F_STORE | F_RECOMPUTE


def _ints(*values):
    return struct.pack(f"<{len(values)}i", *(int(v) for v in values))


def _i8(a):
    return np.ascontiguousarray(a, dtype=np.int8).tobytes()


def encode_case(case):
    """Bytes of one case: ('squash'|'length', x, params) or ('class_caps', u, W, params, flags)."""
    kind = case[0]
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


def write_vectors(path, cases):
    """Write cases to a vector file."""
    with open(path, "wb") as f:
        f.write(MAGIC + _ints(VERSION, len(cases)))
        for case in cases:
            f.write(encode_case(case))


def _output_sizes(case):
    if case[0] == "squash":  # with the gain table, then without
        return [np.asarray(case[1]).size] * 2
    if case[0] == "length":
        x = np.asarray(case[1])
        return [x.size // x.shape[-1]]
    _, u, W, p, flags = case
    n_in, n_out, dim_out, _ = W.shape
    sizes = []
    for bit, size in ((F_PREDICTIONS, n_in * n_out * dim_out), (F_ROUTING, n_out * dim_out),
                      (F_STORE, n_out * dim_out), (F_RECOMPUTE, n_out * dim_out)):
        if flags & bit:
            sizes.append(size)
    return sizes


def read_outputs(path, cases):
    """Per case, a list of (status, int8 array) in call order."""
    data = open(path, "rb").read()
    pos = 0
    result = []
    for case in cases:
        calls = []
        for size in _output_sizes(case):
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
