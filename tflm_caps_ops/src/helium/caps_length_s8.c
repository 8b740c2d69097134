/*
 * Helium capsule length, bit-exact with src/portable/caps_length_s8.c:
 * squared norms four capsules at a time (D = 4, one capsule per lane) or
 * by a predicated VMLADAV loop (other dims), the exact fast Q16 norm of
 * caps_nn_backend_math.h per capsule (a root does not vectorize exactly
 * at a profit), the requantization of four norms in lanes.
 */
#include "caps_hl_internal.h"

/* Four (tail: n < 4) lengths from their squared norms. */
CAPS_HL_INLINE void lengths4(const uint32_t *sq, const caps_hl_rq *q, int8_t *out, int32_t n,
                             const int tail)
{
    int32_t norm[4] = {0, 0, 0, 0};
    for (int32_t l = 0; l < (tail ? n : 4); ++l) {
        norm[l] = (int32_t)caps_bm_norm_q16(sq[l]); /* < 2^31 */
    }
    const int32x4_t r = vsubq_n_s32(caps_hl_requant(vld1q_s32(norm), q),
                                    -CAPS_NN_LENGTH_OUT_ZERO_POINT);
    if (tail) {
        vstrbq_p_s32(out, caps_hl_sat8_lanes(r), vctp32q((uint32_t)n));
    } else {
        vstrbq_s32(out, caps_hl_sat8_lanes(r));
    }
}

caps_nn_status caps_length_s8(const caps_caps_dims *dims, const caps_length_params *params,
                              const int8_t *input, int8_t *output)
{
    if (caps_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        caps_length_params_check(params) != CAPS_NN_SUCCESS ||
        (dims->n_caps > 0 && (input == NULL || output == NULL))) {
        return CAPS_NN_ARG_ERROR;
    }
    const int32_t dim = dims->dim;
    const int32_t zp = params->input_zp;
    const caps_hl_rq q = caps_hl_rq_init(params->out.multiplier, params->out.shift);
    const uint32x4_t off = vidupq_n_u32(0, 4);
    uint32_t sq[4];
    int32_t n = 0;
    for (; n + 4 <= dims->n_caps; n += 4) {
        const int8_t *x = input + (size_t)n * (size_t)dim;
        if (dim == 4) {
            vst1q_u32(sq, vreinterpretq_u32_s32(caps_hl_load_caps4(x, zp, off, 0, 0).sq));
        } else {
            for (int32_t l = 0; l < 4; ++l) {
                sq[l] = caps_hl_squared_norm(x + (size_t)l * (size_t)dim, dim, zp);
            }
        }
        lengths4(sq, &q, output + n, 4, 0);
    }
    const int32_t rest = dims->n_caps - n;
    if (rest > 0) {
        for (int32_t l = 0; l < rest; ++l) {
            sq[l] = caps_hl_squared_norm(input + (size_t)(n + l) * (size_t)dim, dim, zp);
        }
        lengths4(sq, &q, output + n, rest, 1);
    }
    return CAPS_NN_SUCCESS;
}
