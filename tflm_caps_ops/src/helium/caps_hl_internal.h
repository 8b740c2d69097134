/*
 * Internals shared by the Helium (MVE) backend's source files (not
 * installed): vector requantization, saturating narrowing, the squared
 * norms of four 4-D capsules, the routing blocks in whole tiles.
 */
#ifndef TFLM_CAPS_HL_INTERNAL_H
#define TFLM_CAPS_HL_INTERNAL_H

#if !defined(__ARM_FEATURE_MVE) || !(__ARM_FEATURE_MVE & 1)
#error "tflm_caps_ops: the helium backend needs Helium (MVE), e.g. -mcpu=cortex-m55 or -mcpu=cortex-m85; select the cortex_m backend for other cores"
#endif

#include <arm_mve.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/caps_nn_backend_math.h"
#include "../common/caps_nn_scratch.h"
#include "tflm_caps/caps_nn_functions.h"

#define CAPS_HL_INLINE static inline __attribute__((always_inline))
#define CAPS_HL_NOINLINE __attribute__((noinline))

/* ---------------------------------------------------------------------
 * Requantization of four lanes, exactly caps_nn_requantize:
 *   VQSHL       x' = sat32(x << max(shift, 0));
 *   VQRDMULH    y = sat((2 x' M + 2^31) >> 32) = gemmlowp's SRDHM (ties
 *               toward +inf, the one overflow saturates);
 *   VRSHL       RDBPOT(y, e) = (y - [y < 0] + 2^(e-1)) >> e for e >= 1
 *               (ties away from zero; VRSHL alone rounds ties up).  y is
 *               above INT32_MIN (M < 2^31), so y - 1 does not wrap.
 * ------------------------------------------------------------------- */
typedef struct {
    int32_t mult;
    int32_t lshift; /* max(shift, 0) */
    int32_t nshift; /* min(shift, 0): the VRSHL amount */
    int32_t fix;    /* -1 when nshift < 0 (subtract [y < 0]), else 0 */
} caps_hl_rq;

CAPS_HL_INLINE caps_hl_rq caps_hl_rq_init(int32_t multiplier, int32_t shift)
{
    caps_hl_rq q;
    q.mult = multiplier;
    q.lshift = shift > 0 ? shift : 0;
    q.nshift = shift < 0 ? shift : 0;
    q.fix = shift < 0 ? -1 : 0;
    return q;
}

/* Any params (one set for all lanes). */
CAPS_HL_INLINE int32x4_t caps_hl_requant(int32x4_t x, const caps_hl_rq *q)
{
    const int32x4_t y = vqrdmulhq_n_s32(vqshlq_r_s32(x, q->lshift), q->mult);
    const int32x4_t fix = vandq_s32(vshrq_n_s32(y, 31), vdupq_n_s32(q->fix));
    return vrshlq_n_s32(vaddq_s32(y, fix), q->nshift);
}

/* shift < 0 (the usual case: no left shift, a rounding right shift) with
 * one multiplier: the ties-away correction -[y < 0] goes into the
 * accumulator of VQRDMLAH, (fix 2^32 + 2 x M + 2^31) >> 32 = SRDHM(x, M)
 * - [x < 0] (exact: y < 0 only if x < 0, and a negative x with y = 0
 * rounds to 0 either way); no saturation can occur (|SRDHM| <= |x|). */
CAPS_HL_INLINE int32x4_t caps_hl_requant_rs(int32x4_t x, int32_t mult, int32_t nshift)
{
    return vrshlq_n_s32(vqrdmlahq_n_s32(vshrq_n_s32(x, 31), x, mult), nshift);
}

/* Per-lane params, all shifts < 0 (nshift lanes = shift). */
CAPS_HL_INLINE int32x4_t caps_hl_requant_rs_v(int32x4_t x, int32x4_t mult, int32x4_t nshift)
{
    const int32x4_t y = vqrdmulhq_s32(x, mult);
    return vrshlq_s32(vaddq_s32(y, vshrq_n_s32(y, 31)), nshift);
}

/* Per-lane params, any shifts. */
CAPS_HL_INLINE int32x4_t caps_hl_requant_v(int32x4_t x, int32x4_t mult, int32x4_t lshift,
                                           int32x4_t nshift, int32x4_t fix)
{
    const int32x4_t y = vqrdmulhq_s32(vqshlq_s32(x, lshift), mult);
    return vrshlq_s32(vaddq_s32(y, vandq_s32(vshrq_n_s32(y, 31), fix)), nshift);
}

/* sat8 of each lane, in the lane's low byte for VSTRB.32: a saturating
 * shift to the top byte and back. */
CAPS_HL_INLINE int32x4_t caps_hl_sat8_lanes(int32x4_t x)
{
    return vshrq_n_s32(vqshlq_n_s32(x, 24), 24);
}

/* sat8 of 16 lanes into bytes, v_k's lane l going to byte 4 l + k.  Each
 * bottom narrowing writes into its own source (the other half is then
 * overwritten by the top narrowing), so no register is copied. */
CAPS_HL_INLINE int8x16_t caps_hl_sat8_interleave4(int32x4_t v0, int32x4_t v1, int32x4_t v2,
                                                  int32x4_t v3)
{
    const int16x8_t even = vqmovntq_s32(vqmovnbq_s32(vreinterpretq_s16_s32(v0), v0), v2);
    const int16x8_t odd = vqmovntq_s32(vqmovnbq_s32(vreinterpretq_s16_s32(v1), v1), v3);
    return vqmovntq_s16(vqmovnbq_s16(vreinterpretq_s8_s16(even), even), odd);
}

/* r[l] = caps_bm_softmax_recip(h[l] 2^16 + l[l]) = min(floor((2^62 +
 * floor(sum/2)) / sum), 2^32 - 1) for four sums in [2^30, 2^53): that
 * quotient is floor(x + 1/2) with x = 2^62 / sum.  With a double-precision
 * FPU (the Armv8.1-M cores have one): sum is exact in double, X = x
 * correctly rounded is within 2^-21 of x (x <= 2^32), VCVTA rounds X to
 * the nearest integer Q (ties away; saturating) and X - Q is exact, so Q
 * is the result whenever |X - Q| < 1/2 - 2^-19 (x then is not within
 * 2^-20 of a half).  The four |X - Q| go through one max and one compare;
 * otherwise (rare: a near tie, or the clamp at sum = 2^30 where Q
 * saturates to 2^32 - 1 and |X - Q| = 1) the exact integer primitive
 * decides all four. */
#if defined(__ARM_FP) && (__ARM_FP & 8)
CAPS_HL_INLINE double caps_hl_recip_lane(const uint32_t *h, const uint32_t *l, uint32_t *r,
                                         double c62, double c16)
{
    float a, b;
    double x, y;
    __asm__("vldr %[a], %[hm]\n\t"
            "vldr %[b], %[lm]\n\t"
            "vcvt.f64.u32 %P[x], %[a]\n\t"
            "vcvt.f64.u32 %P[y], %[b]\n\t"
            "vfma.f64 %P[y], %P[x], %P[k]\n\t" /* hi 2^16 + lo, exact */
            "vdiv.f64 %P[x], %P[c], %P[y]\n\t"
            "vcvta.u32.f64 %[a], %P[x]\n\t"
            "vcvt.f64.u32 %P[y], %[a]\n\t"
            "vstr %[a], %[rm]\n\t"
            "vsub.f64 %P[x], %P[x], %P[y]\n\t"
            "vabs.f64 %P[x], %P[x]"
            : [a] "=&t"(a), [b] "=&t"(b), [x] "=&w"(x), [y] "=&w"(y), [rm] "=Uv"(*r)
            : [hm] "Uv"(*h), [lm] "Uv"(*l), [c] "w"(c62), [k] "w"(c16));
    return x;
}
#endif

CAPS_HL_INLINE void caps_hl_softmax_recip4(const uint32_t h[4], const uint32_t l[4], uint32_t r[4])
{
#if defined(__ARM_FP) && (__ARM_FP & 8)
    const double c62 = 4611686018427387904.0, c16 = 65536.0;
    const double f0 = caps_hl_recip_lane(h, l, r, c62, c16);
    const double f1 = caps_hl_recip_lane(h + 1, l + 1, r + 1, c62, c16);
    const double f2 = caps_hl_recip_lane(h + 2, l + 2, r + 2, c62, c16);
    const double f3 = caps_hl_recip_lane(h + 3, l + 3, r + 3, c62, c16);
    if (__builtin_fmax(__builtin_fmax(f0, f1), __builtin_fmax(f2, f3)) < 0.5 - 0x1p-19) {
        return;
    }
#endif
    for (int32_t k = 0; k < 4; ++k) {
        r[k] = caps_bm_softmax_recip(((uint64_t)h[k] << 16) + l[k]);
    }
}

/* ---------------------------------------------------------------------
 * Four 4-D capsules, one per lane (squash and length of D = 4): element k
 * of capsule l is gathered from x + 4 l + k; y_k = x_k - zp; the squared
 * norms.  `tail` (a constant) predicates the loads to the first lanes of p.
 * ------------------------------------------------------------------- */
typedef struct {
    int32x4_t y0, y1, y2, y3;
    int32x4_t sq;
} caps_hl_caps4;

CAPS_HL_INLINE caps_hl_caps4 caps_hl_load_caps4(const int8_t *x, int32_t zp, uint32x4_t off,
                                                mve_pred16_t p, const int tail)
{
    caps_hl_caps4 c;
    if (tail) {
        c.y0 = vldrbq_gather_offset_z_s32(x, off, p);
        c.y1 = vldrbq_gather_offset_z_s32(x + 1, off, p);
        c.y2 = vldrbq_gather_offset_z_s32(x + 2, off, p);
        c.y3 = vldrbq_gather_offset_z_s32(x + 3, off, p);
    } else {
        c.y0 = vldrbq_gather_offset_s32(x, off);
        c.y1 = vldrbq_gather_offset_s32(x + 1, off);
        c.y2 = vldrbq_gather_offset_s32(x + 2, off);
        c.y3 = vldrbq_gather_offset_s32(x + 3, off);
    }
    c.y0 = vsubq_n_s32(c.y0, zp);
    c.y1 = vsubq_n_s32(c.y1, zp);
    c.y2 = vsubq_n_s32(c.y2, zp);
    c.y3 = vsubq_n_s32(c.y3, zp);
    c.sq = vaddq_s32(vaddq_s32(vmulq_s32(c.y0, c.y0), vmulq_s32(c.y1, c.y1)),
                     vaddq_s32(vmulq_s32(c.y2, c.y2), vmulq_s32(c.y3, c.y3)));
    return c;
}

/* Squash gain-table index of each lane's sq (caps_nn_squash_index):
 * shift = max(0, floor(log2 sq) - 7) = 32 - clz(sq >> 8), and
 * index = (sq >> shift) + (shift << 7). */
CAPS_HL_INLINE uint32x4_t caps_hl_squash_index(int32x4_t sq)
{
    const uint32x4_t s = vreinterpretq_u32_s32(sq);
    const int32x4_t nshift =
        vsubq_n_s32(vreinterpretq_s32_u32(vclzq_u32(vshrq_n_u32(s, 8))), 32);
    const int32x4_t idx =
        vmlaq_n_s32(vshlq_s32(sq, nshift), nshift, -(1 << CAPS_NN_SQUASH_LUT_BITS));
    return vreinterpretq_u32_s32(idx);
}

/* sum (x_k - zp)^2 of one capsule of any dim (8 elements per step, the
 * last step predicated). */
CAPS_HL_INLINE uint32_t caps_hl_squared_norm(const int8_t *x, int32_t dim, int32_t zp)
{
    int32_t acc = 0;
    for (int32_t k = 0; k < dim; k += 8) {
        const mve_pred16_t p = vctp16q((uint32_t)(dim - k));
        const int16x8_t y = vsubq_n_s16(vldrbq_z_s16(x + k, p), (int16_t)zp);
        acc = vmladavaq_p_s16(acc, y, y, p);
    }
    return (uint32_t)acc;
}

/* 16 bytes at *p, *p advanced by 16 (one post-indexed VLDRB; GCC 12
 * otherwise spends a copy and an add of the pointer per pair of loads). */
CAPS_HL_INLINE int8x16_t caps_hl_load16(const int8_t **p)
{
    int8x16_t v;
    __asm__("vldrb.8 %q0, [%1], #16" : "=w"(v), "+r"(*p) : "m"(*(const int8_t(*)[16]) * p));
    return v;
}

/* Post-indexed loads and stores with a constant step (the tile row
 * stride), which GCC 12 otherwise turns into pointer copies and adds:
 * four int8 widened to int32, four uint32, four int16 stores of the low
 * halves of int32 lanes (the widening/narrowing forms take r0-r7). */
#define CAPS_HL_LDRB_S32_POST(v, p, step)                                              \
    __asm__("vldrb.s32 %q0, [%1], #" #step                                           \
            : "=w"(v), "+l"(p)                                                       \
            : "m"(*(const int8_t(*)[4])(p)))
#define CAPS_HL_LDRW_POST(v, p, step)                                                  \
    __asm__("vldrw.u32 %q0, [%1], #" #step                                           \
            : "=w"(v), "+r"(p)                                                       \
            : "m"(*(const uint32_t(*)[4])(p)))
#define CAPS_HL_LDRD_POST(a, b, p)                                                     \
    __asm__("ldrd %0, %1, [%2], #8"                                                  \
            : "=r"(a), "=r"(b), "+r"(p)                                              \
            : "m"(*(const int32_t(*)[2])(p)))
#define CAPS_HL_STRW_POST(v, p, step)                                                  \
    __asm__("vstrw.32 %q2, [%0], #" #step : "+r"(p), "=m"(*(uint32_t(*)[4])(p)) : "w"(v))
#define CAPS_HL_STRH_S32_POST(v, p, step)                                              \
    __asm__("vstrh.32 %q2, [%0], #" #step : "+l"(p), "=m"(*(int16_t(*)[4])(p)) : "w"(v))

/* Four scalars into one vector, lane l = a_l, with two dual-lane VMOVs
 * (VMOV Qd[2], Qd[0], Rt, Rt2 writes Rt to lane 0 and Rt2 to lane 2).
 * Inline assembly: GCC 12's vcreateq swaps the two halves.  Two
 * statements, so a0/a2 can be dead before a1/a3 exist; each pair must be
 * distinct computations (the instruction refuses one register twice). */
CAPS_HL_INLINE int32x4_t caps_hl_vec4(int32_t a0, int32_t a1, int32_t a2, int32_t a3)
{
    int32x4_t v;
    __asm__("vmov %q0[2], %q0[0], %1, %2" : "=w"(v) : "r"(a0), "r"(a2));
    __asm__("vmov %q0[3], %q0[1], %1, %2" : "+w"(v) : "r"(a1), "r"(a3));
    return v;
}

/* ---------------------------------------------------------------------
 * Predictions (caps_predictions_s8.c).
 * ------------------------------------------------------------------- */
enum {
    CAPS_HL_PRED_D4 = 0,    /* dim_in 4: two rows per int16 vector */
    CAPS_HL_PRED_D4_S8 = 1, /* dim_in 4, zp 0: four rows per int8 vector */
    CAPS_HL_PRED_D8 = 2,    /* dim_in 8: one row per int16 vector */
    CAPS_HL_PRED_D8_S8 = 3, /* dim_in 8, zp 0: two rows per int8 vector */
    CAPS_HL_PRED_ANY = 4,   /* any dim_in: predicated loop over each row */
    /* packed 4-bit weights (caps_predictions_s4.c) */
    CAPS_HL_PRED_D4_S4 = 5, /* dim_in 4, zp 0: four rows per 8 weight bytes */
    CAPS_HL_PRED_D8_S4 = 6, /* dim_in 8, zp 0: two rows per 8 weight bytes */
    CAPS_HL_PRED_ANY_S4 = 7 /* anything else: each row from its first nibble */
};
enum {
    CAPS_HL_RQ_FAST = 0,    /* every shift < 0, scalar params per run of rows */
    CAPS_HL_RQ_GENERAL = 1, /* some shift >= 0: the full requantization */
    CAPS_HL_RQ_TABLE = 2,   /* shifts < 0, per-capsule scales, per-row table */
    CAPS_HL_RQ_GROUPS = 3,  /* shifts < 0, per-capsule scales, dim_out a multiple
                               of 4: one (scalar) params pair per group of 4 rows */
    CAPS_HL_RQ_PERIOD6 = 4  /* shifts < 0, per-capsule scales, dim_out 6, dim_in 4,
                               zp 0: per 12 rows (two capsules), scalar params of
                               the first and third groups, vectors of the second */
};
/* Rows of the per-row requantization table (a multiple of 4). */
#define CAPS_HL_PRED_TABLE_ROWS 64

/* Prepared predictions of one layer: the scalars the loops use (copied
 * into locals per call) and the per-row requantization table. */
typedef struct {
    int32_t n_out;
    int32_t dim_out;
    int32_t dim_in;
    int32_t md; /* n_out * dim_out rows per input capsule */
    int32_t zp;
    int32_t num_scales;
    const int32_t *multipliers;
    const int32_t *shifts;
    int32_t kind;   /* CAPS_HL_PRED_* */
    int32_t s4;     /* weights packed 4 bits (the _S4 kinds) */
    int32_t mode;   /* CAPS_HL_RQ_* */
    int16_t *u_off; /* CAPS_HL_PRED_ANY: u - zp of the current capsule (scratch);
                       CAPS_HL_PRED_ANY_S4: its even and odd elements, below */
    const int32_t *rq_mult;  /* CAPS_HL_RQ_TABLE: per row, CAPS_HL_RQ_GROUPS: per
                                group of 4 rows, CAPS_HL_RQ_PERIOD6: per 12 rows
                                {m0, s0, m2, s2, m1[4], s1[4]} (the tables below) */
    const int32_t *rq_shift;
} caps_hl_pred_core;

typedef struct {
    caps_hl_pred_core core;
    int32_t rq_mult[CAPS_HL_PRED_TABLE_ROWS];
    int32_t rq_shift[CAPS_HL_PRED_TABLE_ROWS];
} caps_hl_pred;

/* Prepares `pc` from checked params; scratch is the predictions context
 * (caps_predictions_s8_get_buffer_size bytes); s4: weights packed 4 bits
 * (caps_nn_int4.h). */
void caps_hl_pred_init(caps_hl_pred *pc, const caps_class_caps_dims *dims,
                       const caps_predictions_params *params, void *scratch, int32_t s4);

/* The weights of input capsule i (int8, or its packed block). */
CAPS_HL_INLINE const int8_t *caps_hl_pred_weights(const caps_hl_pred *pc, const int8_t *weights,
                                                  int32_t i)
{
    const size_t n = (size_t)i * (size_t)pc->core.md * (size_t)pc->core.dim_in;
    return weights + (pc->core.s4 ? n / 2u : n);
}

/* 16 packed weights (the 8 bytes at p; `pred` over halfword lanes: the
 * first bytes only) in natural order as int8 lanes 16 w: element 2l (low
 * nibble of byte l) in byte 2l, element 2l + 1 (high nibble) in byte
 * 2l + 1, each nibble in the top half of its byte.  16 w is exact in
 * int8 ([-128, 112]), and a dot product of 16 w against int8 inputs is
 * 16 times the int4 one within the int8 kernel's bound (|16 w| <= 128),
 * so an arithmetic shift by 4 gives it back exactly.  VSHL, VBIC, VMOVNT. */
CAPS_HL_INLINE int8x16_t caps_hl_s4_x16(uint16x8_t b)
{
    const uint8x16_t lo = vreinterpretq_u8_u16(vshlq_n_u16(b, 4)); /* even bytes: low << 4 */
    return vreinterpretq_s8_u8(vmovntq_u16(lo, vbicq_n_u16(b, 0x0F))); /* odd: high nibble */
}

CAPS_HL_INLINE int8x16_t caps_hl_s4_load16(const int8_t *p)
{
    return caps_hl_s4_x16(vldrbq_u16((const uint8_t *)p));
}

CAPS_HL_INLINE int8x16_t caps_hl_s4_load16_z(const int8_t *p, mve_pred16_t pred)
{
    return caps_hl_s4_x16(vldrbq_z_u16((const uint8_t *)p, pred));
}

/* caps_hl_predict of packed weights (pc prepared with s4 = 1), and its
 * path for any shape (CAPS_HL_PRED_ANY_S4). */
void caps_hl_predict_s4(const caps_hl_pred *pc, const int8_t *input, const int8_t *weights,
                        int8_t *out, int32_t n_in, int32_t rstride, int32_t istride);
void caps_hl_predict_any_s4(const caps_hl_pred *pc, const int8_t *input, const int8_t *weights,
                            int8_t *out, int32_t n_in, int32_t rstride, int32_t istride);

/* Predictions of n_in consecutive input capsules: row r of capsule i goes
 * to out[i istride + r rstride] (natural layout: istride md, rstride 1;
 * transposed: istride 1, rstride the capsule count of the block). */
void caps_hl_predict(const caps_hl_pred *pc, const int8_t *input, const int8_t *weights,
                     int8_t *out, int32_t n_in, int32_t rstride, int32_t istride);

/* ---------------------------------------------------------------------
 * Routing scratch (caps_routing_s8.c): the layout of
 * src/common/caps_nn_scratch.h.  The block buffer holds the block's Q15
 * couplings [n_out][block] and, unless the class-capsule layer stores its
 * predictions (in tiles), the block's prediction tiles (md bytes per
 * capsule) -- also for the routing API, whose natural-layout u_hat is
 * transposed into tiles block by block.
 * ------------------------------------------------------------------- */
/* Input capsules per tile of transposed predictions: a tile holds its
 * capsules' rows [md][width], so the dim_out <= 16 values of one capsule
 * and output capsule lie within 8-bit offsets of each other (one byte
 * gather) and each row's capsules are contiguous. */
#define CAPS_HL_TILE 16u

/* caps_nn_routing_carve, with blocks of 16 or more capsules cut to whole
 * tiles (a smaller block fits the same coupling and row regions).
 * with_rows: the block buffer also holds prediction tiles. */
CAPS_HL_INLINE void caps_hl_carve(void *buf, const caps_class_caps_dims *dims, int32_t with_rows,
                                  caps_nn_routing_buffers *sc)
{
    caps_nn_routing_carve(buf, dims, with_rows ? 0 : 1, sc);
    if (sc->block >= (int32_t)CAPS_HL_TILE) {
        sc->block &= ~(int32_t)(CAPS_HL_TILE - 1u);
    }
}

#endif /* TFLM_CAPS_HL_INTERNAL_H */
