/*
 * Public C99 API of the tflm-caps int8 capsule kernels.
 *
 * Three groups:
 *  - parameter derivation (src/common/): float scales -> integer params,
 *    bit-identical to tflm_caps.reference.quant; shared by all backends;
 *  - buffer sizes and entry checks (src/common/): bytes a kernel needs in
 *    ctx->buf, the squash gain table;
 *  - kernels (src/portable/, re-implemented under the same names by the
 *    Cortex-M and RISC-V backends, bit-exact): pure integer, no heap;
 *    int8 weights (_s8) or packed 4-bit weights (_s4).
 *
 * Tensors are one sample, row-major, last axis contiguous.  The arithmetic
 * is specified in docs/quantization.md.
 */
#ifndef TFLM_CAPS_CAPS_NN_FUNCTIONS_H
#define TFLM_CAPS_CAPS_NN_FUNCTIONS_H

#include "tflm_caps/caps_nn_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Library version: major*10000 + minor*100 + patch. */
int32_t caps_nn_version(void);

/* ---------------------------------------------------------------------
 * Parameter derivation (double arithmetic, no libm; identical to numpy).
 * ------------------------------------------------------------------- */

/* TFLite QuantizeMultiplier: real = multiplier * 2^(shift-31), multiplier
 * in [2^30, 2^31) rounded half away from zero.  real <= 0, NaN, inf or
 * below 2^-32 -> (0, 0); at or above 2^30 -> (INT32_MAX, 30).  Returns
 * CAPS_NN_ARG_ERROR (and zeros) when real is negative or not finite. */
caps_nn_status caps_quantize_multiplier(double real, int32_t *multiplier, int32_t *shift);

/* Unclamped variant: real = multiplier * 2^(exponent-31) for any positive
 * normal double (exponent in [-1021, 1024]); 0 or subnormal -> (0, 0). */
caps_nn_status caps_frexp_q31(double real, int32_t *multiplier, int32_t *exponent);

caps_nn_status caps_squash_params_init(float input_scale, int32_t input_zp,
                                       caps_squash_params *out);

caps_nn_status caps_length_params_init(float input_scale, int32_t input_zp,
                                       caps_length_params *out);

/* multipliers/shifts: caller arrays of num_weight_scales entries that
 * `out` keeps pointing to. */
caps_nn_status caps_predictions_params_init(float input_scale, int32_t input_zp,
                                            const float *weight_scales,
                                            int32_t num_weight_scales, int32_t n_out,
                                            float uhat_scale, int32_t *multipliers,
                                            int32_t *shifts, caps_predictions_params *out);

caps_nn_status caps_routing_params_init(const caps_class_caps_dims *dims, int32_t routings,
                                        float uhat_scale, const float *s_scales,
                                        const float *b_scales, caps_routing_params *out);

/* Predictions + routing params; multipliers/shifts as for predictions. */
caps_nn_status caps_class_caps_params_init(const caps_class_caps_dims *dims,
                                           const caps_class_caps_quant *quant,
                                           int32_t *multipliers, int32_t *shifts,
                                           caps_class_caps_params *out);

/* ---------------------------------------------------------------------
 * Argument checks shared by all kernel backends (src/common/): each
 * returns CAPS_NN_ARG_ERROR for dims beyond the documented limits or
 * params with a shift out of range / derived for other dims.
 * ------------------------------------------------------------------- */
caps_nn_status caps_caps_dims_check(const caps_caps_dims *dims);
caps_nn_status caps_class_caps_dims_check(const caps_class_caps_dims *dims);
caps_nn_status caps_squash_params_check(const caps_squash_params *params);
caps_nn_status caps_length_params_check(const caps_length_params *params);
caps_nn_status caps_predictions_params_check(const caps_class_caps_dims *dims,
                                             const caps_predictions_params *params);
caps_nn_status caps_routing_params_check(const caps_class_caps_dims *dims,
                                         const caps_routing_params *params);

/* Entry check of caps_squash_s8; *table (may be NULL) receives the gain
 * table of ctx, or NULL when ctx or ctx->buf is NULL.  A ctx->buf that is
 * not a table filled by caps_squash_s8_init_table for these params and a
 * dim >= dims->dim is an error. */
caps_nn_status caps_squash_s8_args_check(const caps_nn_context *ctx, const caps_caps_dims *dims,
                                         const caps_squash_params *params, const int8_t *input,
                                         const int8_t *output, const int32_t **table);

/* Entry check of caps_length_s8 (input and output may be NULL when
 * dims->n_caps is 0). */
caps_nn_status caps_length_s8_args_check(const caps_caps_dims *dims,
                                        const caps_length_params *params, const int8_t *input,
                                        const int8_t *output);

/* Entry checks of the three class-capsule kernels (params, pointers and
 * scratch size), one per kernel so every backend refuses the same calls. */
caps_nn_status caps_predictions_s8_args_check(const caps_nn_context *ctx,
                                              const caps_class_caps_dims *dims,
                                              const caps_predictions_params *params,
                                              const int8_t *input, const int8_t *weights,
                                              const int8_t *u_hat);
caps_nn_status caps_dynamic_routing_s8_args_check(const caps_nn_context *ctx,
                                                  const caps_class_caps_dims *dims,
                                                  const caps_routing_params *params,
                                                  const int8_t *u_hat, const int8_t *output);
caps_nn_status caps_class_caps_s8_args_check(const caps_nn_context *ctx,
                                             const caps_class_caps_dims *dims,
                                             const caps_class_caps_params *params,
                                             int32_t store_predictions, const int8_t *input,
                                             const int8_t *weights, const int8_t *output);

/* ---------------------------------------------------------------------
 * Buffer sizes in bytes (-1 for invalid dims or params).  The class-capsule
 * scratch sizes are generous enough for every backend, which may use the
 * bytes as it likes; the squash table has one layout for all backends.
 * ------------------------------------------------------------------- */
/* squash: its gain table (persistent: fill once with
 * caps_squash_s8_init_table, e.g. in TFLM Prepare).  Depends on dims->dim
 * and params->input_zp only through the largest squared norm.  Includes 3
 * bytes of slack for an unaligned buffer. */
int32_t caps_squash_s8_get_buffer_size(const caps_caps_dims *dims,
                                       const caps_squash_params *params);
/* The same table in int32 words (header + gains): the size of a 4-byte
 * aligned table, e.g. a constant tensor written by the converter. */
int32_t caps_squash_s8_table_words(const caps_caps_dims *dims, const caps_squash_params *params);
int32_t caps_predictions_s8_get_buffer_size(const caps_class_caps_dims *dims);
int32_t caps_dynamic_routing_s8_get_buffer_size(const caps_class_caps_dims *dims);
/* store_predictions != 0: all n_in*n_out*dim_out predictions kept in scratch
 * (computed once); 0: recomputed once per routing iteration (less RAM). */
int32_t caps_class_caps_s8_get_buffer_size(const caps_class_caps_dims *dims,
                                           int32_t store_predictions);

/* ---------------------------------------------------------------------
 * Kernels.
 * ------------------------------------------------------------------- */

/* Fills the squash gain table in ctx->buf (ctx->size >=
 * caps_squash_s8_get_buffer_size, or 4 * caps_squash_s8_table_words for a
 * 4-byte aligned buffer).  Costs about one unaccelerated gain per
 * entry (~1.3k entries for D = 4): call it once, not per inference. */
caps_nn_status caps_squash_s8_init_table(const caps_nn_context *ctx, const caps_caps_dims *dims,
                                         const caps_squash_params *params);

/* v = squash(x) per capsule; input and output [n_caps, dim]. May run in
 * place.  ctx: the gain table from caps_squash_s8_init_table, or NULL (or
 * ctx->buf NULL) to compute each capsule's gain (same output, slower). */
caps_nn_status caps_squash_s8(const caps_nn_context *ctx, const caps_caps_dims *dims,
                              const caps_squash_params *params, const int8_t *input,
                              int8_t *output);

/* output[n] = |input[n, :]|, input [n_caps, dim], output [n_caps]. */
caps_nn_status caps_length_s8(const caps_caps_dims *dims, const caps_length_params *params,
                              const int8_t *input, int8_t *output);

/* u_hat[i, j, d] = requant(sum_k W[i, j, d, k] * (u[i, k] - input_zp)).
 * u [n_in, dim_in], weights [n_in, n_out, dim_out, dim_in],
 * u_hat [n_in, n_out, dim_out]. */
caps_nn_status caps_predictions_s8(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                   const caps_predictions_params *params, const int8_t *input,
                                   const int8_t *weights, int8_t *u_hat);

/* Routing-by-agreement over stored predictions u_hat [n_in, n_out, dim_out];
 * output v [n_out, dim_out] (scale 1/128, zp 0). */
caps_nn_status caps_dynamic_routing_s8(const caps_nn_context *ctx,
                                       const caps_class_caps_dims *dims,
                                       const caps_routing_params *params, const int8_t *u_hat,
                                       int8_t *output);

/* Whole class-capsule layer for one sample: predictions + routing.
 * Both store_predictions modes give bit-identical output. */
caps_nn_status caps_class_caps_s8(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                  const caps_class_caps_params *params,
                                  int32_t store_predictions, const int8_t *input,
                                  const int8_t *weights, int8_t *output);

/* ---------------------------------------------------------------------
 * Packed 4-bit weights (the _s4 kernels).
 *
 * W [n_in, n_out, dim_out, dim_in] as TFLite stores an INT4 tensor (and
 * TFLM's UnpackDenseInt4IntoInt8 reads it): element e of the row-major W
 * is the low nibble of byte e / 2 when e is even, the high nibble when e
 * is odd, two's complement in [-8, 7] (the converter writes [-7, 7]);
 * n_in n_out dim_out dim_in / 2 bytes.  The arithmetic is that of the
 * int8 kernels on the unpacked values (docs/quantization.md); no backend
 * unpacks the tensor into RAM.  Each input capsule's block W[i] must start
 * on a byte: n_out * dim_out * dim_in even (else CAPS_NN_ARG_ERROR and
 * buffer size -1).  The scratch sizes are those of the int8 kernels.
 * ------------------------------------------------------------------- */
int32_t caps_predictions_s4_get_buffer_size(const caps_class_caps_dims *dims);
int32_t caps_class_caps_s4_get_buffer_size(const caps_class_caps_dims *dims,
                                           int32_t store_predictions);
caps_nn_status caps_predictions_s4_args_check(const caps_nn_context *ctx,
                                              const caps_class_caps_dims *dims,
                                              const caps_predictions_params *params,
                                              const int8_t *input, const int8_t *weights,
                                              const int8_t *u_hat);
caps_nn_status caps_class_caps_s4_args_check(const caps_nn_context *ctx,
                                             const caps_class_caps_dims *dims,
                                             const caps_class_caps_params *params,
                                             int32_t store_predictions, const int8_t *input,
                                             const int8_t *weights, const int8_t *output);

/* caps_predictions_s8 with packed 4-bit weights. */
caps_nn_status caps_predictions_s4(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                   const caps_predictions_params *params, const int8_t *input,
                                   const int8_t *weights, int8_t *u_hat);

/* caps_class_caps_s8 with packed 4-bit weights (same params, same output
 * for the same weight values). */
caps_nn_status caps_class_caps_s4(const caps_nn_context *ctx, const caps_class_caps_dims *dims,
                                  const caps_class_caps_params *params,
                                  int32_t store_predictions, const int8_t *input,
                                  const int8_t *weights, int8_t *output);

/* ---------------------------------------------------------------------
 * Exported copies of the inline fixed-point primitives of
 * caps_nn_fixedpoint.h, for bindings and tests (not for hot loops).
 * ------------------------------------------------------------------- */
int32_t caps_nn_requantize_export(int32_t x, int32_t multiplier, int32_t shift);
uint64_t caps_nn_isqrt_u64_export(uint64_t n);
uint32_t caps_nn_exp2_neg_q30_export(int32_t w_q16);
/* Fills table[k] = exp(-k * b_scale) in Q30, k = 0..255, from exp_beta. */
void caps_nn_exp_table_export(const caps_nn_requant *exp_beta, uint32_t *table);
/* Squash gain G (Q24) of a capsule with squared offset norm sq. */
uint32_t caps_nn_squash_gain_export(uint32_t sq, int32_t sq_multiplier, int32_t sq_exponent);
/* Gain the squash applies at squared norm sq (its table entry). */
int32_t caps_nn_squash_table_gain_export(uint32_t sq, int32_t sq_multiplier, int32_t sq_exponent);

/* ---------------------------------------------------------------------
 * Efficient-CapsNet: exponential squash and self-attention capsules
 * (src/common/caps_efficient_*.c; kernels in src/portable/ and every
 * optimized backend).
 * ------------------------------------------------------------------- */
caps_nn_status caps_efficient_squash_params_init(float input_scale, int32_t input_zp,
                                                 caps_efficient_squash_params *out);

/* bias: the constant int32 Q15 coupling bias [n_in, n_out] (it sets
 * coupling_shift); multipliers/shifts as for caps_predictions_params_init. */
caps_nn_status caps_self_attention_params_init(const caps_class_caps_dims *dims,
                                               const caps_self_attention_quant *quant,
                                               const int32_t *bias, int32_t *multipliers,
                                               int32_t *shifts,
                                               caps_self_attention_params *out);

/* Class-capsule dims within limits and dim_out <= CAPS_NN_MAX_ATTENTION_DIM_OUT. */
caps_nn_status caps_self_attention_dims_check(const caps_class_caps_dims *dims);
caps_nn_status caps_efficient_squash_params_check(const caps_efficient_squash_params *params);
caps_nn_status caps_self_attention_params_check(const caps_class_caps_dims *dims,
                                                const caps_self_attention_params *params);

/* Gain table of the Efficient-CapsNet squash (same index and layout as the
 * squash table, its own header): size, fill, entry check. */
int32_t caps_efficient_squash_s8_get_buffer_size(const caps_caps_dims *dims,
                                                 const caps_efficient_squash_params *params);
caps_nn_status caps_efficient_squash_s8_init_table(const caps_nn_context *ctx,
                                                   const caps_caps_dims *dims,
                                                   const caps_efficient_squash_params *params);
caps_nn_status caps_efficient_squash_s8_args_check(const caps_nn_context *ctx,
                                                   const caps_caps_dims *dims,
                                                   const caps_efficient_squash_params *params,
                                                   const int8_t *input, const int8_t *output,
                                                   const int32_t **table);

/* Scratch of caps_self_attention_s8 (-1 for invalid dims). */
int32_t caps_self_attention_s8_get_buffer_size(const caps_class_caps_dims *dims);
caps_nn_status caps_self_attention_s8_args_check(const caps_nn_context *ctx,
                                                 const caps_class_caps_dims *dims,
                                                 const caps_self_attention_params *params,
                                                 const int8_t *input, const int8_t *weights,
                                                 const int32_t *bias, const int8_t *output);

/* v = (1 - exp(-|x|)) x / |x| per capsule; input and output [n_caps, dim],
 * may run in place.  ctx: a table from caps_efficient_squash_s8_init_table,
 * or NULL (or ctx->buf NULL) to compute each capsule's gain. */
caps_nn_status caps_efficient_squash_s8(const caps_nn_context *ctx, const caps_caps_dims *dims,
                                        const caps_efficient_squash_params *params,
                                        const int8_t *input, int8_t *output);

/* Self-attention capsule layer for one sample: votes, agreement with the
 * vote sums, softmax over the output capsules, + bias, weighted sum,
 * Efficient-CapsNet squash.  input u [n_in, dim_in], weights [n_in, n_out,
 * dim_out, dim_in], bias int32 [n_in, n_out] (Q15), output [n_out, dim_out]
 * (scale 1/128, zp 0). */
caps_nn_status caps_self_attention_s8(const caps_nn_context *ctx,
                                      const caps_class_caps_dims *dims,
                                      const caps_self_attention_params *params,
                                      const int8_t *input, const int8_t *weights,
                                      const int32_t *bias, int8_t *output);

/* Exported copies for bindings and tests. */
uint32_t caps_nn_efficient_squash_gain_export(uint32_t sq, int32_t exp_multiplier,
                                              int32_t exp_shift);
uint32_t caps_nn_inv_sqrt_q30_export(uint32_t n);

#ifdef __cplusplus
}
#endif

#endif /* TFLM_CAPS_CAPS_NN_FUNCTIONS_H */
