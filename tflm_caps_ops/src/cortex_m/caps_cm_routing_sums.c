/*
 * Cortex-M routing sums: iteration 0's plain sums over the input capsules
 * with SXTAB16 (two 16-bit lanes per register, flushed before they can
 * overflow), and phase C's coupled sums s_j += c_ij u_hat(j|i) with SMLAD
 * on coupling pairs into int32 registers, added to the int64 accumulators
 * once per block.
 */
#include "caps_cm_routing.h"

/* Rows a 16-bit lane can sum: 255 * 128 < 2^15. */
#define CM_LANE_ROWS 255

/* ---------------------------------------------------------------------
 * Iteration 0: acc += sum over n_rows rows of u_hat (the 16-bit lanes
 * are flushed every CM_LANE_ROWS rows).
 * ------------------------------------------------------------------- */
void caps_cm_routing_uniform_sums(const int8_t *uhat, int32_t n_rows, size_t md, int64_t *acc)
{
    const size_t words = md / 4;
    for (int32_t i0 = 0; i0 < n_rows; i0 += CM_LANE_ROWS) {
        const int32_t n = n_rows - i0 < CM_LANE_ROWS ? n_rows - i0 : CM_LANE_ROWS;
        size_t wdx = 0;
        for (; wdx + 4 <= words; wdx += 4) {
            const int8_t *p = uhat + (size_t)i0 * md + 4 * wdx;
            uint32_t a0 = 0, b0 = 0, a1 = 0, b1 = 0, a2 = 0, b2 = 0, a3 = 0, b3 = 0;
            for (int32_t i = 0; i < n; ++i) {
                const uint32_t x0 = caps_cm_read_s8x4(p);
                const uint32_t x1 = caps_cm_read_s8x4(p + 4);
                const uint32_t x2 = caps_cm_read_s8x4(p + 8);
                const uint32_t x3 = caps_cm_read_s8x4(p + 12);
                a0 = caps_cm_sxtab16(a0, x0);
                b0 = caps_cm_sxtab16_ror8(b0, x0);
                a1 = caps_cm_sxtab16(a1, x1);
                b1 = caps_cm_sxtab16_ror8(b1, x1);
                a2 = caps_cm_sxtab16(a2, x2);
                b2 = caps_cm_sxtab16_ror8(b2, x2);
                a3 = caps_cm_sxtab16(a3, x3);
                b3 = caps_cm_sxtab16_ror8(b3, x3);
                p += md;
            }
            int64_t *q = acc + 4 * wdx;
            const uint32_t lanes[8] = {a0, b0, a1, b1, a2, b2, a3, b3};
            for (int32_t w = 0; w < 4; ++w) {
                q[4 * w + 0] += (int16_t)(lanes[2 * w] & 0xFFFFu);
                q[4 * w + 1] += (int16_t)(lanes[2 * w + 1] & 0xFFFFu);
                q[4 * w + 2] += (int16_t)(lanes[2 * w] >> 16);
                q[4 * w + 3] += (int16_t)(lanes[2 * w + 1] >> 16);
            }
        }
        for (; wdx + 2 <= words; wdx += 2) {
            const int8_t *p = uhat + (size_t)i0 * md + 4 * wdx;
            uint32_t a0 = 0, b0 = 0, a1 = 0, b1 = 0;
            for (int32_t i = 0; i < n; ++i) {
                const uint32_t x0 = caps_cm_read_s8x4(p);
                const uint32_t x1 = caps_cm_read_s8x4(p + 4);
                a0 = caps_cm_sxtab16(a0, x0);
                b0 = caps_cm_sxtab16_ror8(b0, x0);
                a1 = caps_cm_sxtab16(a1, x1);
                b1 = caps_cm_sxtab16_ror8(b1, x1);
                p += md;
            }
            int64_t *q = acc + 4 * wdx;
            q[0] += (int16_t)(a0 & 0xFFFFu);
            q[1] += (int16_t)(b0 & 0xFFFFu);
            q[2] += (int16_t)(a0 >> 16);
            q[3] += (int16_t)(b0 >> 16);
            q[4] += (int16_t)(a1 & 0xFFFFu);
            q[5] += (int16_t)(b1 & 0xFFFFu);
            q[6] += (int16_t)(a1 >> 16);
            q[7] += (int16_t)(b1 >> 16);
        }
        for (; wdx < words; ++wdx) {
            const int8_t *p = uhat + (size_t)i0 * md + 4 * wdx;
            uint32_t a0 = 0, b0 = 0;
            for (int32_t i = 0; i < n; ++i) {
                const uint32_t x0 = caps_cm_read_s8x4(p);
                a0 = caps_cm_sxtab16(a0, x0);
                b0 = caps_cm_sxtab16_ror8(b0, x0);
                p += md;
            }
            int64_t *q = acc + 4 * wdx;
            q[0] += (int16_t)(a0 & 0xFFFFu);
            q[1] += (int16_t)(b0 & 0xFFFFu);
            q[2] += (int16_t)(a0 >> 16);
            q[3] += (int16_t)(b0 >> 16);
        }
        for (size_t e = 4 * words; e < md; ++e) {
            const int8_t *p = uhat + (size_t)i0 * md + e;
            int32_t t = 0;
            for (int32_t i = 0; i < n; ++i) {
                t += *p;
                p += md;
            }
            acc[e] += t;
        }
    }
}

/* ---------------------------------------------------------------------
 * Phase C: s_j += sum_i c_ij u_hat(j|i) over one block.
 * ------------------------------------------------------------------- */

/* Four dimensions d0..d0+3 of output capsule j.  Two input capsules per
 * step: their couplings are adjacent halfwords (one load), their
 * predictions are paired per dimension with PKHBT/PKHTB, and one SMLAD
 * adds both products. */
CAPS_CM_INLINE void phase_c_group4(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                   int64_t *acc)
{
    int32_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    int32_t i = 0;
#if CAPS_CM_DSP
    for (; i + 2 <= n; i += 2) {
        uint32_t cp;
        memcpy(&cp, c + i, 4);
        const uint32_t x0 = caps_cm_read_s8x4(rows);
        const uint32_t x1 = caps_cm_read_s8x4(rows + md);
        const uint32_t l0 = caps_cm_sxtb16(x0), l1 = caps_cm_sxtb16(x1);
        const uint32_t h0 = caps_cm_sxtb16_ror8(x0), h1 = caps_cm_sxtb16_ror8(x1);
        p0 = caps_cm_smlad(caps_cm_pkhbt16(l0, l1), cp, p0);
        p2 = caps_cm_smlad(caps_cm_pkhtb16(l0, l1), cp, p2);
        p1 = caps_cm_smlad(caps_cm_pkhbt16(h0, h1), cp, p1);
        p3 = caps_cm_smlad(caps_cm_pkhtb16(h0, h1), cp, p3);
        rows += 2 * md;
    }
#endif
    for (; i < n; ++i) {
        const int32_t cc = c[i];
        p0 += rows[0] * cc;
        p1 += rows[1] * cc;
        p2 += rows[2] * cc;
        p3 += rows[3] * cc;
        rows += md;
    }
    acc[0] += p0;
    acc[1] += p1;
    acc[2] += p2;
    acc[3] += p3;
}

CAPS_CM_INLINE void phase_c_group1(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                   int64_t *acc)
{
    int32_t p0 = 0;
    for (int32_t i = 0; i < n; ++i) {
        p0 += rows[0] * c[i];
        rows += md;
    }
    acc[0] += p0;
}

/* Two dimensions d0, d0+1 (dim 6's last two, the tail of dim % 4 >= 2),
 * two input capsules per step: [u0 u1 u0' u1']
 * from two halfword loads, whose SXTB16 halves are the pairs (u0, u0')
 * and (u1, u1') against the adjacent couplings (c, c'). */
CAPS_CM_INLINE void phase_c_pair2(const int8_t *rows, size_t md, const int16_t *c, int32_t n,
                                  int64_t *acc)
{
    int32_t p0 = 0, p1 = 0;
    int32_t i = 0;
#if CAPS_CM_DSP
    for (; i + 2 <= n; i += 2) {
        uint32_t cp;
        memcpy(&cp, c + i, 4);
        const uint32_t t = caps_cm_read_s8x2(rows) | (caps_cm_read_s8x2(rows + md) << 16);
        p0 = caps_cm_smlad(caps_cm_sxtb16(t), cp, p0);
        p1 = caps_cm_smlad(caps_cm_sxtb16_ror8(t), cp, p1);
        rows += 2 * md;
    }
#endif
    for (; i < n; ++i) {
        const int32_t cc = c[i];
        p0 += rows[0] * cc;
        p1 += rows[1] * cc;
        rows += md;
    }
    acc[0] += p0;
    acc[1] += p1;
}

CAPS_CM_INLINE void phase_c_dims(const caps_nn_routing_buffers *sc, const int8_t *rows,
                                 const size_t md, int32_t n, const int32_t n_out, const int32_t dim)
{
    for (int32_t j = 0; j < n_out; ++j) {
        const int16_t *c = sc->cbuf + (size_t)j * sc->block;
        const int8_t *r = rows + (size_t)j * dim;
        int64_t *acc = sc->acc + (size_t)j * dim;
        /* passes of at most four dims keep every partial sum in a register */
        int32_t d = 0;
        for (; d + 4 <= dim; d += 4) {
            phase_c_group4(r + d, md, c, n, acc + d);
        }
        if (d + 2 <= dim) {
            phase_c_pair2(r + d, md, c, n, acc + d);
            d += 2;
        }
        if (d < dim) {
            phase_c_group1(r + d, md, c, n, acc + d);
        }
    }
}

void caps_cm_routing_coupled_sums(const caps_nn_routing_buffers *sc, const int8_t *rows,
                                  size_t md, int32_t n, int32_t n_out, int32_t dim)
{
    if (n_out == 10 && dim == 6) {
        phase_c_dims(sc, rows, 60, n, 10, 6);
    } else if (n_out == 10 && dim == 16) {
        phase_c_dims(sc, rows, 160, n, 10, 16);
    } else {
        phase_c_dims(sc, rows, md, n, n_out, dim);
    }
}
