/*
 * Cortex-M predictions u_hat(j|i) = W_ij (u_i - zp), CMSIS-NN style.
 *
 * The input capsule is offset by the zero point and doubled once
 * (2 (u - zp) fits int16) as halfword pairs in SXTB16 lane order, so each
 * 4 weights cost one load, two SXTB16 and two SMLAD, and the accumulator
 * arrives already doubled for the one-SMMLAR requantization
 * (caps_cm_requant2).
 *
 * Main path (dim_in 4 or 8, every rshift > 0): input capsule outer, output
 * capsule inner.  The prepared input lives in registers for all n_out
 * capsules of W[i] (one contiguous block) and each output capsule loads
 * its (mult, half, rshift) once; weights 4-byte aligned (flatbuffer
 * buffers are) are read 8 bytes per LDRD.  Everything else (other dims,
 * rshift = 0, more than CAPS_CM_PRED_CACHED output capsules) goes through
 * a scratch copy of the prepared input, one input capsule at a time.
 */
#include "caps_cm_internal.h"

void caps_cm_pred_init(caps_cm_pred *pc, const caps_class_caps_dims *dims,
                       const caps_predictions_params *params, void *scratch)
{
    pc->n_out = dims->n_out;
    pc->dim_out = dims->dim_out;
    pc->dim_in = dims->dim_in;
    pc->zp = params->input_zp;
    pc->num_scales = params->num_scales;
    pc->multipliers = params->multipliers;
    pc->shifts = params->shifts;
    pc->all_fast = 1;
    for (int32_t j = 0; j < params->num_scales; ++j) {
        if (params->shifts[j] > 0) {
            pc->all_fast = 0;
        }
    }
    pc->rq_cached_fix = pc->all_fast && dims->n_out <= CAPS_CM_PRED_CACHED;
    pc->in_regs = pc->all_fast && (dims->dim_in == 4 || dims->dim_in == 8) &&
                  dims->n_out <= CAPS_CM_PRED_CACHED;
    for (int32_t j = 0; j < dims->n_out && j < CAPS_CM_PRED_CACHED; ++j) {
        const int32_t q = params->num_scales == 1 ? 0 : j;
        caps_cm_rq *rq = &pc->rq[j];
        rq->mult = params->multipliers[q];
        rq->rshift = params->shifts[q] < 0 ? -params->shifts[q] : 0;
        rq->half = rq->rshift > 0 ? (int32_t)(1u << (rq->rshift - 1)) : 0;
        /* the main path adds the rounding's sign correction unconditionally,
         * which is exact only for rshift > 0 */
        if (rq->rshift == 0) {
            pc->in_regs = 0;
            pc->rq_cached_fix = 0;
        }
    }
    /* the scratch has 8 bytes of slack for this */
    pc->u2 = (uint32_t *)(void *)caps_nn_scratch_align(scratch, 4);
    pc->weight_bits = 8;
}

/* 2 (u - zp) of four inputs as halfword pairs in SXTB16 lane order:
 * *lo = (u0, u2), *hi = (u1, u3). */
CAPS_CM_INLINE void double_offset4(const int8_t *u, int32_t zp, uint32_t *lo, uint32_t *hi)
{
#if CAPS_CM_DSP
    const uint32_t nzp = (uint32_t)(uint16_t)(int16_t)(-zp) * 0x00010001u;
    const uint32_t x = caps_cm_read_s8x4(u);
    const uint32_t a = __sxtab16(nzp, x);
    const uint32_t b = caps_cm_sxtab16_ror8(nzp, x);
    *lo = __sadd16(a, a);
    *hi = __sadd16(b, b);
#else
    const int32_t v0 = 2 * (u[0] - zp), v1 = 2 * (u[1] - zp);
    const int32_t v2 = 2 * (u[2] - zp), v3 = 2 * (u[3] - zp);
    *lo = ((uint32_t)v0 & 0xFFFFu) | ((uint32_t)v2 << 16);
    *hi = ((uint32_t)v1 & 0xFFFFu) | ((uint32_t)v3 << 16);
#endif
}

/* Doubled offset input into the scratch: per 4 inputs (u0, u2) and
 * (u1, u3), then the tail as plain int16. */
static void prepare_input(const caps_cm_pred *pc, const int8_t *u)
{
    const int32_t k4 = pc->dim_in & ~3;
    uint32_t *dst = pc->u2;
    int32_t k = 0;
    for (; k < k4; k += 4) {
        double_offset4(u + k, pc->zp, &dst[0], &dst[1]);
        dst += 2;
    }
    int16_t *tail = (int16_t *)dst;
    for (; k < pc->dim_in; ++k) {
        *tail++ = (int16_t)(2 * (u[k] - pc->zp));
    }
}

/* Rows of one output capsule (same requantization) from the scratch copy
 * of the input; k_in is a compile-time constant (4, 8) where it can be. */
CAPS_CM_INLINE void capsule_rows(const uint32_t *restrict u2, const int8_t *restrict w,
                                 int8_t *restrict out, const int32_t k_in, const int32_t rows,
                                 int32_t mult, int32_t half, int32_t rshift, int32_t has_fix)
{
    const int32_t k4 = k_in & ~3;
    for (int32_t d = 0; d < rows; ++d) {
        int32_t acc = 0;
        int32_t k = 0;
        for (; k < k4; k += 4) {
            const uint32_t x = caps_cm_read_s8x4(w + k);
            acc = caps_cm_smlad(caps_cm_sxtb16(x), u2[k / 2], acc);
            acc = caps_cm_smlad(caps_cm_sxtb16_ror8(x), u2[k / 2 + 1], acc);
        }
        const int16_t *tail = (const int16_t *)(u2 + k4 / 2);
        for (; k < k_in; ++k) {
            acc += (int32_t)w[k] * tail[k - k4];
        }
        out[d] = (int8_t)caps_cm_requant2(acc, mult, half, rshift, has_fix);
        w += k_in;
    }
}

/* All output capsules of one input capsule from the scratch copy. */
CAPS_CM_INLINE void all_capsules(const caps_cm_pred *pc, const int8_t *w, int8_t *out,
                                 const int32_t k_in, const int32_t rows)
{
    const uint32_t *u2 = pc->u2;
    const int32_t n_out = pc->n_out;
    const int32_t cached = pc->n_out <= CAPS_CM_PRED_CACHED;
    for (int32_t j = 0; j < n_out; ++j) {
        int32_t mult, rshift, half;
        if (cached) {
            mult = pc->rq[j].mult;
            rshift = pc->rq[j].rshift;
            half = pc->rq[j].half;
        } else {
            const int32_t q = pc->num_scales == 1 ? 0 : j;
            mult = pc->multipliers[q];
            rshift = -pc->shifts[q];
            half = rshift > 0 ? (int32_t)(1u << (rshift - 1)) : 0;
        }
        if (rshift > 0) {
            capsule_rows(u2, w, out, k_in, rows, mult, half, rshift, 1);
        } else {
            capsule_rows(u2, w, out, k_in, rows, mult, 0, 0, 0);
        }
        w += (size_t)rows * (size_t)k_in;
        out += rows;
    }
}

/* Next two weight words, *p advanced by 8.  `aligned` (a 4-byte aligned
 * *p) allows one LDRD with write-back: LDRD faults on unaligned addresses
 * even where LDR does not. */
CAPS_CM_INLINE void read_w8(const int8_t **p, uint32_t *a, uint32_t *b, const int32_t aligned)
{
#if CAPS_CM_DSP
    if (aligned) {
        __asm__("ldrd %0, %1, [%2], #8"
                : "=r"(*a), "=r"(*b), "+r"(*p)
                : "m"(*(const int8_t(*)[8])(*p)));
        return;
    }
#else
    (void)aligned;
#endif
    *a = caps_cm_read_s8x4(*p);
    *b = caps_cm_read_s8x4(*p + 4);
    *p += 8;
}

/* Doubled dot product of 4 weights x with the prepared input (lo, hi). */
CAPS_CM_INLINE int32_t dot4(uint32_t x, uint32_t lo, uint32_t hi)
{
    return caps_cm_smlad(caps_cm_sxtb16_ror8(x), hi, caps_cm_smuad(caps_cm_sxtb16(x), lo));
}

CAPS_CM_INLINE int32_t dot4_acc(uint32_t x, uint32_t lo, uint32_t hi, int32_t acc)
{
    return caps_cm_smlad(caps_cm_sxtb16_ror8(x), hi, caps_cm_smlad(caps_cm_sxtb16(x), lo, acc));
}

/* Requantization of the next output capsule, *p advanced: one LDM with
 * write-back (the compiler makes three loads and an add of them).  LDM
 * fills its register list in ascending order, hence the fixed registers
 * in the order of caps_cm_rq's fields. */
CAPS_CM_INLINE void load_rq(const caps_cm_rq **p, int32_t *mult, int32_t *half, int32_t *rshift)
{
#if CAPS_CM_DSP
    register int32_t m __asm__("r4");
    register int32_t h __asm__("r5");
    register int32_t s __asm__("r6");
    __asm__("ldmia %3!, {%0, %1, %2}"
            : "=r"(m), "=r"(h), "=r"(s), "+r"(*p)
            : "m"(**p));
    *mult = m;
    *half = h;
    *rshift = s;
#else
    *mult = (*p)->mult;
    *half = (*p)->half;
    *rshift = (*p)->rshift;
    ++*p;
#endif
}

/* *(*p)++ = v: STRB with write-back (the compiler spends an ADD per
 * output capsule on the pointer otherwise). */
CAPS_CM_INLINE void store_s8(int8_t **p, int32_t v)
{
#if CAPS_CM_DSP
    __asm__("strb %2, [%0], #1" : "+r"(*p), "=m"(**p) : "r"(v));
#else
    *(*p)++ = (int8_t)v;
#endif
}

/* Two rows of dim_in 4 (one LDRD) and one row of dim_in 8, input in
 * registers, rshift > 0. */
CAPS_CM_INLINE void two_rows4(const int8_t **w, int8_t **out, const int32_t aligned, uint32_t u0,
                              uint32_t u1, int32_t mult, int32_t half, int32_t rshift)
{
    uint32_t x0, x1;
    read_w8(w, &x0, &x1, aligned);
    store_s8(out, caps_cm_requant2(dot4(x0, u0, u1), mult, half, rshift, 1));
    store_s8(out, caps_cm_requant2(dot4(x1, u0, u1), mult, half, rshift, 1));
}

CAPS_CM_INLINE void row8(const int8_t **w, int8_t **out, const int32_t aligned, uint32_t u0,
                         uint32_t u1, uint32_t u2, uint32_t u3, int32_t mult, int32_t half,
                         int32_t rshift)
{
    uint32_t x0, x1;
    read_w8(w, &x0, &x1, aligned);
    const int32_t acc = dot4_acc(x1, u2, u3, dot4(x0, u0, u1));
    store_s8(out, caps_cm_requant2(acc, mult, half, rshift, 1));
}

/* The `rows` outputs of one output capsule, input in registers (dim_in 4:
 * u0, u1; dim_in 8: u0..u3), rshift > 0; fully unrolled when rows is a
 * compile-time constant (`unrolled`). */
CAPS_CM_INLINE void rows_in_regs(const int8_t **w, int8_t **out, const int32_t k_in,
                                 const int32_t rows, const int32_t aligned, const int32_t unrolled,
                                 uint32_t u0, uint32_t u1, uint32_t u2, uint32_t u3, int32_t mult,
                                 int32_t half, int32_t rshift)
{
    if (k_in == 4) {
        int32_t d = 0;
        if (unrolled) {
#if defined(__clang__)
#pragma unroll
#elif defined(__GNUC__)
#pragma GCC unroll 16
#endif
            for (; d + 2 <= rows; d += 2) {
                two_rows4(w, out, aligned, u0, u1, mult, half, rshift);
            }
        } else {
            for (; d + 2 <= rows; d += 2) {
                two_rows4(w, out, aligned, u0, u1, mult, half, rshift);
            }
        }
        if (d < rows) {
            const uint32_t x0 = caps_cm_read_s8x4(*w);
            *w += 4;
            store_s8(out, caps_cm_requant2(dot4(x0, u0, u1), mult, half, rshift, 1));
        }
    } else if (unrolled) {
#if defined(__clang__)
#pragma unroll
#elif defined(__GNUC__)
#pragma GCC unroll 16
#endif
        for (int32_t d = 0; d < rows; ++d) {
            row8(w, out, aligned, u0, u1, u2, u3, mult, half, rshift);
        }
    } else {
        for (int32_t d = 0; d < rows; ++d) {
            row8(w, out, aligned, u0, u1, u2, u3, mult, half, rshift);
        }
    }
}

/* n_in consecutive input capsules (their W[i] and u_hat[i] blocks are
 * contiguous): per input capsule the prepared input in registers, per
 * output capsule one load of its requantization. */
CAPS_CM_INLINE void capsules_in_regs(const caps_cm_pred *pc, const int8_t *input,
                                     const int8_t *w, int8_t *out, int32_t n_in,
                                     const int32_t k_in, const int32_t rows,
                                     const int32_t aligned, const int32_t unrolled,
                                     const int32_t pairs)
{
    const size_t md = (size_t)pc->n_out * (size_t)rows;
    const int32_t zp = pc->zp;
    const int8_t *const input_end = input + (size_t)n_in * (size_t)k_in;
    do {
        uint32_t u0, u1, u2 = 0, u3 = 0;
        double_offset4(input, zp, &u0, &u1);
        if (k_in == 8) {
            double_offset4(input + 4, zp, &u2, &u3);
        }
        input += k_in;
        const caps_cm_rq *rq = pc->rq;
        int8_t *const out_end = out + md;
        if (pairs) {
            do {
                int32_t mult, half, rshift;
                load_rq(&rq, &mult, &half, &rshift);
                rows_in_regs(&w, &out, k_in, rows, aligned, unrolled, u0, u1, u2, u3, mult, half,
                             rshift);
                load_rq(&rq, &mult, &half, &rshift);
                rows_in_regs(&w, &out, k_in, rows, aligned, unrolled, u0, u1, u2, u3, mult, half,
                             rshift);
            } while (out != out_end);
            continue;
        }
        do {
            int32_t mult, half, rshift;
            load_rq(&rq, &mult, &half, &rshift);
            rows_in_regs(&w, &out, k_in, rows, aligned, unrolled, u0, u1, u2, u3, mult, half,
                         rshift);
        } while (out != out_end);
    } while (input != input_end);
}

/* Dispatch of the main path by shape and weight alignment; the shapes of
 * the published CapsNets get fully unrolled rows. */
static void predict_in_regs(const caps_cm_pred *pc, const int8_t *input, const int8_t *weights,
                            int8_t *u_hat, int32_t n_in)
{
    const int32_t k = pc->dim_in, r = pc->dim_out;
    /* short unrolled capsules: two per trip of the output-capsule loop */
    const int32_t pairs = (pc->n_out & 1) == 0;
    if (((uintptr_t)weights & 3u) == 0) {
        if (k == 4 && r == 6 && pairs) {
            capsules_in_regs(pc, input, weights, u_hat, n_in, 4, 6, 1, 1, 1);
        } else if (k == 4 && r == 6) {
            capsules_in_regs(pc, input, weights, u_hat, n_in, 4, 6, 1, 1, 0);
        } else if (k == 8 && r == 16) {
            capsules_in_regs(pc, input, weights, u_hat, n_in, 8, 16, 1, 1, 0);
        } else if (k == 4 && r == 5 && pairs) {
            capsules_in_regs(pc, input, weights, u_hat, n_in, 4, 5, 1, 1, 1);
        } else if (k == 4 && r == 5) {
            capsules_in_regs(pc, input, weights, u_hat, n_in, 4, 5, 1, 1, 0);
        } else if (k == 8 && r == 8) {
            capsules_in_regs(pc, input, weights, u_hat, n_in, 8, 8, 1, 1, 0);
        } else if (k == 4) {
            capsules_in_regs(pc, input, weights, u_hat, n_in, 4, r, 1, 0, 0);
        } else {
            capsules_in_regs(pc, input, weights, u_hat, n_in, 8, r, 1, 0, 0);
        }
    } else if (k == 4) {
        capsules_in_regs(pc, input, weights, u_hat, n_in, 4, r, 0, 0, 0);
    } else {
        capsules_in_regs(pc, input, weights, u_hat, n_in, 8, r, 0, 0, 0);
    }
}

void caps_cm_predict_capsule(const caps_cm_pred *pc, const int8_t *u_i, const int8_t *w_i,
                             int8_t *out)
{
    if (pc->in_regs) {
        predict_in_regs(pc, u_i, w_i, out, 1);
        return;
    }
    if (!pc->all_fast) {
        /* a positive shift (real multiplier >= 1): plain requantization */
        for (int32_t j = 0; j < pc->n_out; ++j) {
            const int32_t q = pc->num_scales == 1 ? 0 : j;
            for (int32_t d = 0; d < pc->dim_out; ++d) {
                int32_t acc = 0;
                for (int32_t k = 0; k < pc->dim_in; ++k) {
                    acc += (int32_t)w_i[k] * (u_i[k] - pc->zp);
                }
                w_i += pc->dim_in;
                *out++ = caps_nn_sat_s8(
                    caps_nn_requantize(acc, pc->multipliers[q], pc->shifts[q]));
            }
        }
        return;
    }
    prepare_input(pc, u_i);
    const int32_t k = pc->dim_in, r = pc->dim_out;
    if (k == 4) {
        all_capsules(pc, w_i, out, 4, r);
    } else if (k == 8) {
        all_capsules(pc, w_i, out, 8, r);
    } else {
        all_capsules(pc, w_i, out, k, r);
    }
}

void caps_cm_predict_layer(const caps_cm_pred *pc, const int8_t *input, const int8_t *weights,
                           int8_t *u_hat, int32_t n_in)
{
    if (pc->weight_bits == 4) {
        caps_cm_predict_layer_s4(pc, input, weights, u_hat, n_in);
        return;
    }
    if (pc->in_regs) {
        predict_in_regs(pc, input, weights, u_hat, n_in);
        return;
    }
    const size_t md = (size_t)pc->n_out * (size_t)pc->dim_out;
    for (int32_t i = 0; i < n_in; ++i) {
        caps_cm_predict_capsule(pc, input + (size_t)i * (size_t)pc->dim_in,
                                weights + (size_t)i * md * (size_t)pc->dim_in, u_hat + (size_t)i * md);
    }
}

caps_nn_status caps_predictions_s8(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                   const caps_predictions_params *params, const int8_t *input,
                                   const int8_t *weights, int8_t *u_hat)
{
    if (caps_predictions_s8_args_check(ctx, dims, params, input, weights, u_hat) !=
        CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_cm_pred pc;
    caps_cm_pred_init(&pc, dims, params, ctx->buf);
    caps_cm_predict_layer(&pc, input, weights, u_hat, dims->n_in);
    return CAPS_NN_SUCCESS;
}
