/*
 * The squash gain table, shared by every backend: one int32 Q24 gain per
 * table index of the squared norm (docs/quantization.md), filled once (TFLM
 * Prepare) so that the kernel's per-capsule work is a norm, a count of
 * leading zeros and a load instead of two divisions and a square root.
 *
 * ctx->buf layout (no alignment required of the caller; the table starts
 * at the first 4-byte boundary, so an aligned buffer needs 3 bytes less
 * than caps_squash_s8_get_buffer_size):
 *   header  magic, dim, input_zp, sq_multiplier, sq_exponent, entries
 *   gains   int32 [entries]
 * The header lets the kernel refuse a table filled for other params.
 */
#include <stddef.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

#define TABLE_MAGIC CAPS_NN_SQUASH_TABLE_MAGIC
#define HEADER_WORDS CAPS_NN_SQUASH_TABLE_HEADER_WORDS

/* Entries for capsules of up to dim elements: index of the largest sq. */
static int32_t table_entries(int32_t dim, int32_t zp)
{
    const uint32_t m = (uint32_t)(127 - zp > 128 + zp ? 127 - zp : 128 + zp);
    return (int32_t)caps_nn_squash_index((uint32_t)dim * m * m) + 1;
}

static int32_t *table_words(const caps_nn_context *ctx)
{
    const uintptr_t p = ((uintptr_t)ctx->buf + 3u) & ~(uintptr_t)3u;
    return (int32_t *)p;
}

int32_t caps_squash_s8_table_words(const caps_caps_dims *dims, const caps_squash_params *params)
{
    if (caps_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        caps_squash_params_check(params) != CAPS_NN_SUCCESS) {
        return -1;
    }
    return HEADER_WORDS + table_entries(dims->dim, params->input_zp);
}

int32_t caps_squash_s8_get_buffer_size(const caps_caps_dims *dims,
                                       const caps_squash_params *params)
{
    const int32_t words = caps_squash_s8_table_words(dims, params);
    return words < 0 ? -1 : 3 + 4 * words;
}

/* Bytes of ctx->buf from its first 4-byte boundary on (negative: none). */
static int32_t aligned_size(const caps_nn_context *ctx)
{
    return ctx->size - (int32_t)((uintptr_t)table_words(ctx) - (uintptr_t)ctx->buf);
}

caps_nn_status caps_squash_s8_init_table(const caps_nn_context *ctx, const caps_caps_dims *dims,
                                         const caps_squash_params *params)
{
    const int32_t words = caps_squash_s8_table_words(dims, params);
    if (words < 0 || ctx == NULL || ctx->buf == NULL || aligned_size(ctx) < 4 * words) {
        return CAPS_NN_ARG_ERROR;
    }
    int32_t *w = table_words(ctx);
    const int32_t entries = table_entries(dims->dim, params->input_zp);
    for (int32_t k = 0; k < entries; ++k) {
        w[HEADER_WORDS + k] = caps_nn_squash_table_entry((uint32_t)k, params->sq_multiplier,
                                                         params->sq_exponent);
    }
    w[0] = TABLE_MAGIC;
    w[1] = dims->dim;
    w[2] = params->input_zp;
    w[3] = params->sq_multiplier;
    w[4] = params->sq_exponent;
    w[5] = entries;
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_squash_s8_args_check(const caps_nn_context *ctx, const caps_caps_dims *dims,
                                         const caps_squash_params *params, const int8_t *input,
                                         const int8_t *output, const int32_t **table)
{
    if (table != NULL) {
        *table = NULL;
    }
    if (caps_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        caps_squash_params_check(params) != CAPS_NN_SUCCESS ||
        (dims->n_caps > 0 && (input == NULL || output == NULL))) {
        return CAPS_NN_ARG_ERROR;
    }
    if (ctx == NULL || ctx->buf == NULL) {
        return CAPS_NN_SUCCESS; /* no table: gains computed per capsule */
    }
    const int32_t words = caps_squash_s8_table_words(dims, params);
    const int32_t *w = table_words(ctx);
    /* a table for a larger dim covers this one; anything else is a table
     * for other params or never filled */
    if (aligned_size(ctx) < 4 * words || w[0] != TABLE_MAGIC || w[1] < dims->dim ||
        w[2] != params->input_zp || w[3] != params->sq_multiplier ||
        w[4] != params->sq_exponent || w[5] != table_entries(w[1], w[2])) {
        return CAPS_NN_ARG_ERROR;
    }
    if (table != NULL) {
        *table = w + HEADER_WORDS;
    }
    return CAPS_NN_SUCCESS;
}
