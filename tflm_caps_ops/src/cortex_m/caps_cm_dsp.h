/*
 * Armv7E-M / Armv8-M DSP-extension helpers of the Cortex-M backend.
 *
 * With __ARM_FEATURE_DSP each helper is one instruction (ACLE intrinsic or
 * inline asm where GCC's <arm_acle.h> has none); otherwise an exact C
 * equivalent, so the backend also builds for cores without the extension
 * (Cortex-M0/M3) and on a host for testing.  Names follow CMSIS-NN's
 * support functions in spirit (read_s8x4, sxtb16, smlad ...).
 */
#ifndef TFLM_CAPS_CM_DSP_H
#define TFLM_CAPS_CM_DSP_H

#include <stdint.h>
#include <string.h>

#include "tflm_caps/caps_nn_fixedpoint.h" /* CAPS_NN_INLINE */

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define CAPS_CM_DSP 1
#else
#define CAPS_CM_DSP 0
#endif

#define CAPS_CM_INLINE CAPS_NN_INLINE

/* Four int8 from any address (unaligned LDR on v7-M/v8-M mainline). */
CAPS_CM_INLINE uint32_t caps_cm_read_s8x4(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

CAPS_CM_INLINE uint32_t caps_cm_read_s8x2(const int8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

#if CAPS_CM_DSP

/* Bytes 0 and 2, sign-extended into the two halfwords. */
CAPS_CM_INLINE uint32_t caps_cm_sxtb16(uint32_t x) { return __sxtb16(x); }

/* Bytes 1 and 3, sign-extended into the two halfwords. */
CAPS_CM_INLINE uint32_t caps_cm_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* acc + halfword-lane sign-extended bytes 0 and 2 of x. */
CAPS_CM_INLINE uint32_t caps_cm_sxtab16(uint32_t acc, uint32_t x) { return __sxtab16(acc, x); }

CAPS_CM_INLINE uint32_t caps_cm_sxtab16_ror8(uint32_t acc, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(acc), "r"(x));
    return r;
}

/* acc + x.lo*y.lo + x.hi*y.hi (signed 16-bit lanes, 32-bit wrap). */
CAPS_CM_INLINE int32_t caps_cm_smlad(uint32_t x, uint32_t y, int32_t acc)
{
    return (int32_t)__smlad(x, y, (uint32_t)acc);
}

/* x.lo*y.lo + x.hi*y.hi. */
CAPS_CM_INLINE int32_t caps_cm_smuad(uint32_t x, uint32_t y) { return (int32_t)__smuad(x, y); }

/* Halfword pack: (lo of a, lo of b) and (hi of a, hi of b). */
CAPS_CM_INLINE uint32_t caps_cm_pkhbt16(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

CAPS_CM_INLINE uint32_t caps_cm_pkhtb16(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(b), "r"(a));
    return r;
}

/* (acc * 2^32 + a * b + 2^31) >> 32, signed. */
CAPS_CM_INLINE int32_t caps_cm_smmlar(int32_t a, int32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

/* Saturating 32-bit add. */
CAPS_CM_INLINE int32_t caps_cm_qadd(int32_t a, int32_t b) { return __qadd(a, b); }

/* acc + floor(a * bottom16(x) / 2^16) and the same with the top half. */
CAPS_CM_INLINE int32_t caps_cm_smlawb(int32_t a, uint32_t x, int32_t acc)
{
    return __smlawb(a, (int32_t)x, acc);
}
CAPS_CM_INLINE int32_t caps_cm_smlawt(int32_t a, uint32_t x, int32_t acc)
{
    return __smlawt(a, (int32_t)x, acc);
}

/* Saturate to int8. */
CAPS_CM_INLINE int32_t caps_cm_ssat8(int32_t x) { return __ssat(x, 8); }

/* acc + a.lo * x.lo and acc + a.lo * x.hi (signed 16-bit halves). */
CAPS_CM_INLINE int32_t caps_cm_smlabb(uint32_t a, uint32_t x, int32_t acc)
{
    return __smlabb((int32_t)a, (int32_t)x, acc);
}
CAPS_CM_INLINE int32_t caps_cm_smlabt(uint32_t a, uint32_t x, int32_t acc)
{
    return __smlabt((int32_t)a, (int32_t)x, acc);
}

/* 64-bit acc + x.lo*y.lo + x.hi*y.hi. */
CAPS_CM_INLINE int64_t caps_cm_smlald(uint32_t x, uint32_t y, int64_t acc)
{
    return __smlald((int16x2_t)x, (int16x2_t)y, acc);
}

#else /* exact C equivalents */

CAPS_CM_INLINE uint32_t caps_cm_sxtb16(uint32_t x)
{
    const uint32_t lo = (uint32_t)(int32_t)(int8_t)(x & 0xFFu) & 0xFFFFu;
    const uint32_t hi = (uint32_t)(int32_t)(int8_t)((x >> 16) & 0xFFu) & 0xFFFFu;
    return lo | (hi << 16);
}

CAPS_CM_INLINE uint32_t caps_cm_sxtb16_ror8(uint32_t x)
{
    return caps_cm_sxtb16((x >> 8) | (x << 24));
}

CAPS_CM_INLINE uint32_t caps_cm_add16(uint32_t a, uint32_t b)
{
    return ((a + b) & 0xFFFFu) | (((a >> 16) + (b >> 16)) << 16);
}

CAPS_CM_INLINE uint32_t caps_cm_sxtab16(uint32_t acc, uint32_t x)
{
    return caps_cm_add16(acc, caps_cm_sxtb16(x));
}

CAPS_CM_INLINE uint32_t caps_cm_sxtab16_ror8(uint32_t acc, uint32_t x)
{
    return caps_cm_add16(acc, caps_cm_sxtb16_ror8(x));
}

CAPS_CM_INLINE int32_t caps_cm_lo16(uint32_t x) { return (int32_t)(int16_t)(x & 0xFFFFu); }
CAPS_CM_INLINE int32_t caps_cm_hi16(uint32_t x) { return (int32_t)(int16_t)(x >> 16); }

CAPS_CM_INLINE int32_t caps_cm_smlad(uint32_t x, uint32_t y, int32_t acc)
{
    const uint32_t s = (uint32_t)acc + (uint32_t)(caps_cm_lo16(x) * caps_cm_lo16(y)) +
                       (uint32_t)(caps_cm_hi16(x) * caps_cm_hi16(y));
    return (int32_t)s;
}

CAPS_CM_INLINE int32_t caps_cm_smuad(uint32_t x, uint32_t y) { return caps_cm_smlad(x, y, 0); }

CAPS_CM_INLINE uint32_t caps_cm_pkhbt16(uint32_t a, uint32_t b)
{
    return (a & 0xFFFFu) | (b << 16);
}

CAPS_CM_INLINE uint32_t caps_cm_pkhtb16(uint32_t a, uint32_t b)
{
    return (b & 0xFFFF0000u) | (a >> 16);
}

CAPS_CM_INLINE int32_t caps_cm_smmlar(int32_t a, int32_t b, int32_t acc)
{
    const int64_t t = (int64_t)acc * ((int64_t)1 << 32) + (int64_t)a * b + ((int64_t)1 << 31);
    return (int32_t)(t >> 32);
}

CAPS_CM_INLINE int32_t caps_cm_smlawb(int32_t a, uint32_t x, int32_t acc)
{
    return acc + (int32_t)(((int64_t)a * caps_cm_lo16(x)) >> 16);
}
CAPS_CM_INLINE int32_t caps_cm_smlawt(int32_t a, uint32_t x, int32_t acc)
{
    return acc + (int32_t)(((int64_t)a * caps_cm_hi16(x)) >> 16);
}

CAPS_CM_INLINE int32_t caps_cm_qadd(int32_t a, int32_t b)
{
    const int64_t s = (int64_t)a + b;
    return s > INT32_MAX ? INT32_MAX : (s < INT32_MIN ? INT32_MIN : (int32_t)s);
}

CAPS_CM_INLINE int32_t caps_cm_ssat8(int32_t x) { return x > 127 ? 127 : (x < -128 ? -128 : x); }

CAPS_CM_INLINE int32_t caps_cm_smlabb(uint32_t a, uint32_t x, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(caps_cm_lo16(a) * caps_cm_lo16(x)));
}
CAPS_CM_INLINE int32_t caps_cm_smlabt(uint32_t a, uint32_t x, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(caps_cm_lo16(a) * caps_cm_hi16(x)));
}

CAPS_CM_INLINE int64_t caps_cm_smlald(uint32_t x, uint32_t y, int64_t acc)
{
    return acc + caps_cm_lo16(x) * caps_cm_lo16(y) + caps_cm_hi16(x) * caps_cm_hi16(y);
}

#endif /* CAPS_CM_DSP */

#endif /* TFLM_CAPS_CM_DSP_H */
