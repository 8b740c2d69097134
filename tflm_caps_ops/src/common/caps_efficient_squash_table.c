/*
 * Gain table of the Efficient-CapsNet squash, shared by every backend: the
 * index and layout of the squash table (caps_squash_table.c), with its own
 * magic and header so a table filled for the other squash or other params
 * is refused.
 *
 * ctx->buf layout (the table starts at the first 4-byte boundary):
 *   header  magic, dim, input_zp, exp multiplier, exp shift, entries
 *   gains   int32 [entries]
 */
#include <stddef.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

#define TABLE_MAGIC 0x51534543 /* "CESQ" */
#define HEADER_WORDS 6

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

int32_t caps_efficient_squash_s8_get_buffer_size(const caps_caps_dims *dims,
                                                 const caps_efficient_squash_params *params)
{
    if (caps_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        caps_efficient_squash_params_check(params) != CAPS_NN_SUCCESS) {
        return -1;
    }
    return 3 + 4 * (HEADER_WORDS + table_entries(dims->dim, params->input_zp));
}

caps_nn_status caps_efficient_squash_s8_init_table(const caps_nn_context *ctx,
                                                   const caps_caps_dims *dims,
                                                   const caps_efficient_squash_params *params)
{
    const int32_t need = caps_efficient_squash_s8_get_buffer_size(dims, params);
    if (need < 0 || ctx == NULL || ctx->buf == NULL || ctx->size < need) {
        return CAPS_NN_ARG_ERROR;
    }
    int32_t *w = table_words(ctx);
    const int32_t entries = table_entries(dims->dim, params->input_zp);
    for (int32_t k = 0; k < entries; ++k) {
        w[HEADER_WORDS + k] = caps_nn_efficient_squash_table_entry(
            (uint32_t)k, params->exp.multiplier, params->exp.shift);
    }
    w[0] = TABLE_MAGIC;
    w[1] = dims->dim;
    w[2] = params->input_zp;
    w[3] = params->exp.multiplier;
    w[4] = params->exp.shift;
    w[5] = entries;
    return CAPS_NN_SUCCESS;
}

caps_nn_status caps_efficient_squash_s8_args_check(const caps_nn_context *ctx,
                                                   const caps_caps_dims *dims,
                                                   const caps_efficient_squash_params *params,
                                                   const int8_t *input, const int8_t *output,
                                                   const int32_t **table)
{
    if (table != NULL) {
        *table = NULL;
    }
    if (caps_caps_dims_check(dims) != CAPS_NN_SUCCESS ||
        caps_efficient_squash_params_check(params) != CAPS_NN_SUCCESS ||
        (dims->n_caps > 0 && (input == NULL || output == NULL))) {
        return CAPS_NN_ARG_ERROR;
    }
    if (ctx == NULL || ctx->buf == NULL) {
        return CAPS_NN_SUCCESS; /* no table: gains computed per capsule */
    }
    const int32_t need = caps_efficient_squash_s8_get_buffer_size(dims, params);
    const int32_t *w = table_words(ctx);
    if (ctx->size < need || w[0] != TABLE_MAGIC || w[1] < dims->dim ||
        w[2] != params->input_zp || w[3] != params->exp.multiplier ||
        w[4] != params->exp.shift || w[5] != table_entries(w[1], w[2])) {
        return CAPS_NN_ARG_ERROR;
    }
    if (table != NULL) {
        *table = w + HEADER_WORDS;
    }
    return CAPS_NN_SUCCESS;
}
