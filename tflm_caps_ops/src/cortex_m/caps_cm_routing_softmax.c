/*
 * Cortex-M routing, phase B (per input capsule i of a block): integer
 * softmax of its logits (max four at a time with SSUB8/SEL, the shared exp
 * table, one exact 64/32 reciprocal) into Q15 couplings of the block
 * buffer (USAT to 2^15 - 1).  A coupling of exactly 2^15 does not fit a
 * signed halfword: it is stored as 2^15 - 1 and the missing 1 * u_hat is
 * added to the int64 accumulator right away.
 */
#include "caps_cm_routing.h"

#define CM_EBUF 32 /* couplings of up to this many output capsules kept on the stack */
#if defined(__GNUC__) && !defined(__clang__)
#define CM_UNROLL _Pragma("GCC unroll 16")
#else
#define CM_UNROLL
#endif

/* Per-byte signed maximum of two words of four int8. */
CAPS_CM_INLINE uint32_t caps_cm_max_s8x4(uint32_t a, uint32_t b)
{
#if CAPS_CM_DSP
    uint32_t r;
    __asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(r) : "r"(a), "r"(b) : "cc");
    return r;
#else
    uint32_t r = 0;
    for (int32_t k = 0; k < 32; k += 8) {
        const int8_t x = (int8_t)(a >> k), y = (int8_t)(b >> k);
        r |= (uint32_t)(uint8_t)(x > y ? x : y) << k;
    }
    return r;
#endif
}

/* min(caps_bm_softmax_q15(e, recip), 2^15 - 1): the high product word
 * (< 2^30) rounded to Q15 and saturated by one USAT with a shift. */
CAPS_CM_INLINE uint32_t caps_cm_coupling_q15(uint32_t e, uint32_t recip)
{
    const uint32_t hi = (uint32_t)(((uint64_t)e * recip) >> 32) + (1u << 14);
#if CAPS_CM_DSP
    uint32_t r;
    __asm__("usat %0, #15, %1, asr #15" : "=r"(r) : "r"(hi));
    return r;
#else
    const uint32_t c = hi >> 15;
    return c > 32767u ? 32767u : c;
#endif
}

/* Largest of n >= 1 logits: four at a time with SSUB8/SEL. */
CAPS_CM_INLINE int32_t max_logit(const int8_t *b, int32_t n)
{
    int32_t j = 0;
    int32_t mx = -128;
#if CAPS_CM_DSP
    if (n >= 4) {
        uint32_t m = caps_cm_read_s8x4(b);
        for (j = 4; j + 4 <= n; j += 4) {
            m = caps_cm_max_s8x4(m, caps_cm_read_s8x4(b + j));
        }
        m = caps_cm_max_s8x4(m, (m >> 16) | (m << 16));
        m = caps_cm_max_s8x4(m, (m >> 8) | (m << 24));
        mx = (int8_t)(m & 0xFFu);
    }
#endif
    for (; j < n; ++j) {
        mx = b[j] > mx ? b[j] : mx;
    }
    return mx;
}

/* Phase B for one input capsule: the Q15 couplings of its logits b[0..n_out)
 * into column `col` of the block buffer. */
CAPS_CM_INLINE void phase_b_capsule(const caps_nn_routing_buffers *sc, const int8_t *restrict row,
                                    const int8_t *restrict b, const int32_t n_out,
                                    const int32_t dim, int32_t col)
{
    uint32_t ebuf[CM_EBUF];
    const int32_t mx = max_logit(b, n_out);
    const uint32_t *restrict table = sc->table;
    uint64_t sum = 0;
    const int32_t keep = n_out <= CM_EBUF;
    int32_t j = 0;
    if (keep) {
        /* pairs of exponentials (each <= 2^30) add without carry in 32 bits */
        CM_UNROLL
        for (; j + 2 <= n_out; j += 2) {
            const uint32_t e0 = table[mx - b[j]];
            const uint32_t e1 = table[mx - b[j + 1]];
            ebuf[j] = e0;
            ebuf[j + 1] = e1;
            sum += e0 + e1;
        }
        if (j < n_out) {
            ebuf[j] = table[mx - b[j]];
            sum += ebuf[j];
        }
    } else {
        for (; j < n_out; ++j) {
            sum += table[mx - b[j]];
        }
    }
    const uint32_t recip = caps_bm_softmax_recip(sum);
    int16_t *restrict c = sc->cbuf + col;
    const int32_t block = sc->block;
    if (keep) {
        CM_UNROLL
        for (j = 0; j < n_out; ++j) {
            c[(size_t)j * block] = (int16_t)caps_cm_coupling_q15(ebuf[j], recip);
        }
    } else {
        for (j = 0; j < n_out; ++j) {
            *c = (int16_t)caps_cm_coupling_q15(table[mx - b[j]], recip);
            c += block;
        }
    }
    /* The largest coupling is the one of the largest logit (table[0]); when
     * it is exactly 2^15 it was stored as 2^15 - 1: add the missing
     * 1 * u_hat of every such output capsule now. */
    if (caps_bm_softmax_q15(table[0], recip) > 32767) {
        for (j = 0; j < n_out; ++j) {
            if (b[j] == mx) {
                int64_t *acc = sc->acc + (size_t)j * dim;
                const int8_t *u = row + (size_t)j * dim;
                for (int32_t d = 0; d < dim; ++d) {
                    acc[d] += u[d];
                }
            }
        }
    }
}

CAPS_CM_INLINE void phase_b_block_n(const caps_nn_routing_buffers *sc, const int8_t *rows,
                                    size_t md, const int8_t *b, int32_t n, const int32_t n_out,
                                    int32_t dim)
{
    for (int32_t k = 0; k < n; ++k) {
        phase_b_capsule(sc, rows, b, n_out, dim, k);
        rows += md;
        b += n_out;
    }
}

/* Phase B of one block; 10 output capsules (the published CapsNets) get
 * fully unrolled softmax loops. */
void caps_cm_routing_softmax_block(const caps_nn_routing_buffers *sc, const int8_t *rows,
                                   size_t md, const int8_t *b, int32_t n, int32_t n_out,
                                   int32_t dim)
{
    if (n_out == 10) {
        phase_b_block_n(sc, rows, md, b, n, 10, dim);
    } else {
        phase_b_block_n(sc, rows, md, b, n, n_out, dim);
    }
}
