/*
 * Cortex-M squash, bit-exact with src/portable/caps_squash_s8.c.
 *
 * Squared norm with SXTAB16 (zero-point offset folded in) and SMLAD; the
 * gain with the exact fast primitives of caps_nn_backend_math.h (hardware
 * 32-bit divides instead of 64-bit library divisions and a bit-serial
 * square root); each element as round(y G / 2^24) split into two 32-bit
 * multiplies (G = Gh 2^8 + Gl), the rounding of caps_nn_squash_apply:
 *   (y G + 2^23 - [y < 0]) >> 24 == (y Gh + ((y Gl + 2^23 - [y < 0]) >> 8)) >> 16.
 */
#include "caps_cm_internal.h"

/* sum (x - zp)^2 of one capsule. */
CAPS_CM_INLINE uint32_t squared_norm(const int8_t *x, int32_t dim, int32_t zp)
{
    int32_t sq = 0;
    int32_t k = 0;
#if CAPS_CM_DSP
    const uint32_t nzp = (uint32_t)(uint16_t)(int16_t)(-zp) * 0x00010001u;
    for (; k + 4 <= dim; k += 4) {
        const uint32_t w = caps_cm_read_s8x4(x + k);
        const uint32_t a = caps_cm_sxtab16(nzp, w);
        const uint32_t b = caps_cm_sxtab16_ror8(nzp, w);
        sq = caps_cm_smlad(a, a, sq);
        sq = caps_cm_smlad(b, b, sq);
    }
#endif
    for (; k < dim; ++k) {
        const int32_t y = x[k] - zp;
        sq += y * y;
    }
    return (uint32_t)sq;
}

CAPS_CM_INLINE int8_t apply(int32_t y, int32_t gh, int32_t gl)
{
    const int32_t low = (y * gl + (1 << 23) + (y >> 31)) >> 8;
    return (int8_t)caps_cm_ssat8((y * gh + low) >> 16);
}

caps_nn_status caps_squash_s8(const caps_caps_dims *dims, const caps_squash_params *params,
                              const int8_t *input, int8_t *output)
{
    if (caps_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        caps_squash_params_check(params) != CAPS_NN_SUCCESS ||
        (dims->n_caps > 0 && (input == NULL || output == NULL))) {
        return CAPS_NN_ARG_ERROR;
    }
    const int32_t dim = dims->dim;
    const int32_t zp = params->input_zp;
    for (int32_t n = 0; n < dims->n_caps; ++n) {
        const int8_t *x = input + (size_t)n * (size_t)dim;
        int8_t *v = output + (size_t)n * (size_t)dim;
        const uint32_t sq = squared_norm(x, dim, zp);
        const uint32_t g = caps_bm_squash_gain(sq, params->sq_multiplier, params->sq_exponent);
        const int32_t gh = (int32_t)(g >> 8);   /* < 2^24 */
        const int32_t gl = (int32_t)(g & 0xFFu);
        /* in place is safe: element k is read before it is written */
        for (int32_t k = 0; k < dim; ++k) {
            v[k] = apply(x[k] - zp, gh, gl);
        }
    }
    return CAPS_NN_SUCCESS;
}
