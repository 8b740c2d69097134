/*
 * Scratch layout of the class-capsule kernels (private to the kernels).
 *
 * The one place that decides where each buffer of caps_predictions_s8,
 * caps_dynamic_routing_s8 and caps_class_caps_s8 lives in ctx->buf:
 * caps_*_get_buffer_size (caps_nn_checks.c) report its sizes and every
 * backend takes its pointers from caps_nn_routing_carve, so the two cannot
 * disagree.
 *
 * ctx->buf may have any alignment: the buffer sizes include 8 bytes to
 * align its start, and every offset below is from that 8-aligned start
 * (caps_nn_scratch_start).  Each region is a multiple of 8 bytes.
 *
 *   routing (caps_dynamic_routing_s8, and the head of caps_class_caps_s8):
 *     acc     int64  [md]         weighted sums s_j of one iteration
 *     table   uint32 [256]        exp(-k S_b) in Q30 of one iteration
 *     logits  int8   [n_in n_out] routing logits b_ij
 *     s       int8   [md]         the sums requantized, squashed into v
 *     expv    uint32 [n_out]      portable: exponentials of one capsule
 *     cblock  int16  [n_out][min(n_in, 256)]  optimized backends' couplings
 *   class-capsule layer, after the routing part:
 *     uhat    int8   [n_in md] stored predictions, or [md] one row that
 *                    the portable kernel recomputes predictions into
 *     pred    the predictions scratch (caps_nn_predictions_scratch_bytes)
 * with md = n_out * dim_out.
 *
 * The optimized backends route in blocks of input capsules: during
 * iterations >= 1 s, expv and cblock are free (s is written only at the
 * end of an iteration), so [block_buf, routing_end) holds the block's Q15
 * couplings [n_out][block] and, when predictions are recomputed, the
 * block's prediction rows [block][md] at `rows`.
 *
 * Valid for dims that pass caps_class_caps_dims_check: every offset is
 * then below 2^32 (n_in n_out dim_out < 2^30, md <= 2^24).
 *
 * caps_nn_routing_output, the end of every backend's routing iteration,
 * goes from acc through s to v.
 */
#ifndef TFLM_CAPS_CAPS_NN_SCRATCH_H
#define TFLM_CAPS_CAPS_NN_SCRATCH_H

#include <stddef.h>
#include <stdint.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

/* Capsules per routing block of the optimized backends: their int32
 * partial sums of c_ij u_hat (|c u| < 2^22) cannot overflow. */
#define CAPS_NN_ROUTING_MAX_BLOCK 255

/* Input capsules the coupling block is sized for. */
#define CAPS_NN_ROUTING_CBLOCK_CAPS 256

#define CAPS_NN_A8(x) (((size_t)(x) + 7u) & ~(size_t)7u)

/* Byte offsets from the 8-aligned start of ctx->buf. */
typedef struct {
    size_t acc;
    size_t table;
    size_t logits;
    size_t s;
    size_t expv;
    size_t cblock;
    size_t routing_end; /* caps_dynamic_routing_s8_get_buffer_size = 8 + routing_end */
    size_t uhat;
    size_t pred;
    size_t end;         /* caps_class_caps_s8_get_buffer_size = 8 + end */
    /* optimized backends, iterations >= 1 */
    size_t block_buf;   /* = s: the block's couplings [n_out][block] */
    size_t rows;        /* recomputed predictions: the block's rows [block][md] */
    int32_t block;      /* input capsules per block, 1..CAPS_NN_ROUTING_MAX_BLOCK */
} caps_nn_routing_scratch;

/* Bytes of the predictions scratch: dim_in int16 (the offset input
 * capsule), 8-aligned, plus 8 to align the caller's pointer. */
static inline size_t caps_nn_predictions_scratch_bytes(const caps_class_caps_dims *dims)
{
    return CAPS_NN_A8(2 * (size_t)dims->dim_in) + 8u;
}

/* The layout for `dims`.  store_predictions: caps_class_caps_s8's mode
 * (0: predictions recomputed, which also sizes the blocks for their rows);
 * caps_dynamic_routing_s8, whose predictions are given, passes 1 and uses
 * the routing part only. */
static inline void caps_nn_routing_scratch_layout(const caps_class_caps_dims *dims,
                                                  int32_t store_predictions,
                                                  caps_nn_routing_scratch *out)
{
    const size_t n_in = (size_t)dims->n_in;
    const size_t n_out = (size_t)dims->n_out;
    const size_t md = n_out * (size_t)dims->dim_out;
    const size_t cb = n_in < CAPS_NN_ROUTING_CBLOCK_CAPS ? n_in : CAPS_NN_ROUTING_CBLOCK_CAPS;
    out->acc = 0;
    out->table = out->acc + 8u * md;
    out->logits = out->table + 256u * 4u;
    out->s = out->logits + CAPS_NN_A8(n_in * n_out);
    out->expv = out->s + CAPS_NN_A8(md);
    out->cblock = out->expv + CAPS_NN_A8(4u * n_out);
    out->routing_end = out->cblock + CAPS_NN_A8(2u * n_out * cb);
    out->uhat = out->routing_end;
    out->pred = out->uhat + (store_predictions ? CAPS_NN_A8(n_in * md) : CAPS_NN_A8(md));
    out->end = out->pred + caps_nn_predictions_scratch_bytes(dims);

    /* at least one capsule: the free part holds md + 2 n_out bytes */
    const size_t free_bytes = out->routing_end - out->s;
    size_t block = free_bytes / (2u * n_out + (store_predictions ? 0u : md));
    block = block > CAPS_NN_ROUTING_MAX_BLOCK ? CAPS_NN_ROUTING_MAX_BLOCK : block;
    block = block > n_in ? n_in : block;
    out->block = (int32_t)block;
    out->block_buf = out->s;
    out->rows = out->block_buf + 2u * n_out * block;
}

/* p rounded up to a multiple of `align` (a power of two). */
static inline uint8_t *caps_nn_scratch_align(void *p, uintptr_t align)
{
    return (uint8_t *)(((uintptr_t)p + align - 1u) & ~(align - 1u));
}

/* The 8-aligned start of a scratch buffer, which the offsets count from. */
static inline uint8_t *caps_nn_scratch_start(void *buf) { return caps_nn_scratch_align(buf, 8); }

/* The layout's regions as pointers into one scratch buffer. */
typedef struct {
    int64_t *acc;
    uint32_t *table;
    int8_t *logits;
    int8_t *s;
    uint32_t *expv;
    int16_t *cbuf;   /* optimized backends: the block's couplings [n_out][block]
                        (a backend storing 2^15 reads them as uint16) */
    int8_t *rowbuf;  /* optimized backends, recomputed predictions: the block's
                        rows [block][md]; NULL when predictions are stored */
    int32_t block;
    int8_t *uhat;    /* class-capsule layer */
    uint8_t *pred;   /* class-capsule layer */
} caps_nn_routing_buffers;

/* Carves ctx->buf (`buf`) by caps_nn_routing_scratch_layout. */
static inline void caps_nn_routing_carve(void *buf, const caps_class_caps_dims *dims,
                                         int32_t store_predictions, caps_nn_routing_buffers *out)
{
    caps_nn_routing_scratch at;
    caps_nn_routing_scratch_layout(dims, store_predictions, &at);
    uint8_t *p = caps_nn_scratch_start(buf);
    out->acc = (int64_t *)(void *)(p + at.acc);
    out->table = (uint32_t *)(void *)(p + at.table);
    out->logits = (int8_t *)(p + at.logits);
    out->s = (int8_t *)(p + at.s);
    out->expv = (uint32_t *)(void *)(p + at.expv);
    out->cbuf = (int16_t *)(void *)(p + at.block_buf);
    out->rowbuf = store_predictions ? NULL : (int8_t *)(p + at.rows);
    out->block = at.block;
    out->uhat = (int8_t *)(p + at.uhat);
    out->pred = p + at.pred;
}

/* End of routing iteration r: the sums in sc->acc (pre-shifted by p =
 * caps_nn_routing_acc_shift(n_in) for r >= 1) requantized into sc->s and
 * squashed into v = output.  Cannot fail for params that passed
 * caps_routing_params_check. */
static inline void caps_nn_routing_output(const caps_nn_routing_buffers *sc,
                                          const caps_routing_params *params, int32_t r, int32_t p,
                                          int8_t *output)
{
    const caps_caps_dims sdims = {params->n_out, params->dim_out};
    caps_nn_routing_sums_s8(sc->acc, params->n_out * params->dim_out, r, p,
                            params->s[r].multiplier, params->s[r].shift, sc->s);
    (void)caps_squash_s8(NULL, &sdims, &params->squash[r], sc->s, output);
}

/* Scratch of caps_self_attention_s8 (every backend), each region 8-aligned
 * from the 8-aligned start of ctx->buf, in this order; the total is
 * caps_self_attention_s8_get_buffer_size (caps_efficient_checks.c):
 *   uhat      int8   [n_in md]     the votes
 *   sum       int16  [md]          vote sums >> p (a backend may permute
 *                                  the elements of each capsule)
 *   acc       int64  [md]          weighted sums (backends: also int32 work)
 *   agree     int32  [n_out]       agreements of one input capsule
 *   expv      uint32 [n_out]       their exponentials
 *   coupling  int16  [n_in n_out]  couplings plus bias >> q
 *   s         int16  [md]          requantized weighted sums
 *   pred      the predictions scratch (caps_predictions_s8_get_buffer_size) */
typedef struct {
    int8_t *uhat;
    int16_t *sum;
    int64_t *acc;
    int32_t *agree;
    uint32_t *expv;
    int16_t *coupling;
    int16_t *s;
    caps_nn_context pred;
} caps_nn_attention_buffers;

static inline void caps_nn_attention_carve(void *buf, const caps_class_caps_dims *dims,
                                           caps_nn_attention_buffers *out)
{
    const size_t md = (size_t)dims->n_out * (size_t)dims->dim_out;
    const size_t n_out = (size_t)dims->n_out;
    uint8_t *p = caps_nn_scratch_start(buf);
    out->uhat = (int8_t *)p;
    p += CAPS_NN_A8((size_t)dims->n_in * md);
    out->sum = (int16_t *)(void *)p;
    p += CAPS_NN_A8(2 * md);
    out->acc = (int64_t *)(void *)p;
    p += 8 * md;
    out->agree = (int32_t *)(void *)p;
    p += CAPS_NN_A8(4 * n_out);
    out->expv = (uint32_t *)(void *)p;
    p += CAPS_NN_A8(4 * n_out);
    out->coupling = (int16_t *)(void *)p;
    p += CAPS_NN_A8(2 * (size_t)dims->n_in * n_out);
    out->s = (int16_t *)(void *)p;
    p += CAPS_NN_A8(2 * md);
    out->pred.buf = p;
    out->pred.size = caps_predictions_s8_get_buffer_size(dims);
}

#endif /* TFLM_CAPS_CAPS_NN_SCRATCH_H */
