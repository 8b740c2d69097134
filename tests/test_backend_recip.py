"""caps_bm_softmax_recip (caps_nn_backend_math.h, inlined into the optimized
routing kernels) equals round(2^62 / sum) clamped to 2^32 - 1 for every sum
it can see.  The C is compiled for the host; the expected values are
Python's exact integer arithmetic.

Its correctness rests on one bound of the reciprocal step it uses
(caps_bm_recip_q32: 2^64 - 3 dh < dh (2^32 + v) <= 2^64 for every 32-bit
normalized divisor dh) plus integer algebra; the bound is checked here for
all 2^31 divisors (slow) and on a dense sample (fast), and the whole
function on millions of sums aimed at the cases the algebra distinguishes."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.toolchains import require_tools

REPO = Path(__file__).resolve().parents[1]
INCLUDE = REPO / "tflm_caps_ops" / "include"
COMMON = REPO / "tflm_caps_ops" / "src" / "common"

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "caps_nn_backend_math.h"

/* recip IN OUT: uint64 sums from IN, uint32 reciprocals to OUT */
static int recip_file(const char *in, const char *out)
{
    FILE *f = fopen(in, "rb");
    FILE *g = fopen(out, "wb");
    if (f == NULL || g == NULL) {
        fprintf(stderr, "cannot open %s or %s\n", in, out);
        return 2;
    }
    uint64_t buf[4096];
    uint32_t res[4096];
    size_t n;
    while ((n = fread(buf, sizeof buf[0], 4096, f)) > 0) {
        for (size_t i = 0; i < n; ++i) {
            res[i] = caps_bm_softmax_recip(buf[i]);
        }
        if (fwrite(res, sizeof res[0], n, g) != n) {
            return 2;
        }
    }
    fclose(f);
    return fclose(g) != 0 ? 2 : 0;
}

/* bound FIRST STOP STEP: 0 <= 2^64 - dh (2^32 + v) < 3 dh for the dh in
 * [FIRST, STOP) with the given stride; prints the largest error in units
 * of 1/dh and the first failures. */
static int bound(uint64_t first, uint64_t stop, uint64_t step)
{
    long bad = 0;
    uint64_t worst = 0, worst_dh = 0;
    for (uint64_t d = first; d < stop; d += step) {
        const uint32_t dh = (uint32_t)d;
        const uint32_t v = caps_bm_recip_q32(dh);
        /* dh (2^32 + v) as 96 bits: hi:lo = dh v + dh 2^32 */
        const uint64_t p = (uint64_t)dh * v;
        const uint64_t hi = (p >> 32) + dh; /* < 2^33 */
        const uint64_t lo = p & 0xFFFFFFFFu;
        /* the product must not exceed 2^64 = 2^32 * 2^32 */
        if (hi > 0xFFFFFFFFu && !(hi == 0x100000000u && lo == 0)) {
            if (bad++ < 5) printf("above dh=%u v=%u\n", dh, v);
            continue;
        }
        const uint64_t gap = ((uint64_t)0 - ((hi << 32) | lo)); /* 2^64 - product */
        if (gap >= 3 * (uint64_t)dh) {
            if (bad++ < 5) printf("below dh=%u v=%u gap=%llu\n", dh, v, (unsigned long long)gap);
        }
        if (gap / dh >= worst) {
            worst = gap / dh;
            worst_dh = dh;
        }
    }
    printf("bad=%ld worst_units=%llu worst_dh=%llu\n", bad, (unsigned long long)worst,
           (unsigned long long)worst_dh);
    return bad != 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "recip") == 0) {
        return recip_file(argv[2], argv[3]);
    }
    if (argc == 5 && strcmp(argv[1], "bound") == 0) {
        return bound(strtoull(argv[2], NULL, 0), strtoull(argv[3], NULL, 0),
                     strtoull(argv[4], NULL, 0));
    }
    fprintf(stderr, "usage: recip IN OUT | bound FIRST STOP STEP\n");
    return 2;
}
"""

TWO32 = 1 << 32


def expected(sums):
    """round(2^62 / sum) clamped to 2^32 - 1, in Python integers: the exact
    rounding of the rational (halves up), independent of the C formula.
    Sums below the contract's 2^30 (quotient above 2^32) clamp as well."""
    return [TWO32 - 1 if s < (1 << 30) else min((2 ** 63 + s) // (2 * s), TWO32 - 1)
            for s in sums]


@pytest.fixture(scope="module")
def recip_bin(tmp_path_factory):
    require_tools("gcc")
    cc = shutil.which("gcc")
    d = tmp_path_factory.mktemp("recip")
    src = d / "recip.c"
    src.write_text(PROGRAM)
    exe = d / "recip"
    subprocess.run([cc, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", str(INCLUDE),
                    "-I", str(COMMON), str(src), "-o", str(exe)], check=True)
    return exe


def run_recip(exe, tmp_path, sums):
    sums = np.asarray(sums, dtype=np.uint64)
    src, dst = tmp_path / "sums.bin", tmp_path / "recip.bin"
    sums.tofile(src)
    subprocess.run([str(exe), "recip", str(src), str(dst)], check=True)
    got = np.fromfile(dst, dtype=np.uint32)
    assert got.size == sums.size, f"{dst}: {got.size} results for {sums.size} sums"
    return got


def check(exe, tmp_path, sums, what):
    sums = np.unique(np.asarray(sums, dtype=np.uint64))
    got = run_recip(exe, tmp_path, sums)
    # exact for every sum in numpy (2^62 + sum/2 < 2^64), cross-checked
    # against Python's rational rounding on a spread of them below
    safe = np.maximum(sums, np.uint64(1 << 30))
    ref = (np.uint64(1 << 62) + (safe >> np.uint64(1))) // safe
    ref = np.where(sums < np.uint64(1 << 30), np.uint64(TWO32 - 1), ref)
    ref = np.minimum(ref, np.uint64(TWO32 - 1)).astype(np.uint32)
    pick = np.linspace(0, sums.size - 1, min(sums.size, 20000)).astype(np.int64)
    assert [int(v) for v in ref[pick]] == expected(int(s) for s in sums[pick])
    bad = np.flatnonzero(got != ref)
    if bad.size:
        rows = [f"sum={int(sums[i])} (0x{int(sums[i]):x}): got {int(got[i])}, "
                f"expected {int(ref[i])}" for i in bad[:10]]
        pytest.fail(f"caps_bm_softmax_recip wrong for {bad.size} of {sums.size} {what}:\n"
                    + "\n".join(rows))
    return sums.size


def edge_sums():
    out = []
    for p in range(30, 64):
        for d in range(-3, 4):
            out.append((1 << p) + d)
    # around k 2^30 (a routing sum: k terms of 2^30 plus small ones), n_out <= 2048
    for k in range(1, 2049):
        for d in (-2, -1, 0, 1, 2, 3, 1 << 10, -(1 << 10)):
            out.append(k * (1 << 30) + d)
    # sums whose quotient rounds at exactly .5 +- 1 ulp: sum = 2^63 / (2q + 1) +- 1
    for q in list(range(1, 3000)) + [(1 << 30) - k for k in range(3000)]:
        base = (1 << 63) // (2 * q + 1)
        out += [base - 1, base, base + 1]
    for q in list(range(1 << 30, (1 << 30) + 3000)) + [TWO32 - 5 - k for k in range(3000)]:
        base = (1 << 63) // (2 * q + 1)
        out += [base - 1, base, base + 1]
    out += [0, 1, (1 << 30) - 1, (1 << 64) - 1, (1 << 63) - 1, 1 << 63, (1 << 63) + 1]
    return [s for s in out if 0 <= s < (1 << 64)]


def test_recip_edges(recip_bin, tmp_path):
    n = check(recip_bin, tmp_path, edge_sums(), "edge sums")
    assert n > 30000


def test_recip_random(recip_bin, tmp_path):
    rng = np.random.default_rng(20240611)
    parts = [
        # routing range: [2^30, 2^34] and up to 1024 * 2^30
        rng.integers(1 << 30, (1 << 34) + 1, 1_500_000, dtype=np.uint64),
        rng.integers(1 << 30, (1 << 40) + 1, 500_000, dtype=np.uint64),
        # every magnitude up to 2^62, log-uniform, then up to 2^64 - 1
        (rng.integers(0, 1 << 62, 1_000_000, dtype=np.uint64)
         >> rng.integers(0, 33, 1_000_000, dtype=np.uint64)) | np.uint64(1 << 30),
        rng.integers(1 << 62, np.iinfo(np.uint64).max, 20_000, dtype=np.uint64,
                     endpoint=True),
    ]
    n = check(recip_bin, tmp_path, np.concatenate(parts), "random sums")
    assert n > 2_900_000


def test_recip_tight_divisors(recip_bin, tmp_path):
    """Sums whose normalized top word is where the reciprocal step is least
    accurate (just above 2^31 and the seed's divisor steps) with every
    shift and with low words at both ends (the part the estimate ignores)."""
    rng = np.random.default_rng(7)
    tops = np.concatenate([
        np.arange(1 << 31, (1 << 31) + 4096, dtype=np.uint64),
        rng.integers(1 << 31, (1 << 31) + (1 << 24), 3000, dtype=np.uint64),
        # dh just below a multiple of 2^16 (the seed's divisor rounds up most)
        (rng.integers(1 << 15, 1 << 16, 3000, dtype=np.uint64) << np.uint64(16))
        - np.uint64(1),
        np.array([TWO32 - 1, TWO32 - 2, (1 << 31) + (1 << 30)], dtype=np.uint64),
    ])
    sums = []
    for shift in range(-2, 31):  # sum = dh * 2^shift (+ low bits): 2^29 .. 2^63
        if shift >= 0:
            base = tops << np.uint64(shift)
            sums.append(base)
            if shift > 0:
                sums.append(base + ((np.uint64(1) << np.uint64(shift)) - np.uint64(1)))
                sums.append(base + (rng.integers(0, 1 << shift, tops.size, dtype=np.uint64)))
        else:
            sums.append(tops >> np.uint64(-shift))
    n = check(recip_bin, tmp_path, np.concatenate(sums), "sums on tight divisors")
    assert n > 500_000


def run_bound(exe, first, stop, step):
    r = subprocess.run([str(exe), "bound", str(first), str(stop), str(step)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"reciprocal bound violated on [{first}, {stop}):\n{r.stdout}"
    return r.stdout


def test_recip_step_bound_sampled(recip_bin):
    """The bound on every 61st divisor and on all of the two ends."""
    out = run_bound(recip_bin, 1 << 31, TWO32, 61)
    run_bound(recip_bin, 1 << 31, (1 << 31) + (1 << 22), 1)
    run_bound(recip_bin, TWO32 - (1 << 20), TWO32, 1)
    worst = int(out.split("worst_units=")[1].split()[0])
    assert worst <= 2, out


@pytest.mark.slow
def test_recip_step_bound_exhaustive(recip_bin):
    """The bound for all 2^31 normalized divisors (two processes)."""
    mid = (1 << 31) + (1 << 30)
    procs = [subprocess.Popen([str(recip_bin), "bound", str(a), str(b), "1"],
                              stdout=subprocess.PIPE, text=True)
             for a, b in (((1 << 31), mid), (mid, TWO32))]
    outs = [p.communicate()[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, f"reciprocal bound violated:\n{out}"
