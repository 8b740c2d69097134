/*
 * Reading a fuzzer input as a stream of choices.  Past the end every read
 * returns 0, so a short input is a complete one and an all-zero input is
 * the harness's default (valid) case; each helper maps most byte values to
 * ordinary values and a few to edges and raw extremes.
 */
#ifndef TFLM_CAPS_TESTS_FUZZ_FUZZ_INPUT_H
#define TFLM_CAPS_TESTS_FUZZ_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
} fz_input;

static inline uint8_t fz_u8(fz_input *in)
{
    return in->pos < in->size ? in->data[in->pos++] : 0;
}

static inline uint32_t fz_u32(fz_input *in)
{
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
        v |= (uint32_t)fz_u8(in) << (8 * k);
    }
    return v;
}

static inline int32_t fz_i32(fz_input *in)
{
    const uint32_t u = fz_u32(in);
    int32_t v;
    memcpy(&v, &u, sizeof(v));
    return v;
}

/* lo + (u % (hi - lo + 1)) for lo <= hi. */
static inline int32_t fz_range(fz_input *in, int32_t lo, int32_t hi)
{
    const uint64_t span = (uint64_t)((int64_t)hi - lo) + 1u;
    return (int32_t)((int64_t)lo + (int64_t)(fz_u32(in) % span));
}

/* An integer meant to lie in [lo, hi] (lo >= 0), log-uniform so that small
 * values are common and the top of the range is reached: selector 0..199
 * in range (0 gives lo), 200..239 an edge (lo - 1, lo, hi, hi + 1, 0, -1,
 * INT32_MIN, INT32_MAX), 240..255 a raw 32-bit value. */
static inline int32_t fz_int(fz_input *in, int32_t lo, int32_t hi)
{
    const uint8_t sel = fz_u8(in);
    if (sel < 200) {
        const uint64_t span = (uint64_t)((int64_t)hi - lo);
        int bits = 0;
        while (bits < 32 && (span >> bits) != 0) {
            ++bits;
        }
        const int take = sel % (bits + 1);
        const uint64_t mask = take >= 32 ? 0xFFFFFFFFu : (((uint64_t)1 << take) - 1u);
        const uint64_t v = (fz_u32(in) & mask) % (span + 1u);
        return (int32_t)((int64_t)lo + (int64_t)v);
    }
    if (sel < 240) {
        const int64_t edges[8] = {(int64_t)lo - 1, lo, hi, (int64_t)hi + 1, 0, -1,
                                  INT32_MIN, INT32_MAX};
        const int64_t e = edges[sel % 8];
        return e < INT32_MIN || e > INT32_MAX ? (int32_t)lo : (int32_t)e;
    }
    return fz_i32(in);
}

/* A float scale: mostly m * 2^e with e in [-40, 40] (0 gives 1.0), then
 * extreme exponents, then raw bit patterns (NaN, inf, negative, zero,
 * subnormal). */
static inline float fz_scale(fz_input *in)
{
    const uint8_t sel = fz_u8(in);
    uint32_t bits;
    if (sel < 200) {
        const int32_t e = (int32_t)((sel + 40) % 81) - 40; /* sel 0: e = 0 */
        const uint32_t mant = fz_u8(in) == 0 ? 0u : (fz_u32(in) & 0x7FFFFFu);
        bits = ((uint32_t)(e + 127) << 23) | mant;
    } else if (sel < 232) {
        const uint32_t exp = (uint32_t)fz_range(in, 1, 254);
        bits = (exp << 23) | (fz_u32(in) & 0x7FFFFFu);
    } else {
        bits = fz_u32(in);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* Deterministic filler (xorshift64) for tensor contents. */
static inline uint64_t fz_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Fills n int8 values in one of a few patterns chosen by mode: random,
 * all -128, all 127, alternating extremes, all zero, small values. */
static inline void fz_fill_i8(int8_t *p, size_t n, uint8_t mode, uint64_t seed)
{
    uint64_t s = seed | 1u;
    for (size_t k = 0; k < n; ++k) {
        int32_t v;
        switch (mode % 6) {
        case 1: v = -128; break;
        case 2: v = 127; break;
        case 3: v = (k & 1) ? 127 : -128; break;
        case 4: v = 0; break;
        case 5: v = (int32_t)(fz_next(&s) % 7) - 3; break;
        default: v = (int32_t)(fz_next(&s) & 0xFF) - 128; break;
        }
        p[k] = (int8_t)v;
    }
}

/* FNV-1a of the whole input: the seed of the filler. */
static inline uint64_t fz_hash(const uint8_t *data, size_t size)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < size; ++k) {
        h = (h ^ data[k]) * 1099511628211ull;
    }
    return h;
}

#endif /* TFLM_CAPS_TESTS_FUZZ_FUZZ_INPUT_H */
