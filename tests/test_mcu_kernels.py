"""The Cortex-M and RISC-V backends equal the numpy reference bit for bit,
run bare-metal under QEMU (Cortex-M4/M7/M33/M55 system boards, RV32IMAC
virt at 1, 2 and 8 emulated cluster cores).

One vector header (tflm_caps.reference.vectors format + the reference's
outputs) is built per session; every configuration compiles it with the
kernel library into a semihosting image (firmware/kernel_vectors_main.c)
that checks every call and exits non-zero on any mismatch.
"""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
sys.path.insert(0, str(FIRMWARE))
import mcu_build  # noqa: E402
import mcu_vectors  # noqa: E402

from tflm_caps.reference import int8 as ref  # noqa: E402
from tflm_caps.reference import vectors as vec  # noqa: E402

pytestmark = pytest.mark.emulated

MAIN = FIRMWARE / "kernel_vectors_main.c"


def require(target):
    missing = mcu_build.missing_tools(target)
    if missing:
        pytest.skip(f"{target}: toolchain/emulator not installed ({', '.join(missing)}); "
                    "scripts/install.sh installs them")


def _cases():
    rng = np.random.default_rng(20240611)
    cc = mcu_vectors.calibrated_class_caps
    rc = mcu_vectors.random_class_caps
    cases = []
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
    ]
    for make, dims, routings, per_capsule in shapes:
        u, W, p = make(rng, *dims, routings=routings, per_capsule=per_capsule)
        cases.append(("class_caps", u, W, p, vec.ALL_CLASS_CAPS))
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
        cases.append(("class_caps", u, W, p, vec.ALL_CLASS_CAPS | vec.F_INT4))
    # every nibble code through the fast paths: multipliers below 1 with a
    # right shift (branch-free requantization), N_out > 32 (requantization
    # not cached), a multiplier in [0.5, 1) (no right shift)
    for dims, uhat_scale in [((37, 4, 10, 6), 0.5), ((9, 4, 40, 2), 0.5), ((7, 8, 3, 16), 0.5),
                             ((5, 8, 35, 3), 0.5), ((4, 16, 3, 2), 0.5),
                             ((6, 4, 3, 4), 0.05 / 128 / 0.7), ((6, 8, 3, 3), 0.05 / 128 / 0.7)]:
        n_in, d_in, n_out, d_out = dims
        quant = mcu_vectors.q.ClassCapsQuant(1 / 128, int(rng.integers(-20, 20)), [0.05],
                                             uhat_scale, [0.3, 0.2, 0.2], [0.4, 0.4])
        u = rng.integers(-128, 128, (n_in, d_in)).astype(np.int8)
        W = rng.integers(-8, 8, (n_in, n_out, d_out, d_in)).astype(np.int8)
        p = mcu_vectors.q.class_caps_params(dims, quant)
        assert all(s <= 0 for s in p.pred.shifts)
        cases.append(("class_caps", u, W, p, vec.ALL_CLASS_CAPS | vec.F_INT4))
    cases.append(mcu_vectors.squash_case(rng, 33, 5, scale=0.05, zp=3))
    cases.append(mcu_vectors.squash_case(rng, 16, 4, scale=3e-4, zp=-128))
    cases.append(mcu_vectors.squash_case(rng, 7, 16, scale=2.0, zp=127))
    zeros = np.zeros((3, 6), dtype=np.int8)
    cases.append(("squash", zeros, mcu_vectors.q.squash_params(0.1, 0)))
    cases.append(mcu_vectors.length_case(rng, 33, 5, scale=0.02, zp=-7))
    cases.append(mcu_vectors.length_case(rng, 9, 16, scale=1.0 / 128, zp=0))
    cases.append(("length", zeros, mcu_vectors.q.length_params(0.5, 0)))
    return cases


@pytest.fixture(scope="session")
def vectors(tmp_path_factory):
    """(include dir, expected call list, cases) shared by every configuration."""
    cases = _cases()
    d = tmp_path_factory.mktemp("mcu_vectors")
    calls = mcu_vectors.write_header(d / "caps_vectors.h", cases, scratch_offset=3)
    return d, calls, cases


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
    _, _, cases = vectors
    full, saturated, uneven = False, False, False
    for case in cases:
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
    require(target)
    inc, calls, _ = vectors
    elf = tmp_path / f"{target}_{backend}.elf"
    sources = [MAIN, *extra_sources, *mcu_build.kernel_sources(backend)]
    program = [d for d in defines if d.startswith(PROGRAM_SETTINGS)]
    kernel = [d for d in defines if not d.startswith(PROGRAM_SETTINGS)]
    mcu_build.build(target, sources, elf, include_dirs=[inc, *include_dirs], defines=kernel,
                    program_defines=program, opt=opt, extra_flags=list(extra_flags),
                    cache_dir=cache)
    result = mcu_build.run(target, elf, timeout=120)
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
    require("rv32imac")
    for cores in (1, 2, 3, 8):
        elf = tmp_path / f"partition_{cores}.elf"
        mcu_build.build("rv32imac", [FIRMWARE / "partition_main.c",
                                     FIRMWARE.parent / "tflm_caps_ops/src/riscv/caps_rv_parallel.c"],
                        elf, defines=[f"CAPS_NN_NUM_CORES={cores}"], cache_dir=objcache)
        result = mcu_build.run("rv32imac", elf, timeout=60)
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


# arm_nn_vec_mat_mult_t_s8 as CMSIS-NN documents it (per-tensor
# requantization with TFLite rounding, lhs/rhs/dst offsets, clamping,
# address_offset), written from the documentation: checks the arguments
# the CAPS_NN_USE_CMSIS_NN route passes.  The real library is not available
# here.
CMSIS_NN_STUB_C = """
#include <stdint.h>
static int32_t dhm(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * b + (1ll << 30)) >> 31);
}
static int32_t dpot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)((1u << e) - 1u);
    const int32_t rem = x & mask;
    int32_t res = x >> e;
    const int32_t thr = (mask >> 1) + (res < 0 ? 1 : 0);
    return res + (rem > thr ? 1 : 0);
}
int arm_nn_vec_mat_mult_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *kernel_sum,
                             const int32_t *bias, int8_t *dst, const int32_t lhs_offset,
                             const int32_t dst_offset, const int32_t dst_multiplier,
                             const int32_t dst_shift, const int32_t rhs_cols,
                             const int32_t rhs_rows, const int32_t activation_min,
                             const int32_t activation_max, const int32_t address_offset,
                             const int32_t rhs_offset)
{
    (void)kernel_sum;
    for (int32_t r = 0; r < rhs_rows; ++r) {
        int32_t acc = bias ? bias[r] : 0;
        for (int32_t k = 0; k < rhs_cols; ++k)
            acc += (lhs[k] + lhs_offset) * (rhs[r * rhs_cols + k] + rhs_offset);
        const int32_t left = dst_shift > 0 ? dst_shift : 0;
        const int32_t right = dst_shift > 0 ? 0 : -dst_shift;
        acc = dpot(dhm(acc * (1 << left), dst_multiplier), right) + dst_offset;
        acc = acc < activation_min ? activation_min : (acc > activation_max ? activation_max : acc);
        dst[r * address_offset] = (int8_t)acc;
    }
    return 0;
}
"""


def test_cortex_m_cmsis_nn_route_arguments(vectors, objcache, tmp_path):
    stub = tmp_path / "arm_nn_stub.c"
    stub.write_text(CMSIS_NN_STUB_C)
    run_vectors(vectors, tmp_path, "cortex-m7", "cortex_m", defines=("CAPS_NN_USE_CMSIS_NN",),
                extra_sources=[stub], cache=objcache)


def test_backends_compile_warning_free_with_tflm_flags(tmp_path):
    """TFLM builds third-party kernels with -Werror and its warning set."""
    flags = ["-Werror", "-Wsign-compare", "-Wdouble-promotion", "-Wunused-variable",
             "-Wunused-function", "-Wswitch", "-Wvla", "-Wall", "-Wextra",
             "-Wmissing-field-initializers", "-Wstrict-aliasing", "-Wno-unused-parameter",
             "-Wimplicit-function-declaration", "-std=c11", "-O2", "-c"]
    for target, backend in (("cortex-m7", "cortex_m"), ("cortex-m55", "cortex_m"),
                            ("rv32imac", "riscv")):
        require(target)
        t = mcu_build.get_target(target)
        own = sorted((mcu_build.OPS_DIR / "src" / backend).glob("*.c"))
        own.append(mcu_build.OPS_DIR / "src" / "common" / "caps_nn_backend_math.c")
        for src in own:
            cmd = [mcu_build.tools(t)[0], *t.cflags, *flags,
                   f"-I{mcu_build.OPS_DIR / 'include'}", str(src), "-o",
                   str(tmp_path / (src.stem + ".o"))]
            cmd.insert(1, "-mthumb" if t.arch == "arm" else "--specs=picolibc.specs")
            proc = mcu_build.subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, f"{target} {src.name}:\n{proc.stderr}"


def test_shapes_used_by_the_benchmark_are_the_published_ones():
    assert mcu_vectors.SHAPES["costa2022-mnist"] == (1024, 4, 10, 6)
    assert mcu_vectors.SHAPES["sabour2017-mnist"] == (1152, 8, 10, 16)
    n_in, d_in, n_out, d_out = mcu_vectors.SHAPES["costa2022-mnist"]
    assert n_in == 8 * 8 * 16 and math.prod((n_in, n_out, d_out, d_in)) == 245760
