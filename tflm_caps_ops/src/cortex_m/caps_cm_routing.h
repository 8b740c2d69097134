/*
 * Internals of the Cortex-M routing (not installed), split by phase:
 *   caps_routing_s8.c          the driver: scratch, iterations, entry points;
 *   caps_cm_routing_sums.c     iteration 0's plain sums and phase C;
 *   caps_cm_routing_agree.c    phase A, which calls phase B per block;
 *   caps_cm_routing_softmax.c  phase B.
 * The scheme is described in caps_routing_s8.c.
 */
#ifndef TFLM_CAPS_CM_ROUTING_H
#define TFLM_CAPS_CM_ROUTING_H

#include "caps_cm_internal.h"

/* ---------------------------------------------------------------------
 * Sums (caps_cm_routing_sums.c).
 * ------------------------------------------------------------------- */

/* Iteration 0: acc += the sum of n_rows rows of u_hat (stride md). */
void caps_cm_routing_uniform_sums(const int8_t *uhat, int32_t n_rows, size_t md, int64_t *acc);

/* Phase C: s_j += sum_i c_ij u_hat(j|i) over the n capsules of one block
 * (couplings in sc->cbuf, prediction rows at `rows`, stride md). */
void caps_cm_routing_coupled_sums(const caps_nn_routing_buffers *sc, const int8_t *rows,
                                  size_t md, int32_t n, int32_t n_out, int32_t dim);

/* ---------------------------------------------------------------------
 * Phases A and B (caps_cm_routing_agree.c, caps_cm_routing_softmax.c).
 * ------------------------------------------------------------------- */

/* Words of v_j unpacked for the agreement (caps_cm_routing_agree.c). */
#define CAPS_CM_VPREP_WORDS 256

enum { CAPS_CM_UPDATE_FIRST = 0, CAPS_CM_UPDATE_CARRY = 1, CAPS_CM_UPDATE_SLOW = 2 };

/* Per-iteration constants of the logit update. */
typedef struct {
    caps_bm_requant agree;
    caps_bm_requant carry;
    caps_nn_requant agree_raw;
    caps_nn_requant carry_raw;
    const int32_t *carry_tab; /* kind CARRY: requantize(b, carry) at [b], b in [-128, 127] */
    int32_t has_carry; /* update u >= 1 */
    int32_t kind;      /* CAPS_CM_UPDATE_* */
} caps_cm_update;

/* Everything phase A needs for one logit update, on the caller's stack
 * (about 2 KB). */
typedef struct {
    caps_cm_update up;
    const uint32_t *vp; /* v unpacked into vprep, or NULL: v too big (kind SLOW) */
    int32_t carry_tab[256];
    uint32_t vprep[CAPS_CM_VPREP_WORDS];
} caps_cm_agreement;

/* Prepares logit update u (before iteration u + 1) against v = v_u. */
void caps_cm_agreement_init(caps_cm_agreement *ag, const caps_routing_params *params, int32_t u,
                            const int8_t *v, int32_t n_out, int32_t dim);

/* Phases A and B of the block of n capsules from i0 whose predictions
 * start at `rows` (stride md): new logits, then their Q15 couplings. */
void caps_cm_routing_agree_block(const caps_cm_agreement *ag, const caps_nn_routing_buffers *sc,
                                 const int8_t *rows, size_t md, const int8_t *v, int32_t i0,
                                 int32_t n, int32_t n_out, int32_t dim);

/* Phase B: the Q15 couplings of the block's logits b [n][n_out] into
 * sc->cbuf (rows: the block's predictions, for a coupling of exactly 2^15). */
void caps_cm_routing_softmax_block(const caps_nn_routing_buffers *sc, const int8_t *rows,
                                   size_t md, const int8_t *b, int32_t n, int32_t n_out,
                                   int32_t dim);

#endif /* TFLM_CAPS_CM_ROUTING_H */
