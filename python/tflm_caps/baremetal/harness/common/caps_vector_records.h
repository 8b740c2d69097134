/*
 * Parsing of CAPV kernel-vector files (format: tflm_caps.baremetal.vectors),
 * shared by the bare-metal driver (harness/kernel_vectors_main.c, vectors
 * embedded in the image) and the host driver (tests/c/kernel_vectors_main.c,
 * vectors read from a file).  The drivers differ in where bytes come from,
 * where buffers live and what happens to outputs, so this header only turns
 * the int32 fields of a record into kernel params: each driver passes its
 * own little-endian int32 reader, which must not return on truncated input.
 * Functions return NULL or a message saying what is wrong with the file;
 * values the kernels themselves validate (dims) are passed through as is.
 *
 * Header-only (static functions) so that every build of either driver
 * picks it up without listing another source.
 */
#ifndef CAPS_VECTOR_RECORDS_H
#define CAPS_VECTOR_RECORDS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tflm_caps/caps_nn_functions.h"

enum {
    CAPS_VEC_OP_SQUASH = 1,
    CAPS_VEC_OP_LENGTH = 2,
    CAPS_VEC_OP_CLASS_CAPS = 3,
    CAPS_VEC_OP_EFFICIENT_SQUASH = 4,
    CAPS_VEC_OP_SELF_ATTENTION = 5
};
enum {
    CAPS_VEC_F_PREDICTIONS = 1, /* caps_predictions_s8 */
    CAPS_VEC_F_ROUTING = 2,     /* caps_dynamic_routing_s8 on those predictions */
    CAPS_VEC_F_STORE = 4,       /* caps_class_caps_s8, store_predictions = 1 */
    CAPS_VEC_F_RECOMPUTE = 8,   /* caps_class_caps_s8, store_predictions = 0 */
    CAPS_VEC_F_INT4 = 16        /* W packed 4 bits: the _s4 kernels instead */
};

/* The class-capsule kernels a record's flags select, and its W bytes. */
typedef struct {
    size_t weight_bytes;
    int32_t (*predictions_buffer_size)(const caps_class_caps_dims *);
    caps_nn_status (*predictions)(const caps_nn_context *, const caps_class_caps_dims *,
                                  const caps_predictions_params *, const int8_t *,
                                  const int8_t *, int8_t *);
    int32_t (*class_caps_buffer_size)(const caps_class_caps_dims *, int32_t);
    caps_nn_status (*class_caps)(const caps_nn_context *, const caps_class_caps_dims *,
                                 const caps_class_caps_params *, int32_t, const int8_t *,
                                 const int8_t *, int8_t *);
} caps_vec_kernels;

static void caps_vec_kernels_of(const caps_class_caps_dims *dims, int32_t flags,
                                caps_vec_kernels *k)
{
    const size_t n = (size_t)dims->n_in * (size_t)dims->n_out * (size_t)dims->dim_out *
                     (size_t)dims->dim_in;
    const int s4 = (flags & CAPS_VEC_F_INT4) != 0;
    k->weight_bytes = s4 ? (n + 1u) / 2u : n;
    k->predictions_buffer_size =
        s4 ? caps_predictions_s4_get_buffer_size : caps_predictions_s8_get_buffer_size;
    k->predictions = s4 ? caps_predictions_s4 : caps_predictions_s8;
    k->class_caps_buffer_size =
        s4 ? caps_class_caps_s4_get_buffer_size : caps_class_caps_s8_get_buffer_size;
    k->class_caps = s4 ? caps_class_caps_s4 : caps_class_caps_s8;
}

typedef int32_t (*caps_vec_rd32_fn)(void);

/* File header: magic "CAPV" (read as one little-endian int32), version 1,
 * then the number of cases. */
static const char *caps_vec_read_header(caps_vec_rd32_fn rd32, int32_t *count)
{
    const int32_t magic = 'C' | ('A' << 8) | ('P' << 16) | ('V' << 24);
    if (rd32() != magic) {
        return "not a CAPV vector file";
    }
    if (rd32() != 1) {
        return "unsupported vector file version (expected 1)";
    }
    *count = rd32();
    return NULL;
}

/* Squash / length record after its op code: dims and the three params
 * fields, filled into both param structs (the op code says which applies).
 * The int8 input of n_caps * dim bytes follows. */
static void caps_vec_read_caps_op(caps_vec_rd32_fn rd32, caps_caps_dims *dims,
                                  caps_squash_params *squash, caps_length_params *length)
{
    dims->n_caps = rd32();
    dims->dim = rd32();
    squash->input_zp = length->input_zp = rd32();
    squash->sq_multiplier = length->out.multiplier = rd32();
    squash->sq_exponent = length->out.shift = rd32();
}

/* Class-caps record after its op code, first part: dims, flags, prediction
 * zero point and num_scales (in [1, max_scales]).  The caller then provides
 * num_scales-entry arrays to caps_vec_read_class_caps_rest. */
static const char *caps_vec_read_class_caps_head(caps_vec_rd32_fn rd32,
                                                 caps_class_caps_dims *dims, int32_t *flags,
                                                 caps_class_caps_params *params,
                                                 int32_t max_scales)
{
    dims->n_in = rd32();
    dims->dim_in = rd32();
    dims->n_out = rd32();
    dims->dim_out = rd32();
    *flags = rd32();
    memset(params, 0, sizeof(*params));
    params->pred.input_zp = rd32();
    params->pred.num_scales = rd32();
    if (params->pred.num_scales < 1 || params->pred.num_scales > max_scales) {
        return "bad scale count";
    }
    return NULL;
}

/* Rest of the class-caps params: the prediction multipliers and shifts
 * (into the caller's arrays, which params then points at) and the routing
 * params.  The int8 u and W follow. */
static const char *caps_vec_read_class_caps_rest(caps_vec_rd32_fn rd32,
                                                 const caps_class_caps_dims *dims,
                                                 caps_class_caps_params *params,
                                                 int32_t *multipliers, int32_t *shifts)
{
    for (int32_t k = 0; k < params->pred.num_scales; ++k) {
        multipliers[k] = rd32();
    }
    for (int32_t k = 0; k < params->pred.num_scales; ++k) {
        shifts[k] = rd32();
    }
    params->pred.multipliers = multipliers;
    params->pred.shifts = shifts;
    caps_routing_params *rp = &params->routing;
    rp->n_in = dims->n_in;
    rp->n_out = dims->n_out;
    rp->dim_out = dims->dim_out;
    rp->routings = rd32();
    if (rp->routings < 1 || rp->routings > CAPS_NN_MAX_ROUTINGS) {
        return "bad routing count";
    }
    for (int32_t r = 0; r < rp->routings; ++r) {
        rp->s[r].multiplier = rd32();
        rp->s[r].shift = rd32();
        rp->squash[r].input_zp = rd32();
        rp->squash[r].sq_multiplier = rd32();
        rp->squash[r].sq_exponent = rd32();
    }
    for (int32_t u = 0; u + 1 < rp->routings; ++u) {
        rp->agree[u].multiplier = rd32();
        rp->agree[u].shift = rd32();
        rp->carry[u].multiplier = rd32();
        rp->carry[u].shift = rd32();
        rp->exp_beta[u].multiplier = rd32();
        rp->exp_beta[u].shift = rd32();
    }
    return NULL;
}

/* The Efficient-CapsNet records (static inline, so a driver that does not
 * run them still compiles warning-free). */

/* Efficient squash record after its op code: dims and params.  The int8
 * input of n_caps * dim bytes follows. */
static inline void caps_vec_read_efficient_squash(caps_vec_rd32_fn rd32, caps_caps_dims *dims,
                                                  caps_efficient_squash_params *params)
{
    dims->n_caps = rd32();
    dims->dim = rd32();
    params->input_zp = rd32();
    params->exp.multiplier = rd32();
    params->exp.shift = rd32();
}

/* Self-attention record after its op code, first part: dims, prediction
 * zero point and num_scales (in [1, max_scales]); then
 * caps_vec_read_self_attention_rest with num_scales-entry arrays. */
static inline const char *caps_vec_read_self_attention_head(caps_vec_rd32_fn rd32,
                                                            caps_class_caps_dims *dims,
                                                            caps_self_attention_params *params,
                                                            int32_t max_scales)
{
    dims->n_in = rd32();
    dims->dim_in = rd32();
    dims->n_out = rd32();
    dims->dim_out = rd32();
    memset(params, 0, sizeof(*params));
    params->pred.input_zp = rd32();
    params->pred.num_scales = rd32();
    if (params->pred.num_scales < 1 || params->pred.num_scales > max_scales) {
        return "bad scale count";
    }
    return NULL;
}

/* Rest of the self-attention params.  The int8 u and W and the int32 bias
 * [n_in * n_out] follow. */
static inline void caps_vec_read_self_attention_rest(caps_vec_rd32_fn rd32,
                                                     const caps_class_caps_dims *dims,
                                                     caps_self_attention_params *params,
                                                     int32_t *multipliers, int32_t *shifts)
{
    for (int32_t k = 0; k < params->pred.num_scales; ++k) {
        multipliers[k] = rd32();
    }
    for (int32_t k = 0; k < params->pred.num_scales; ++k) {
        shifts[k] = rd32();
    }
    params->pred.multipliers = multipliers;
    params->pred.shifts = shifts;
    params->n_in = dims->n_in;
    params->n_out = dims->n_out;
    params->dim_out = dims->dim_out;
    params->acc_shift = rd32();
    params->coupling_shift = rd32();
    params->exp_beta.multiplier = rd32();
    params->exp_beta.shift = rd32();
    params->s.multiplier = rd32();
    params->s.shift = rd32();
    params->squash_exp.multiplier = rd32();
    params->squash_exp.shift = rd32();
}

#endif /* CAPS_VECTOR_RECORDS_H */
