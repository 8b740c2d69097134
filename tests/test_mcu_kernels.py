"""The Cortex-M and RISC-V backends equal the numpy reference bit for bit,
run bare-metal under QEMU (Cortex-M4/M7/M33/M55 system boards, RV32IMAC
virt at 1, 2 and 8 emulated cluster cores).

One vector header (CAPV format of tflm_caps.baremetal.vectors + the
reference's outputs) is built per session; every configuration compiles it
with the kernel library into a semihosting image (the harness's
kernel_vectors_main.c) that checks every call and exits non-zero on any
mismatch.
"""
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.kernel_cases import random_class_caps, random_self_attention
from support.toolchains import require_target

from tflm_caps import ops_sources
from tflm_caps.baremetal import build, cases, qemu
from tflm_caps.baremetal import vectors as vec
from tflm_caps.baremetal.targets import get_target
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q

pytestmark = pytest.mark.emulated

TESTS_C = Path(__file__).resolve().parent / "c"


def _cases():
    rng = np.random.default_rng(20240611)
    cc = cases.calibrated_class_caps
    rc = random_class_caps
    out = []
    # odd capsule counts, dims not multiple of 4, more than one 255-capsule
    # block (300), R = 1..4, per-tensor and per-capsule scales, N_out above
    # the backends' small-array limits (33), N_out = 1 (couplings of 2^15);
    # (10, 6) and (10, 16) take the Cortex-M routing's specialized loops, and
    # odd dim_out or odd N_out the tails of the paired prediction outputs
    shapes = [
        (cc, (37, 4, 10, 6), 3, True),
        (cc, (21, 8, 3, 16), 3, False),
        (rc, (13, 5, 7, 5), 3, True),
        (rc, (9, 3, 4, 7), 4, False),
        (rc, (300, 4, 3, 6), 2, True),
        (rc, (5, 2, 2, 3), 1, True),
        (rc, (6, 4, 1, 4), 3, True),
        (rc, (4, 1, 33, 1), 2, True),
        (rc, (11, 12, 2, 2), 3, True),
        (cc, (17, 8, 5, 8), 3, True),
        (rc, (19, 8, 10, 16), 3, True),
        (rc, (29, 4, 10, 6), 2, False),
        (cc, (23, 8, 10, 16), 3, False),
        (rc, (7, 4, 10, 5), 3, True),
        (rc, (5, 8, 4, 8), 2, False),
        (rc, (6, 4, 3, 6), 3, True),
        # more output capsules than the Helium softmax keeps in registers,
        # over whole 16-capsule tiles; rows beyond the predictions' param
        # tables (runs of 16, 8 and 5 rows)
        (rc, (20, 3, 17, 2), 2, True),
        (cc, (3, 4, 20, 16), 2, True),
        (rc, (2, 8, 40, 8), 1, True),
        (rc, (5, 4, 13, 5), 2, True),
        # couplings of exactly 2^15 inside whole tiles (one output capsule;
        # two with logits far apart)
        (rc, (18, 3, 1, 5), 2, True),
        (rc, (32, 4, 2, 3), 3, True),
        # the Helium 4-D predictions with one scale, and 6-D class capsules
        # per pair of output capsules (two pairs)
        (cc, (26, 4, 10, 6), 2, False),
        (cc, (19, 4, 4, 6), 3, True),
        (cc, (7, 4, 4, 6), 3, False),
    ]
    for make, dims, routings, per_capsule in shapes:
        u, W, p = make(rng, *dims, routings=routings, per_capsule=per_capsule)
        out.append(("class_caps", u, W, p, vec.ALL_CLASS_CAPS))
    # packed int4 weights (every N_out D_out D_in even): dim_in 4 with even
    # dim_out (two rows a word, (10, 6) unrolled), 8 and 16 (SMLAD pairs),
    # other dims and positive shifts (one nibble at a time), N_out > 32,
    # blocks of recomputed predictions, every nibble code including -8
    int4_shapes = [
        (cc, (37, 4, 10, 6), 3, True),
        (rc, (29, 4, 10, 6), 2, False),
        (cc, (21, 8, 3, 16), 3, False),
        (rc, (19, 8, 10, 16), 3, True),
        (rc, (9, 16, 3, 5), 2, True),
        (rc, (300, 4, 3, 2), 2, True),
        (rc, (13, 4, 2, 5), 3, True),
        (rc, (11, 6, 3, 3), 3, False),
        (rc, (7, 3, 2, 1), 1, True),
        (rc, (4, 2, 33, 1), 2, True),
    ]
    for make, dims, routings, per_capsule in int4_shapes:
        u, W, p = make(rng, *dims, routings=routings, per_capsule=per_capsule, weight_bits=4)
        out.append(("class_caps", u, W, p, vec.ALL_CLASS_CAPS | vec.F_INT4))
    # every nibble code through the fast paths: multipliers below 1 with a
    # right shift (branch-free requantization), N_out > 32 (requantization
    # not cached), a multiplier in [0.5, 1) (no right shift)
    for dims, uhat_scale in [((37, 4, 10, 6), 0.5), ((9, 4, 40, 2), 0.5), ((7, 8, 3, 16), 0.5),
                             ((5, 8, 35, 3), 0.5), ((4, 16, 3, 2), 0.5),
                             ((6, 4, 3, 4), 0.05 / 128 / 0.7), ((6, 8, 3, 3), 0.05 / 128 / 0.7)]:
        n_in, d_in, n_out, d_out = dims
        quant = q.ClassCapsQuant(1 / 128, int(rng.integers(-20, 20)), [0.05],
                                 uhat_scale, [0.3, 0.2, 0.2], [0.4, 0.4])
        u = rng.integers(-128, 128, (n_in, d_in)).astype(np.int8)
        W = rng.integers(-8, 8, (n_in, n_out, d_out, d_in)).astype(np.int8)
        p = q.class_caps_params(dims, quant)
        assert all(s <= 0 for s in p.pred.shifts)
        out.append(("class_caps", u, W, p, vec.ALL_CLASS_CAPS | vec.F_INT4))
    # packed int4 on Helium: zp 0 with dim_in 4 or 8 takes the int8 loops
    # (the 6-D pairs, groups of 4 rows, the per-row table, runs of dim_out
    # rows with 1..3-row tails); other dim_in or zp each row from its first
    # nibble (odd dim_in: rows starting on a high nibble, predicated last
    # steps, per-lane params of output capsules with odd dim_out); odd
    # capsule counts for partial tiles
    helium_int4 = [
        (cc, (26, 4, 10, 6), 2, False), (cc, (19, 4, 4, 6), 3, True),
        (cc, (3, 4, 20, 16), 2, True), (cc, (5, 4, 13, 5), 2, True),
        (cc, (7, 8, 9, 3), 3, True), (cc, (6, 8, 40, 3), 2, True),
        (cc, (17, 4, 3, 5), 2, False), (cc, (10, 3, 4, 5), 3, True),
        (rc, (13, 3, 4, 6), 3, True), (rc, (9, 5, 6, 3), 2, True),
        (rc, (7, 17, 2, 3), 2, False), (rc, (11, 1, 3, 2), 2, True),
        (rc, (5, 9, 35, 2), 1, True), (rc, (3, 4, 5, 3), 2, True),
    ]
    for make, dims, routings, per_capsule in helium_int4:
        u, W, p = make(rng, *dims, routings=routings, per_capsule=per_capsule, weight_bits=4)
        out.append(("class_caps", u, W, p, vec.ALL_CLASS_CAPS | vec.F_INT4))
    # zp 0 and every nibble code through those loops, with shifts of both signs
    for dims, uhat_scale, scales in [((7, 4, 3, 5), 0.5, 3), ((5, 8, 5, 3), 0.5, 5),
                                     ((9, 4, 2, 6), 0.05 / 128 / 0.7, 2),
                                     ((6, 8, 3, 4), 0.05 / 128 / 0.7, 1),
                                     ((4, 4, 7, 2), 0.5, 1)]:
        n_in, d_in, n_out, d_out = dims
        quant = q.ClassCapsQuant(1 / 128, 0, list(rng.uniform(0.02, 0.08, scales)),
                                 uhat_scale, [0.3, 0.2, 0.2], [0.4, 0.4])
        u = rng.integers(-128, 128, (n_in, d_in)).astype(np.int8)
        W = rng.integers(-8, 8, (n_in, n_out, d_out, d_in)).astype(np.int8)
        out.append(("class_caps", u, W, q.class_caps_params(dims, quant),
                    vec.ALL_CLASS_CAPS | vec.F_INT4))
    out.append(cases.squash_case(rng, 33, 5, scale=0.05, zp=3))
    out.append(cases.squash_case(rng, 16, 4, scale=3e-4, zp=-128))
    out.append(cases.squash_case(rng, 7, 16, scale=2.0, zp=127))
    zeros = np.zeros((3, 6), dtype=np.int8)
    out.append(("squash", zeros, q.squash_params(0.1, 0)))
    out.append(cases.length_case(rng, 33, 5, scale=0.02, zp=-7))
    out.append(cases.length_case(rng, 9, 16, scale=1.0 / 128, zp=0))
    out.append(("length", zeros, q.length_params(0.5, 0)))
    # D = 4 with capsule counts that leave 1..3 capsules for the predicated
    # last step of the four-capsules-per-vector loops (Helium), and dims
    # around the vector widths
    for n_caps, dim, scale, zp in ((13, 4, 0.2, -5), (2, 4, 0.01, 127), (1027, 4, 0.05, 0),
                                   (5, 3, 0.1, 1), (9, 8, 0.03, -2), (40, 8, 0.05, 0),
                                   (3, 17, 0.02, 4)):
        out.append(cases.squash_case(rng, n_caps, dim, scale=scale, zp=zp))
    for n_caps, dim, scale, zp in ((11, 4, 0.03, 9), (3, 4, 1.0 / 128, -128), (7, 9, 0.01, 0)):
        out.append(cases.length_case(rng, n_caps, dim, scale=scale, zp=zp))
    out.extend(_efficient_cases(rng))
    return out


def _efficient_cases(rng):
    """Efficient-CapsNet ops: the mazzia2021-mnist shapes, calibrated layers,
    and odd shapes for every vector tail: N_out 1 (a coupling of 2^15),
    N_in above one 255-capsule block, D_out at its limit of 128, odd dims,
    biases that shift the couplings, saturating votes and sums."""
    out = []
    ca, ra = cases.calibrated_self_attention, random_self_attention
    for make, dims, per_capsule, bias_kind in [
            (ca, cases.ATTENTION_SHAPES["mazzia2021-mnist"], True, None),
            (ca, (21, 8, 4, 16), False, None),
            (ca, (13, 5, 3, 7), True, None),
            (ra, (37, 5, 7, 9), True, 2),
            (ra, (3, 1, 1, 1), True, 3),
            (ra, (300, 4, 3, 6), False, 1),
            (ra, (9, 3, 13, 3), False, 0),
            (ra, (5, 8, 17, 128), True, 1),
            (ra, (6, 7, 10, 16), True, 3),
            (ra, (2, 16, 5, 33), False, 2)]:
        if bias_kind is None:
            u, W, bias, p = make(rng, *dims, per_capsule=per_capsule)
        else:
            u, W, bias, p = make(rng, *dims, per_capsule=per_capsule, bias_kind=bias_kind)
        out.append(("self_attention", u, W, bias, p))
    n, d = cases.EFFICIENT_SQUASH_SHAPES["mazzia2021-mnist"]
    for n_caps, dim, scale, zp in ((n, d, 0.04, 0), (33, 5, 0.05, 3), (7, 16, 2.0, 127),
                                   (13, 4, 3e-4, -128), (3, 17, 0.02, -4), (1, 1, 0.5, 0),
                                   (9, 8, 0.01, 5)):
        out.append(cases.efficient_squash_case(rng, n_caps, dim, scale=scale, zp=zp))
    out.append(("efficient_squash", np.zeros((3, 6), np.int8), q.efficient_squash_params(0.1, 0)))
    return out


@pytest.fixture(scope="session")
def vectors(tmp_path_factory):
    """(include dir, expected call list, cases) shared by every configuration."""
    all_cases = _cases()
    d = tmp_path_factory.mktemp("mcu_vectors")
    calls = vec.write_header(d / "caps_vectors.h", all_cases, scratch_offset=3)
    return d, calls, all_cases


@pytest.fixture(scope="session")
def objcache(tmp_path_factory):
    """Object cache shared by all builds of the session (one kernel library
    build per target/backend/kernel defines)."""
    return tmp_path_factory.mktemp("mcu_objcache")


# Settings of the test program only (not of the kernel library).
PROGRAM_SETTINGS = ("CAPS_SCRATCH_OFFSET", "CAPS_EXTRA_BLOCK_SCRATCH")


def test_vectors_exercise_the_hard_paths(vectors):
    """The cases above really hit saturation of the logits, couplings of
    exactly 2^15 and non-uniform routing (else the bit-exact runs prove less)."""
    _, _, all_cases = vectors
    full, saturated, uneven = False, False, False
    for case in all_cases:
        if case[0] != "class_caps":
            continue
        _, u, W, p, _ = case
        u_hat = ref.predictions_s8(u, W, p.pred)
        _, trace = ref.dynamic_routing_s8(u_hat, p.routing, return_intermediates=True)
        for c in trace["c"]:
            full |= bool((c == 1 << 15).any())
            uneven |= bool((c.max(axis=1) - c.min(axis=1) > 1000).any())
        for b in trace["b"]:
            saturated |= bool(((b == 127) | (b == -128)).any())
    assert full and saturated and uneven


def run_vectors(vectors, tmp_path, target, backend, defines=(), opt="-O2", extra_sources=(),
                include_dirs=(), extra_flags=(), cache=None):
    require_target(target)
    inc, calls, _ = vectors
    elf = tmp_path / f"{target}_{backend}.elf"
    sources = [build.KERNEL_VECTORS_MAIN, *extra_sources, *build.kernel_sources(backend)]
    program = [d for d in defines if d.startswith(PROGRAM_SETTINGS)]
    kernel = [d for d in defines if not d.startswith(PROGRAM_SETTINGS)]
    build.build(target, sources, elf, include_dirs=[inc, *include_dirs], defines=kernel,
                    program_defines=program, opt=opt, extra_flags=list(extra_flags),
                    cache_dir=cache)
    result = qemu.run(target, elf, timeout=120)
    rows = result.records("CALL")
    failed = [r for r in rows if r.get("status") != 0 or r.get("mismatches") != 0]
    assert not failed, f"{target}/{backend}: mismatching calls: {failed[:5]}\n{result.output[-2000:]}"
    assert len(rows) == len(calls), f"{target}/{backend}: {len(rows)} of {len(calls)} calls ran:\n" \
                                    f"{result.output[-2000:]}"
    assert [r["op"] for r in rows] == [c["op"] for c in calls]
    assert result.records("SUMMARY") == [{"calls": len(calls), "failed": 0}]
    assert result.returncode == 0
    return result


CONFIGS = [
    # target, backend, defines
    ("cortex-m4", "cortex_m", ("CAPS_SCRATCH_OFFSET=0",)),
    ("cortex-m7", "cortex_m", ("CAPS_SCRATCH_OFFSET=1",)),
    ("cortex-m7", "cortex_m", ("CAPS_SCRATCH_OFFSET=2", "CAPS_EXTRA_BLOCK_SCRATCH=1")),
    ("cortex-m33", "cortex_m", ("CAPS_SCRATCH_OFFSET=3",)),
    ("cortex-m55", "cortex_m", ("CAPS_SCRATCH_OFFSET=1",)),
    ("cortex-m55", "helium", ("CAPS_SCRATCH_OFFSET=2",)),
    ("cortex-m55", "helium", ("CAPS_SCRATCH_OFFSET=3", "CAPS_EXTRA_BLOCK_SCRATCH=1")),
    ("cortex-m4", "portable", ()),
    ("rv32imac", "riscv", ("CAPS_NN_NUM_CORES=1",)),
    ("rv32imac", "riscv", ("CAPS_NN_NUM_CORES=2", "CAPS_SCRATCH_OFFSET=3")),
    ("rv32imac", "riscv", ("CAPS_NN_NUM_CORES=8", "CAPS_NN_RISCV_PROFILE",
                           "CAPS_EXTRA_BLOCK_SCRATCH=1")),
]


@pytest.mark.parametrize("target,backend,defines", CONFIGS,
                         ids=[f"{t}-{b}-{'-'.join(d) or 'default'}" for t, b, d in CONFIGS])
def test_backend_bit_exact(vectors, objcache, tmp_path, target, backend, defines):
    result = run_vectors(vectors, tmp_path, target, backend, defines, cache=objcache)
    if "CAPS_NN_RISCV_PROFILE" in defines:
        # per-core counters cover the parallel work: 8 cores all busy on
        # the biggest stored-predictions layer, the busiest core well below
        # the total (recomputing predictions is mostly serial by design)
        prof = result.records("PROFILE")
        assert len(prof) == len(result.records("CALL"))
        calls = {r["index"]: r for r in result.records("CALL")}
        stored = [p for p in prof if calls[p["index"]]["op"] == "class_caps_store"]
        big = max(stored, key=lambda p: calls[p["index"]]["count"])
        cores = [big[f"core{c}"] for c in range(8)]
        assert min(cores) > 0 and big["cores"] == 8
        assert big["critical"] < 0.5 * calls[big["index"]]["count"]


def test_riscv_partition_covers_work_exactly_once(objcache, tmp_path):
    require_target("rv32imac")
    for cores in (1, 2, 3, 8):
        elf = tmp_path / f"partition_{cores}.elf"
        build.build("rv32imac", [TESTS_C / "partition_main.c",
                                 ops_sources() / "src" / "riscv" / "caps_rv_parallel.c"],
                    elf, defines=[f"CAPS_NN_NUM_CORES={cores}"], cache_dir=objcache)
        result = qemu.run("rv32imac", elf, timeout=60)
        assert f"PARTITION PASS cores={cores}" in result.output, result.output
        assert result.returncode == 0


# A stand-in for the PULP SDK: the team fork runs the core ids one after the
# other with pi_core_id() returning the current one, and the Xpulp sdotp
# builtin is an ordinary function.  It checks the CAPS_NN_PULP /
# CAPS_NN_PULP_SDOTP code paths (what a GAP-8 build compiles) end to end.
PMSIS_STUB_H = """
#ifndef PMSIS_STUB_H
#define PMSIS_STUB_H
int pi_core_id(void);
void pi_cl_team_fork(int nb_cores, void (*entry)(void *), void *arg);
void pi_cl_team_barrier(void);
typedef signed char stub_v4s __attribute__((vector_size(4)));
int stub_sdotsp4(stub_v4s a, stub_v4s b, int acc);
#define __builtin_pulp_sdotsp4(a, b, c) stub_sdotsp4((a), (b), (c))
#endif
"""

PMSIS_STUB_C = """
#include "pmsis.h"
static int g_core = -1;
static int g_barriers;
int pi_core_id(void) { return g_core; }
void pi_cl_team_fork(int nb_cores, void (*entry)(void *), void *arg)
{
    for (g_core = 0; g_core < nb_cores; ++g_core) entry(arg);
    g_core = -1;
}
void pi_cl_team_barrier(void) { ++g_barriers; }
int stub_sdotsp4(stub_v4s a, stub_v4s b, int acc)
{
    for (int k = 0; k < 4; ++k) acc += (int)a[k] * (int)b[k];
    return acc;
}
"""


def test_riscv_pulp_code_path_with_sdk_stand_in(vectors, tmp_path):
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "pmsis.h").write_text(PMSIS_STUB_H)
    (stub / "pmsis_stub.c").write_text(PMSIS_STUB_C)
    run_vectors(vectors, tmp_path, "rv32imac", "riscv",
                defines=("CAPS_NN_PULP", "CAPS_NN_PULP_SDOTP", "CAPS_NN_NUM_CORES=8"),
                extra_sources=[stub / "pmsis_stub.c"], include_dirs=[stub],
                extra_flags=["-include", str(stub / "pmsis.h")])


def test_backends_compile_warning_free_with_tflm_flags(tmp_path):
    """TFLM builds third-party kernels with -Werror and its warning set."""
    flags = ["-Werror", "-Wsign-compare", "-Wdouble-promotion", "-Wunused-variable",
             "-Wunused-function", "-Wswitch", "-Wvla", "-Wall", "-Wextra",
             "-Wmissing-field-initializers", "-Wstrict-aliasing", "-Wno-unused-parameter",
             "-Wimplicit-function-declaration", "-std=c11", "-O2", "-c"]
    for target, backend in (("cortex-m7", "cortex_m"), ("cortex-m55", "cortex_m"),
                            ("cortex-m55", "helium"), ("rv32imac", "riscv")):
        require_target(target)
        t = get_target(target)
        own = sorted((ops_sources() / "src" / backend).glob("*.c"))
        own.append(ops_sources() / "src" / "common" / "caps_nn_backend_math.c")
        for src in own:
            cmd = [t.tools[0], *t.cflags, *flags,
                   f"-I{ops_sources() / 'include'}", str(src), "-o",
                   str(tmp_path / (src.stem + ".o"))]
            cmd.insert(1, "-mthumb" if t.arch == "arm" else "--specs=picolibc.specs")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, f"{target} {src.name}:\n{proc.stderr}"


# caps_hl_softmax_recip4 (Helium: double-precision divisions with an exact
# integer fallback near ties) against the exact reciprocal of the contract:
# random sums over the routing's whole range, sums whose quotient lies next
# to a half (the fallback), and the ends of the range.
HL_RECIP_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include "caps_hl_internal.h"

static uint64_t g_state = 0x9E3779B97F4A7C15ull;
static uint64_t next64(void)
{
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}

static uint32_t exact(uint64_t sum)
{
    const uint64_t q = caps_nn_softmax_recip(sum);
    return q > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)q;
}

static long g_bad, g_near;
static uint64_t g_sums[4];
static unsigned g_fill;

/* four sums per call of the four-lane reciprocal */
static void check(uint64_t sum)
{
    g_sums[g_fill++] = sum;
    if (g_fill < 4) {
        return;
    }
    g_fill = 0;
    uint32_t h[4], l[4], r[4];
    for (unsigned k = 0; k < 4; ++k) {
        h[k] = (uint32_t)(g_sums[k] >> 16);
        l[k] = (uint32_t)(g_sums[k] & 0xFFFFu);
    }
    caps_hl_softmax_recip4(h, l, r);
    for (unsigned k = 0; k < 4; ++k) {
        const uint64_t s = g_sums[k];
        if (r[k] != exact(s)) {
            if (g_bad < 5) {
                printf("MISMATCH sum=%llu got=%lu want=%lu\n", (unsigned long long)s,
                       (unsigned long)r[k], (unsigned long)exact(s));
            }
            ++g_bad;
        }
        /* the quotient's fraction within 2^-19 of a half: the fallback */
        const double x = 4611686018427387904.0 / (double)s + 0.5;
        const double f = x - (double)(uint32_t)x - 0.5;
        g_near += (f > 0.5 - 0x1p-19 || f < -0.5 + 0x1p-19);
    }
}

int main(void)
{
    const uint64_t ends[] = {1ull << 30, (1ull << 30) + 1, (1ull << 31) - 1, 1ull << 31,
                             (1ull << 32) - 1, 1ull << 32, (1ull << 32) + 1, 3ull << 30,
                             10ull << 30, (1ull << 41) - 1, 1ull << 40, 1023ull << 30};
    for (unsigned k = 0; k < sizeof(ends) / sizeof(ends[0]); ++k) {
        check(ends[k]);
        check((1ull << 33) + k); /* other lanes beside the ends */
    }
    for (long n = 0; n < 200000; ++n) {
        const int bits = 30 + (int)(next64() % 11);               /* 2^30 .. 2^41 */
        check((1ull << bits) + (next64() & ((1ull << bits) - 1)));
    }
    for (long n = 0; n < 100000; ++n) {
        /* sum near 2^63 / (2q + 1): 2^62 / sum near q + 1/2 (within
         * about q^2 / 2^62, so near a tie for the larger sums) */
        const uint64_t q = (1ull << 21) + next64() % (3ull << 21);
        const uint64_t s = (1ull << 63) / (2 * q + 1) + (next64() % 3);
        if (s >= (1ull << 30)) {
            check(s);
        }
    }
    while (g_fill != 0) {
        check(1ull << 31);
    }
    printf("RECIP bad=%ld near=%ld\n", g_bad, g_near);
    return g_bad != 0;
}
"""


def test_helium_softmax_reciprocal(tmp_path):
    require_target("cortex-m55")
    src = tmp_path / "hl_recip.c"
    src.write_text(HL_RECIP_MAIN)
    src_dir = ops_sources() / "src"
    elf = build.build("cortex-m55", [src, src_dir / "common" / "caps_nn_backend_math.c"],
                          tmp_path / "recip.elf", include_dirs=[src_dir / "helium"])
    result = qemu.run("cortex-m55", elf, timeout=300)
    (row,) = result.records("RECIP")
    assert row["bad"] == 0, result.output[-2000:]
    assert row["near"] > 1000  # the exact fallback really ran
    assert result.returncode == 0


def test_shapes_used_by_the_benchmark_are_the_published_ones():
    assert cases.SHAPES["costa2022-mnist"] == (1024, 4, 10, 6)
    assert cases.SHAPES["sabour2017-mnist"] == (1152, 8, 10, 16)
    n_in, d_in, n_out, d_out = cases.SHAPES["costa2022-mnist"]
    assert n_in == 8 * 8 * 16 and math.prod((n_in, n_out, d_out, d_in)) == 245760
