/*
 * Types of the tflm-caps int8 capsule kernels (C99, no TFLM dependency).
 *
 * Conventions follow CMSIS-NN: a status enum, dims structs, a context
 * holding caller-provided scratch memory, and integer parameter structs
 * derived once (at prepare time) from the float scales of the model by the
 * caps_*_params_init() functions.  The arithmetic every field feeds is
 * specified in docs/quantization.md.
 */
#ifndef TFLM_CAPS_CAPS_NN_TYPES_H
#define TFLM_CAPS_CAPS_NN_TYPES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Result of every kernel and params_init function. */
typedef enum {
    CAPS_NN_SUCCESS = 0,        /* no error */
    CAPS_NN_ARG_ERROR = -1,     /* bad dims, params, pointers or buffer size */
    CAPS_NN_NO_IMPL_ERROR = -2  /* reserved (CMSIS-NN's NO_IMPL): no backend returns it,
                                   each implements every valid call */
} caps_nn_status;

/* Largest number of routing iterations the parameter structs hold. */
#define CAPS_NN_MAX_ROUTINGS 8

/* Limits checked by the kernels (overflow bounds, see docs/quantization.md). */
#define CAPS_NN_MAX_CAPS_DIM 16384   /* squash/length capsule dim, dim_out */
#define CAPS_NN_MAX_DIM_IN 16384     /* predictions: D_in */
#define CAPS_NN_MAX_N_IN 1048576     /* input capsules of a class-capsule layer */
#define CAPS_NN_MAX_N_OUT 1024       /* output capsules of a class-capsule layer */
#define CAPS_NN_MAX_ATTENTION_DIM_OUT 128 /* self-attention dim_out: agreement fits int32 */
/* The coupling bias of the self-attention layer: int32 in Q15 (scale 2^-15,
 * zero point 0), |bias| <= CAPS_NN_MAX_ATTENTION_BIAS. */
#define CAPS_NN_ATTENTION_BIAS_SCALE_LOG2 (-15)
#define CAPS_NN_MAX_ATTENTION_BIAS 16777216
/* Packed 4-bit weights (the _s4 kernels): n_out*dim_out*dim_in a multiple of
 * this, so that each input capsule's weights start on a byte. */
#define CAPS_NN_S4_BLOCK_MULTIPLE 2

/* Fixed output quantization of squash/routing (v) and length. */
#define CAPS_NN_SQUASH_OUT_SCALE_LOG2 (-7) /* scale 1/128, zero point 0 */
#define CAPS_NN_LENGTH_OUT_SCALE_LOG2 (-8) /* scale 1/256 ... */
#define CAPS_NN_LENGTH_OUT_ZERO_POINT (-128) /* ... zero point -128 */

/* Squash gain table (caps_squash_s8_init_table; a model may carry it as a
 * constant int32 tensor): header words magic, dim, input_zp, sq_multiplier,
 * sq_exponent, entries, then `entries` int32 Q24 gains. */
#define CAPS_NN_SQUASH_TABLE_MAGIC 0x54515343 /* "CSQT" */
#define CAPS_NN_SQUASH_TABLE_HEADER_WORDS 6

/* Scratch memory given to a kernel; size in bytes (CMSIS-NN's context). */
typedef struct {
    void *buf;
    int32_t size;
} caps_nn_context;

/* A TFLite-style requantization: real = multiplier * 2^(shift - 31),
 * multiplier in [2^30, 2^31) (or 0), shift in [-31, 30]; a positive shift
 * is a left shift. */
typedef struct {
    int32_t multiplier;
    int32_t shift;
} caps_nn_requant;

/* A set of capsules: n_caps vectors of dim int8 values, row-major. */
typedef struct {
    int32_t n_caps; /* all capsules of all batch samples, >= 0 */
    int32_t dim;    /* 1..CAPS_NN_MAX_CAPS_DIM */
} caps_caps_dims;

/* One sample of a class-capsule layer: u [n_in, dim_in] -> v [n_out, dim_out]
 * with weights W [n_in, n_out, dim_out, dim_in] and predictions
 * u_hat [n_in, n_out, dim_out].  Routing ignores dim_in. */
typedef struct {
    int32_t n_in;
    int32_t dim_in;
    int32_t n_out;
    int32_t dim_out;
} caps_class_caps_dims;

/* squash: x int8 (any scale, input_zp) -> v int8 (scale 1/128, zp 0).
 * sq_multiplier * 2^(sq_exponent - 31) == input_scale^2 exactly to 31 bits
 * (an unclamped frexp: sq_exponent may be far below -31). */
typedef struct {
    int32_t input_zp;
    int32_t sq_multiplier;
    int32_t sq_exponent;
} caps_squash_params;

/* length: v int8 (any scale, input_zp) -> |v| int8 (scale 1/256, zp -128).
 * out maps the Q16 norm to output units: real = input_scale / 256. */
typedef struct {
    int32_t input_zp;
    caps_nn_requant out;
} caps_length_params;

/* predictions: u int8 (input_scale, input_zp) x W int8 (symmetric) ->
 * u_hat int8 (uhat_scale, zp 0).  multipliers/shifts point to caller-owned
 * arrays of num_scales entries (1: per-tensor, n_out: per output capsule);
 * real[j] = input_scale * weight_scale[j] / uhat_scale. */
typedef struct {
    int32_t input_zp;
    int32_t num_scales;
    const int32_t *multipliers;
    const int32_t *shifts;
} caps_predictions_params;

/* Dynamic routing over int8 predictions u_hat (uhat_scale, zp 0) for
 * `routings` iterations; r indexes iterations, u indexes logit updates
 * (update u happens after iteration u, u = 0..routings-2).
 *   s[r]        sum_i c_ij u_hat -> s_r int8 (s_scale[r], zp 0); s[0] folds
 *               the uniform coupling 1/n_out, s[r>0] the Q15 couplings and
 *               the accumulator pre-shift (caps_nn_routing_acc_shift).
 *   squash[r]   s_r -> v_r (input_zp 0).
 *   agree[u]    agreement u_hat . v_u (units uhat_scale/128) -> b_u int8
 *               (b_scale[u], zp 0).
 *   carry[u]    b_{u-1} -> agreement units, for u >= 1 (carry[0] unused, 0).
 *   exp_beta[u] logit difference of b_u -> Q16 base-2 exponent
 *               (real = b_scale[u] * log2(e) * 2^16), used by iteration u+1.
 * n_in/n_out/dim_out record the dims the parameters were derived for; the
 * kernels refuse other dims. */
typedef struct {
    int32_t n_in;
    int32_t n_out;
    int32_t dim_out;
    int32_t routings;
    caps_nn_requant s[CAPS_NN_MAX_ROUTINGS];
    caps_squash_params squash[CAPS_NN_MAX_ROUTINGS];
    caps_nn_requant agree[CAPS_NN_MAX_ROUTINGS - 1];
    caps_nn_requant carry[CAPS_NN_MAX_ROUTINGS - 1];
    caps_nn_requant exp_beta[CAPS_NN_MAX_ROUTINGS - 1];
} caps_routing_params;

/* Whole class-capsule layer (predictions + routing). */
typedef struct {
    caps_predictions_params pred;
    caps_routing_params routing;
} caps_class_caps_params;

/* Float quantization of a class-capsule layer, as stored in the model and
 * calibrated by the converter (mirrors tflm_caps.reference.ClassCapsQuant).
 * Scales are float32 like TFLite's; every derivation converts them to
 * double first. */
typedef struct {
    float input_scale;
    int32_t input_zp;
    const float *weight_scales;  /* num_weight_scales entries */
    int32_t num_weight_scales;   /* 1 or n_out */
    float uhat_scale;            /* predictions u_hat */
    int32_t routings;            /* 1..CAPS_NN_MAX_ROUTINGS */
    const float *s_scales;       /* routings entries: s_j of each iteration */
    const float *b_scales;       /* routings-1 entries: logits after each update
                                    (may be NULL when routings == 1) */
} caps_class_caps_quant;

/* Efficient-CapsNet squash: x int8 (any scale, input_zp) -> v int8 (scale
 * 1/128, zp 0), v = (1 - exp(-|x|)) x / |x|.  exp maps the Q16 offset norm
 * to the Q16 base-2 exponent of exp(-|x|): real = input_scale * log2(e). */
typedef struct {
    int32_t input_zp;
    caps_nn_requant exp;
} caps_efficient_squash_params;

/* Self-attention capsule layer (Efficient-CapsNet) for one sample, with the
 * dims of caps_class_caps_dims: u [n_in, dim_in], W [n_in, n_out, dim_out,
 * dim_in], coupling bias [n_in, n_out] int32 Q15 -> v [n_out, dim_out].
 *   pred            votes u_hat (as caps_predictions_s8), scale uhat_scale.
 *   acc_shift       p = caps_nn_routing_acc_shift(n_in): the vote sums and
 *                   the weighted-sum accumulators are shifted right by p.
 *   coupling_shift  q: couplings plus bias (Q15) shifted right by q fit int16
 *                   (smallest q with 2^15 + max|bias| <= 2^(15+q)).
 *   exp_beta        agreement difference (units uhat_scale^2 2^p) -> Q16
 *                   base-2 exponent: real = uhat_scale^2 2^p / sqrt(dim_out)
 *                   * log2(e) * 2^16 (1/sqrt as caps_nn_inv_sqrt_q30).
 *   s               accumulator >> p -> s int16 (s_scale, zp 0): real =
 *                   uhat_scale 2^(q+p-15) / s_scale.
 *   squash_exp      Q8 norm of s -> Q16 base-2 exponent of exp(-|s|):
 *                   real = s_scale * log2(e) * 2^8 (caps_nn_efficient_squash_wide).
 * n_in/n_out/dim_out record the dims the parameters were derived for. */
typedef struct {
    caps_predictions_params pred;
    int32_t n_in;
    int32_t n_out;
    int32_t dim_out;
    int32_t acc_shift;
    int32_t coupling_shift;
    caps_nn_requant exp_beta;
    caps_nn_requant s;
    caps_nn_requant squash_exp;
} caps_self_attention_params;

/* Float quantization of a self-attention layer, as stored in the model
 * (mirrors tflm_caps.reference.SelfAttentionQuant); the bias has the fixed
 * scale 2^CAPS_NN_ATTENTION_BIAS_SCALE_LOG2. */
typedef struct {
    float input_scale;
    int32_t input_zp;
    const float *weight_scales;  /* num_weight_scales entries */
    int32_t num_weight_scales;   /* 1 or n_out */
    float uhat_scale;            /* int8 votes u_hat */
    float s_scale;               /* int16 weighted sums s_j */
} caps_self_attention_quant;

#ifdef __cplusplus
}
#endif

#endif /* TFLM_CAPS_CAPS_NN_TYPES_H */
