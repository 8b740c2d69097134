/*
 * Layers whose sizes do not fit int32 and squash params beyond the
 * exponent range: every entry point must refuse them (CAPS_NN_ARG_ERROR)
 * without touching the tiny buffers it is given.  Built with one kernel
 * backend under the address and undefined-behaviour sanitizers; found by
 * tests/fuzz/fuzz_kernels.c.  Prints one line per failed expectation and
 * exits 1 if there was any.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

static int g_failures;

static void expect(int32_t got, int32_t want, const char *what)
{
    if (got != want) {
        printf("%s: got %d, expected %d\n", what, (int)got, (int)want);
        ++g_failures;
    }
}

/* Valid params for any dims: unit requantizations, one routing iteration. */
static void unit_params(const caps_class_caps_dims *d, int32_t *mult, int32_t *shift,
                        caps_class_caps_params *p)
{
    *mult = 1 << 30;
    *shift = 0;
    p->pred.input_zp = 0;
    p->pred.num_scales = 1;
    p->pred.multipliers = mult;
    p->pred.shifts = shift;
    caps_routing_params *r = &p->routing;
    r->n_in = d->n_in;
    r->n_out = d->n_out;
    r->dim_out = d->dim_out;
    r->routings = 1;
    for (int k = 0; k < CAPS_NN_MAX_ROUTINGS; ++k) {
        r->s[k].multiplier = 1 << 30;
        r->s[k].shift = 0;
        r->squash[k].input_zp = 0;
        r->squash[k].sq_multiplier = 1 << 30;
        r->squash[k].sq_exponent = 0;
        if (k + 1 < CAPS_NN_MAX_ROUTINGS) {
            r->agree[k].multiplier = r->carry[k].multiplier = r->exp_beta[k].multiplier = 0;
            r->agree[k].shift = r->carry[k].shift = r->exp_beta[k].shift = 0;
        }
    }
}

/* dims the entry checks must refuse, every kernel given 64-byte blocks */
static void refused_layer(int32_t n_in, int32_t dim_in, int32_t n_out, int32_t dim_out)
{
    const caps_class_caps_dims d = {n_in, dim_in, n_out, dim_out};
    int32_t mult, shift;
    caps_class_caps_params p;
    unit_params(&d, &mult, &shift, &p);
    char what[160];
    snprintf(what, sizeof(what), "dims %d %d %d %d", (int)n_in, (int)dim_in, (int)n_out,
             (int)dim_out);
    expect(caps_class_caps_dims_check(&d), CAPS_NN_ARG_ERROR, what);
    expect(caps_predictions_s8_get_buffer_size(&d), -1, what);
    expect(caps_dynamic_routing_s8_get_buffer_size(&d), -1, what);
    expect(caps_class_caps_s8_get_buffer_size(&d, 0), -1, what);
    expect(caps_class_caps_s8_get_buffer_size(&d, 1), -1, what);
    int8_t *u = (int8_t *)malloc(64), *w = (int8_t *)malloc(64), *out = (int8_t *)malloc(64);
    void *scratch = malloc(64);
    const caps_nn_context ctx = {scratch, 64};
    for (int k = 0; k < 64; ++k) {
        u[k] = w[k] = 1;
    }
    expect(caps_class_caps_s8(&ctx, &d, &p, 1, u, w, out), CAPS_NN_ARG_ERROR, what);
    expect(caps_class_caps_s8(&ctx, &d, &p, 0, u, w, out), CAPS_NN_ARG_ERROR, what);
    expect(caps_predictions_s8(&ctx, &d, &p.pred, u, w, out), CAPS_NN_ARG_ERROR, what);
    expect(caps_dynamic_routing_s8(&ctx, &d, &p.routing, u, out), CAPS_NN_ARG_ERROR, what);
    free(u);
    free(w);
    free(out);
    free(scratch);
}

/* Self-attention dims the class-capsule check accepts but whose own scratch
 * does not fit: refused by every entry point, a 64-byte scratch untouched. */
static void refused_attention(int32_t n_in, int32_t dim_in, int32_t n_out, int32_t dim_out)
{
    const caps_class_caps_dims d = {n_in, dim_in, n_out, dim_out};
    int32_t mult = 1 << 30, shift = 0;
    caps_self_attention_params p = {{0, 1, &mult, &shift}, n_in, n_out, dim_out,
                                    caps_nn_routing_acc_shift(n_in), 0, {1 << 30, 0},
                                    {1 << 30, 0}, {1 << 30, 0}};
    char what[160];
    snprintf(what, sizeof(what), "self-attention dims %d %d %d %d", (int)n_in, (int)dim_in,
             (int)n_out, (int)dim_out);
    expect(caps_class_caps_dims_check(&d), CAPS_NN_SUCCESS, what);
    expect(caps_self_attention_dims_check(&d), CAPS_NN_ARG_ERROR, what);
    expect(caps_self_attention_s8_get_buffer_size(&d), -1, what);
    int8_t *u = (int8_t *)malloc(64), *w = (int8_t *)malloc(64), *out = (int8_t *)malloc(64);
    int32_t *bias = (int32_t *)calloc(16, sizeof(int32_t));
    void *scratch = malloc(64);
    const caps_nn_context ctx = {scratch, 64};
    for (int k = 0; k < 64; ++k) {
        u[k] = w[k] = 1;
    }
    expect(caps_self_attention_s8(&ctx, &d, &p, u, w, bias, out), CAPS_NN_ARG_ERROR, what);
    free(u);
    free(w);
    free(out);
    free(bias);
    free(scratch);
}

static void refused_squash_exponent(int32_t exponent)
{
    const caps_squash_params sp = {0, 1 << 30, exponent};
    const caps_caps_dims dims = {2, 4};
    int8_t x[8] = {1, -2, 3, -4, 100, -128, 127, 0}, v[8];
    char what[96];
    snprintf(what, sizeof(what), "squash exponent %d", (int)exponent);
    expect(caps_squash_params_check(&sp), CAPS_NN_ARG_ERROR, what);
    expect(caps_squash_s8_get_buffer_size(&dims, &sp), -1, what);
    expect(caps_squash_s8(NULL, &dims, &sp, x, v), CAPS_NN_ARG_ERROR, what);
    /* routing with the same squash params in its first iteration */
    const caps_class_caps_dims d = {2, 1, 2, 4};
    int32_t mult, shift;
    caps_class_caps_params p;
    unit_params(&d, &mult, &shift, &p);
    p.routing.squash[0] = sp;
    int8_t uhat[16] = {0};
    void *scratch = malloc((size_t)caps_dynamic_routing_s8_get_buffer_size(&d));
    const caps_nn_context ctx = {scratch, caps_dynamic_routing_s8_get_buffer_size(&d)};
    expect(caps_routing_params_check(&d, &p.routing), CAPS_NN_ARG_ERROR, what);
    expect(caps_dynamic_routing_s8(&ctx, &d, &p.routing, uhat, v), CAPS_NN_ARG_ERROR, what);
    free(scratch);
}

int main(void)
{
    /* stored predictions need about 2^31 bytes of scratch */
    refused_layer(1048500, 1, 1024, 1);
    refused_layer(1048544, 1, 1024, 1);
    refused_layer(1048576, 1, 1024, 1);
    /* weights beyond 2^31 elements */
    refused_layer(1048576, 16384, 1, 1);
    refused_layer(65536, 16384, 2, 1);
    /* at the largest N_in the dims check accepts (N_out 1024, D_out 1),
     * every scratch size is a real size; one more input capsule is refused */
    int32_t lo = 1, hi = CAPS_NN_MAX_N_IN;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo + 1) / 2;
        const caps_class_caps_dims d = {mid, 1, 1024, 1};
        if (caps_class_caps_dims_check(&d) == CAPS_NN_SUCCESS) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    const caps_class_caps_dims fits = {lo, 1, 1024, 1};
    printf("largest N_in for N_out 1024, D_out 1: %d\n", (int)lo);
    expect(lo > 1000000 && lo < 1048500, 1, "largest N_in near the int32 scratch limit");
    expect(caps_class_caps_s8_get_buffer_size(&fits, 1) > 0, 1, "stored scratch at the limit");
    expect(caps_class_caps_s8_get_buffer_size(&fits, 0) > 0, 1, "recompute scratch at the limit");
    expect(caps_dynamic_routing_s8_get_buffer_size(&fits) > 0, 1, "routing scratch at the limit");
    refused_layer(lo + 1, 1, 1024, 1);
    /* found by the kernels fuzzer: the self-attention scratch (votes plus
     * couplings) exceeds int32 below the class-capsule limit */
    refused_attention(1046078, 1, 1024, 1);
    const int32_t exponents[] = {INT32_MIN, INT32_MIN + 1, -1022, 1026, INT32_MAX};
    for (size_t k = 0; k < sizeof(exponents) / sizeof(exponents[0]); ++k) {
        refused_squash_exponent(exponents[k]);
    }
    printf("%d failure(s)\n", g_failures);
    return g_failures != 0;
}
