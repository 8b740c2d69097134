/*
 * Helium predictions from packed 4-bit weights, bit-exact with
 * src/portable/caps_predictions_s4.c.  The weights are read as packed
 * bytes straight from the model; nothing is unpacked into RAM.
 *
 * dim_in 4 or 8 with zp 0 (the published layers) run the int8 kernel's
 * loops (caps_predictions_s8.c): 8 packed bytes become one int8 vector of
 * 16 w in natural order, dotted with the same zero-padded input patterns.
 *
 * Any other shape or zero point (CAPS_HL_PRED_ANY_S4): each row from its
 * first nibble, which for an odd dim_in is every other row a high nibble.
 * Per 8 bytes of a row: one halfword-widening load, the low and the high
 * nibbles sign-extended in int16 lanes (two shift pairs), two VMLADAVAs
 * against the even and odd inputs u - zp; a row that starts on a high
 * nibble pairs its high nibbles with the even inputs and its low ones
 * with the odd inputs moved one lane up (a zero first: that low nibble is
 * the previous row's last weight).  The last step of a row is predicated
 * (VCTP), so nothing beyond the row is read.  Four rows go into the lanes
 * of one vector, requantized with per-lane params (gathered by output
 * capsule) and stored through a byte scatter with the row stride.
 */
#include "../common/caps_nn_int4.h"
#include "caps_hl_internal.h"

/* Even inputs xe[m] = x[2m] (h = ceil(dim_in / 2) of them) and
 * z = [0, x[1], x[3], ..., 0] (h + 1): the partners of the odd elements of
 * a row starting on a low nibble are z + 1, of the low nibbles of a row
 * starting on a high nibble z.  2 dim_in + 4 bytes at most, within the
 * predictions scratch (caps_hl_pred_init aligns it to 2). */
typedef struct {
    const int16_t *xe;
    const int16_t *z;
    int32_t h;
} s4_inputs;

static s4_inputs split_inputs(const caps_hl_pred_core *pc, const int8_t *u)
{
    s4_inputs in;
    const int32_t dim_in = pc->dim_in;
    const int32_t h = (dim_in + 1) / 2;
    int16_t *xe = pc->u_off;
    int16_t *z = xe + h;
    const int16_t zp = (int16_t)pc->zp;
    z[0] = 0;
    z[h] = 0;
    /* 8 pairs per step: even bytes to xe, odd bytes to z + 1 */
    for (int32_t m = 0; m < h; m += 8) {
        const mve_pred16_t pe = vctp16q((uint32_t)(h - m));
        const int32_t odd = dim_in / 2 - m; /* odd inputs left, may be <= 0 */
        const mve_pred16_t po = vctp16q((uint32_t)(odd > 0 ? odd : 0));
        const uint16x8_t off = vidupq_n_u16(0, 2);
        const int16x8_t e = vldrbq_gather_offset_z_s16(u + 2 * m, off, pe);
        const int16x8_t o = vldrbq_gather_offset_z_s16(u + 2 * m + 1, off, po);
        vstrhq_p_s16(xe + m, vsubq_n_s16(e, zp), pe);
        vstrhq_p_s16(z + 1 + m, vsubq_n_s16(o, zp), po);
    }
    in.xe = xe;
    in.z = z;
    in.h = h;
    return in;
}

/* The dot product of the row whose first weight is element e of the
 * block at w. */
CAPS_HL_INLINE int32_t dot_row(const s4_inputs *in, const int8_t *w, uint32_t e)
{
    const uint8_t *b = (const uint8_t *)w + (e >> 1);
    const int high = (int)(e & 1u);
    const int16_t *pl = high ? in->z : in->xe;     /* partners of the low nibbles */
    const int16_t *ph = high ? in->xe : in->z + 1; /* and of the high ones */
    int32_t acc = 0;
    for (int32_t m = 0; m < in->h; m += 8) {
        const mve_pred16_t p = vctp16q((uint32_t)(in->h - m));
        const int16x8_t v = vreinterpretq_s16_u16(vldrbq_z_u16(b + m, p));
        const int16x8_t lo = vshrq_n_s16(vshlq_n_s16(v, 12), 12);
        const int16x8_t hi = vshrq_n_s16(vshlq_n_s16(v, 8), 12);
        acc = vmladavaq_s16(acc, lo, vldrhq_z_s16(pl + m, p));
        acc = vmladavaq_s16(acc, hi, vldrhq_z_s16(ph + m, p));
    }
    return acc;
}

/* Output capsule jv and dim dv of each lane's row, carried over dim_out. */
CAPS_HL_INLINE void wrap_rows(uint32x4_t *dv, uint32x4_t *jv, uint32_t dim_out)
{
    mve_pred16_t over = vcmpcsq_n_u32(*dv, dim_out);
    while (over != 0) {
        *dv = vsubq_m_n_u32(*dv, *dv, dim_out, over);
        *jv = vaddq_m_n_u32(*jv, *jv, 1u, over);
        over = vcmpcsq_n_u32(*dv, dim_out);
    }
}

void caps_hl_predict_any_s4(const caps_hl_pred *pred, const int8_t *input, const int8_t *weights,
                            int8_t *out, int32_t n_in, int32_t rstride, int32_t istride)
{
    const caps_hl_pred_core pc = pred->core; /* a local copy: the stores could alias it */
    const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)rstride);
    const size_t ostep = 4 * (size_t)rstride;
    const size_t block = (size_t)pc.md * (size_t)pc.dim_in / 2u;
    const int32x4_t zero = vdupq_n_s32(0);
    const caps_hl_rq q = caps_hl_rq_init(pc.multipliers[0], pc.shifts[0]);
    for (int32_t i = 0; i < n_in; ++i) {
        const s4_inputs in = split_inputs(&pc, input + (size_t)i * (size_t)pc.dim_in);
        const int8_t *w = weights + (size_t)i * block;
        int8_t *o = out + (size_t)i * (size_t)istride;
        uint32x4_t dv = vidupq_n_u32(0, 1);
        uint32x4_t jv = vdupq_n_u32(0);
        wrap_rows(&dv, &jv, (uint32_t)pc.dim_out);
        uint32_t e = 0; /* first element of the group's first row */
        for (int32_t r = 0; r < pc.md; r += 4) {
            const int32_t n = pc.md - r < 4 ? pc.md - r : 4;
            const mve_pred16_t p = vctp32q((uint32_t)n);
            int32_t a[4] = {0, 0, 0, 0};
            for (int32_t t = 0; t < n; ++t) {
                a[t] = dot_row(&in, w, e + (uint32_t)t * (uint32_t)pc.dim_in);
            }
            const int32x4_t acc = vld1q_s32(a);
            int32x4_t res;
            if (pc.num_scales == 1) {
                res = caps_hl_requant(acc, &q);
            } else {
                const int32x4_t m = vldrwq_gather_shifted_offset_z_s32(pc.multipliers, jv, p);
                const int32x4_t sh = vldrwq_gather_shifted_offset_z_s32(pc.shifts, jv, p);
                const int32x4_t ns = vminq_s32(sh, zero);
                res = caps_hl_requant_v(acc, m, vmaxq_s32(sh, zero), ns, vshrq_n_s32(ns, 31));
            }
            vstrbq_scatter_offset_p_s32(o, offs, caps_hl_sat8_lanes(res), p);
            o += ostep;
            e += 4u * (uint32_t)pc.dim_in;
            dv = vaddq_n_u32(dv, 4u);
            wrap_rows(&dv, &jv, (uint32_t)pc.dim_out);
        }
    }
}

caps_nn_status caps_predictions_s4(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                   const caps_predictions_params *params, const int8_t *input,
                                   const int8_t *weights, int8_t *u_hat)
{
    if (caps_predictions_s4_args_check(ctx, dims, params, input, weights, u_hat) !=
        CAPS_NN_SUCCESS) {
        return CAPS_NN_ARG_ERROR;
    }
    caps_hl_pred pc;
    caps_hl_pred_init(&pc, dims, params, ctx->buf, 1);
    caps_hl_predict_s4(&pc, input, weights, u_hat, dims->n_in, 1, pc.core.md);
    return CAPS_NN_SUCCESS;
}
