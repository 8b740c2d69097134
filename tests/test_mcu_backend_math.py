"""The exact fast primitives shared by the optimized backends
(src/common/caps_nn_backend_math.h and .c) equal the primitives of caps_nn_fixedpoint.h:
exhaustively where the domain is small, on millions of random and edge
values elsewhere.  Compiled for the host (the same C the MCUs run)."""
import shutil
import subprocess
from pathlib import Path

from support.toolchains import require_tools

REPO = Path(__file__).resolve().parents[1]
INCLUDE = REPO / "tflm_caps_ops" / "include"
COMMON = REPO / "tflm_caps_ops" / "src" / "common"

PROGRAM = r"""
#include <stdio.h>
#include "caps_nn_backend_math.h"

static uint64_t s = 88172645463325252ull;
static uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
static long bad;
#define CHECK(cond, ...) do { if (!(cond)) { if (bad++ < 5) printf(__VA_ARGS__); } } while (0)

int main(void)
{
    /* Q16 norm: every sq below 2^22, squares and their neighbours, random */
    for (uint32_t sq = 0; sq < (1u << 22); ++sq)
        CHECK(caps_bm_norm_q16(sq) == caps_nn_norm_q16(sq), "norm %u\n", sq);
    for (uint32_t a = 0; a < 32768; ++a)
        for (int d = -1; d <= 1; ++d) {
            const int64_t sq = (int64_t)a * a + d;
            if (sq < 0 || sq >= (1 << 30)) continue;
            CHECK(caps_bm_norm_q16((uint32_t)sq) == caps_nn_norm_q16((uint32_t)sq), "norm %lld\n",
                  (long long)sq);
            CHECK(caps_bm_isqrt32((uint32_t)sq) == (uint32_t)caps_nn_isqrt_u64((uint64_t)sq),
                  "isqrt32 %lld\n", (long long)sq);
        }
    for (int k = 0; k < 3000000; ++k) {
        const uint32_t sq = (uint32_t)(rnd() >> 34);
        CHECK(caps_bm_norm_q16(sq) == caps_nn_norm_q16(sq), "norm %u\n", sq);
    }
    /* softmax reciprocal and Q15 couplings over sums 2^30..2^40 */
    for (int k = 0; k < 3000000; ++k) {
        uint64_t sum = ((uint64_t)1 << 30) + (rnd() >> (24 + rnd() % 40));
        if (sum > ((uint64_t)1 << 40)) sum = (uint64_t)1 << 40;
        const uint32_t r = caps_bm_softmax_recip(sum);
        const uint64_t R = caps_nn_softmax_recip(sum);
        uint32_t e = (uint32_t)(rnd() >> 34);
        if (rnd() & 1) e = 1u << 30;
        if (sum == ((uint64_t)1 << 30)) e = (rnd() & 1) ? (1u << 30) : 0;
        CHECK(caps_bm_softmax_q15(e, r) == caps_nn_softmax_q15(e, R), "q15 %llu %u\n",
              (unsigned long long)sum, e);
        if (R < ((uint64_t)1 << 32)) CHECK(r == R, "recip %llu\n", (unsigned long long)sum);
    }
    /* exp2 of the routing softmax: every exponent up to the zero result
     * and beyond, exhaustively, and random ones */
    for (int32_t w = -70000; w < (32 << 16); ++w)
        CHECK(caps_bm_exp2_neg_q30(w) == caps_nn_exp2_neg_q30(w), "exp2 %d\n", (int)w);
    for (int k = 0; k < 1000000; ++k) {
        const int32_t w = (int32_t)(uint32_t)rnd();
        CHECK(caps_bm_exp2_neg_q30(w) == caps_nn_exp2_neg_q30(w), "exp2 %d\n", (int)w);
    }
    /* the exp table over the whole range of exponent scales */
    for (int k = 0; k < 20000; ++k) {
        const caps_nn_requant beta = {(rnd() % 50 == 0) ? 0 : (int32_t)((1u << 30) + (rnd() >> 34)),
                                      (int32_t)(rnd() % 62) - 31};
        uint32_t table[256];
        caps_bm_exp_table(&beta, 0, 256, table);
        for (int32_t e = 0; e < 256; ++e)
            CHECK(table[e] == caps_nn_exp_neg_q30(e, beta.multiplier, beta.shift),
                  "exp table %d %d %d\n", (int)beta.multiplier, (int)beta.shift, (int)e);
    }
    /* squash gain over the whole range of exponents */
    for (int k = 0; k < 1000000; ++k) {
        const uint32_t sq = (uint32_t)(rnd() >> (34 + rnd() % 30));
        const int32_t m = (int32_t)((1u << 30) + (rnd() >> 34));
        const int32_t e = (int32_t)(rnd() % 200) - 150;
        CHECK(caps_bm_squash_gain(sq, m, e) == caps_nn_squash_gain(sq, m, e), "gain %u %d %d\n",
              sq, m, e);
    }
    /* requantization split wherever it claims to be exact */
    long fast = 0;
    for (int k = 0; k < 3000000; ++k) {
        const int32_t m = (rnd() % 50 == 0) ? 0 : (int32_t)((1u << 30) + (rnd() >> 34));
        const int32_t sh = (int32_t)(rnd() % 62) - 31;
        const int64_t mx = (int64_t)(rnd() >> (34 + rnd() % 30));
        const caps_bm_requant q = caps_bm_requant_init(m, sh, mx);
        if (!q.fast) continue;
        ++fast;
        const int32_t x = (int32_t)((int64_t)(rnd() % (uint64_t)(2 * mx + 1)) - mx);
        CHECK(caps_bm_requantize(x, &q) == caps_nn_requantize(x, m, sh), "req %d %d %d\n", x, m,
              sh);
    }
    printf("BAD %ld FAST %ld\n", bad, fast);
    return bad != 0;
}
"""


def test_fast_primitives_equal_reference(tmp_path):
    require_tools("gcc")
    cc = shutil.which("gcc")
    src = tmp_path / "math_check.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "math_check"
    proc = subprocess.run([cc, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}",
                           f"-I{COMMON}", str(src), str(COMMON / "caps_nn_backend_math.c"),
                           "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout
    bad, fast = (int(v) for v in run.stdout.split()[1::2])
    assert bad == 0 and fast > 100000  # the fast path was really exercised
