/*
 * libFuzzer harness of the kernels' public C API (caps_nn_functions.h),
 * all three backends linked side by side: the portable, Cortex-M and
 * RISC-V kernels are compiled with their symbols renamed to pt_, cm_ and
 * rv_ (tests/fuzz/fuzz.py), the shared checks and parameter code once.
 *
 * Each input picks a kernel, dims, parameters (raw integers or derived
 * from float scales by the *_params_init functions), iteration counts,
 * scratch size and alignment, and tensor contents.  Properties checked:
 *  - every backend returns the status the shared entry check predicts
 *    (calls the checks refuse must be refused, whatever the buffers);
 *  - a *_get_buffer_size of -1 is never accepted, and one byte less than
 *    the reported size is refused;
 *  - accepted calls run clean with exactly the reported scratch (every
 *    buffer is its own heap block of exact size, so the address sanitizer
 *    sees any access outside) and all backends give identical bytes;
 *  - squash with its gain table equals squash without; class-capsule
 *    layers with stored and recomputed predictions agree.
 * Work per input is bounded: calls whose tensors exceed the budget are
 * only checked, not run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "tflm_caps/caps_nn_fixedpoint.h"
#include "tflm_caps/caps_nn_functions.h"

/* ---- the backends ---------------------------------------------------- */

#define CAPS_DECLARE_BACKEND(P)                                                              \
    caps_nn_status P##caps_squash_s8(const caps_nn_context *, const caps_caps_dims *,        \
                                     const caps_squash_params *, const int8_t *, int8_t *);  \
    caps_nn_status P##caps_length_s8(const caps_caps_dims *, const caps_length_params *,     \
                                     const int8_t *, int8_t *);                              \
    caps_nn_status P##caps_predictions_s8(const caps_nn_context *,                           \
                                          const caps_class_caps_dims *,                      \
                                          const caps_predictions_params *, const int8_t *,   \
                                          const int8_t *, int8_t *);                         \
    caps_nn_status P##caps_dynamic_routing_s8(const caps_nn_context *,                       \
                                              const caps_class_caps_dims *,                  \
                                              const caps_routing_params *, const int8_t *,   \
                                              int8_t *);                                     \
    caps_nn_status P##caps_class_caps_s8(const caps_nn_context *, const caps_class_caps_dims *, \
                                         const caps_class_caps_params *, int32_t,            \
                                         const int8_t *, const int8_t *, int8_t *);          \
    caps_nn_status P##caps_predictions_s4(const caps_nn_context *,                           \
                                          const caps_class_caps_dims *,                      \
                                          const caps_predictions_params *, const int8_t *,   \
                                          const int8_t *, int8_t *);                         \
    caps_nn_status P##caps_class_caps_s4(const caps_nn_context *, const caps_class_caps_dims *, \
                                         const caps_class_caps_params *, int32_t,            \
                                         const int8_t *, const int8_t *, int8_t *);          \
    caps_nn_status P##caps_efficient_squash_s8(const caps_nn_context *, const caps_caps_dims *, \
                                               const caps_efficient_squash_params *,         \
                                               const int8_t *, int8_t *);                    \
    caps_nn_status P##caps_self_attention_s8(const caps_nn_context *,                        \
                                             const caps_class_caps_dims *,                   \
                                             const caps_self_attention_params *,             \
                                             const int8_t *, const int8_t *, const int32_t *, \
                                             int8_t *);

CAPS_DECLARE_BACKEND(pt_)
CAPS_DECLARE_BACKEND(cm_)
CAPS_DECLARE_BACKEND(rv_)

typedef struct {
    const char *name;
    caps_nn_status (*squash)(const caps_nn_context *, const caps_caps_dims *,
                             const caps_squash_params *, const int8_t *, int8_t *);
    caps_nn_status (*length)(const caps_caps_dims *, const caps_length_params *, const int8_t *,
                             int8_t *);
    caps_nn_status (*predictions)(const caps_nn_context *, const caps_class_caps_dims *,
                                  const caps_predictions_params *, const int8_t *,
                                  const int8_t *, int8_t *);
    caps_nn_status (*routing)(const caps_nn_context *, const caps_class_caps_dims *,
                              const caps_routing_params *, const int8_t *, int8_t *);
    caps_nn_status (*class_caps)(const caps_nn_context *, const caps_class_caps_dims *,
                                 const caps_class_caps_params *, int32_t, const int8_t *,
                                 const int8_t *, int8_t *);
    /* packed 4-bit weights */
    caps_nn_status (*predictions_s4)(const caps_nn_context *, const caps_class_caps_dims *,
                                     const caps_predictions_params *, const int8_t *,
                                     const int8_t *, int8_t *);
    caps_nn_status (*class_caps_s4)(const caps_nn_context *, const caps_class_caps_dims *,
                                    const caps_class_caps_params *, int32_t, const int8_t *,
                                    const int8_t *, int8_t *);
    /* Efficient-CapsNet */
    caps_nn_status (*efficient_squash)(const caps_nn_context *, const caps_caps_dims *,
                                       const caps_efficient_squash_params *, const int8_t *,
                                       int8_t *);
    caps_nn_status (*self_attention)(const caps_nn_context *, const caps_class_caps_dims *,
                                     const caps_self_attention_params *, const int8_t *,
                                     const int8_t *, const int32_t *, int8_t *);
} backend;

#define BACKEND(P, NAME)                                                                     \
    {NAME, P##caps_squash_s8, P##caps_length_s8, P##caps_predictions_s8,                    \
     P##caps_dynamic_routing_s8, P##caps_class_caps_s8, P##caps_predictions_s4,             \
     P##caps_class_caps_s4, P##caps_efficient_squash_s8, P##caps_self_attention_s8}

static const backend kBackends[] = {BACKEND(pt_, "portable"), BACKEND(cm_, "cortex_m"),
                                    BACKEND(rv_, "riscv")};
#define NUM_BACKENDS 3

/* ---- budget and helpers ---------------------------------------------- */

/* Largest tensor (bytes) and kernel work (multiply-adds, all backends
 * together) an input may run; bigger calls are only checked. */
#define MAX_TENSOR ((int64_t)1 << 16)
#define MAX_WORK ((int64_t)1 << 18)
#define MAX_SCRATCH ((int64_t)1 << 24)

/* FUZZ_VERBOSE=1 in the environment: one line per call on stderr. */
static int verbose(void)
{
    static int v = -1;
    if (v < 0) {
        v = getenv("FUZZ_VERBOSE") != NULL;
    }
    return v;
}

static void fail(const char *what, const char *backend_name, int32_t got, int32_t want)
{
    fprintf(stderr, "fuzz_kernels: %s (backend %s): got %d, expected %d\n", what,
            backend_name != NULL ? backend_name : "-", (int)got, (int)want);
    abort();
}

/* A heap block of exactly n bytes, `offset` bytes past malloc's alignment. */
typedef struct {
    void *base;
    void *p;
} block;

static block block_new(size_t n, size_t offset)
{
    block b;
    b.base = malloc(n + offset > 0 ? n + offset : 1);
    if (b.base == NULL) {
        abort();
    }
    b.p = (uint8_t *)b.base + offset;
    return b;
}

static void same_bytes(const char *what, const backend *be, const int8_t *a, const int8_t *b,
                       size_t n)
{
    for (size_t k = 0; k < n; ++k) {
        if (a[k] != b[k]) {
            fprintf(stderr, "fuzz_kernels: %s differs at byte %zu\n", what, k);
            fail(what, be->name, a[k], b[k]);
        }
    }
}

/* Shift in [-31, 30] for most selectors (0 gives 0), else an edge or raw. */
static int32_t fz_shift(fz_input *in)
{
    const uint8_t s = fz_u8(in);
    if (s < 248) {
        return (int32_t)((s + 31) % 62) - 31;
    }
    static const int32_t edges[4] = {-32, 31, INT32_MIN, INT32_MAX};
    return s < 252 ? edges[s - 248] : fz_i32(in);
}

/* Multiplier in [2^30, 2^31) for most selectors (0 gives 2^30), else 0,
 * INT32_MAX or raw. */
static int32_t fz_mult(fz_input *in)
{
    const uint8_t s = fz_u8(in);
    if (s < 200) {
        return (int32_t)((1u << 30) | (s == 0 ? 0u : (fz_u32(in) & 0x3FFFFFFFu)));
    }
    if (s < 220) {
        return 0;
    }
    return s < 235 ? INT32_MAX : fz_i32(in);
}

static caps_nn_requant fz_requant(fz_input *in)
{
    caps_nn_requant q;
    q.multiplier = fz_mult(in);
    q.shift = fz_shift(in);
    return q;
}

/* Zero point: int8 for most selectors, raw otherwise. */
static int32_t fz_zp(fz_input *in)
{
    const uint8_t s = fz_u8(in);
    return s < 240 ? (int32_t)(int8_t)fz_u8(in) : fz_i32(in);
}

static caps_squash_params fz_squash_raw(fz_input *in, int32_t zp)
{
    caps_squash_params p;
    p.input_zp = zp;
    p.sq_multiplier = fz_mult(in);
    const uint8_t s = fz_u8(in);
    p.sq_exponent = s < 200 ? fz_range(in, -1100, 1100) : (s < 220 ? 0 : fz_i32(in));
    return p;
}

/* Scratch context: exact size (misaligned by 0..7), one byte short, a
 * tiny 8-byte buffer, or none; a size of -1 gets a 64-byte buffer (must
 * be refused). */
typedef struct {
    caps_nn_context ctx;
    block mem;
    int have;
} scratch;

static scratch scratch_new(fz_input *in, int32_t need)
{
    scratch s;
    memset(&s, 0, sizeof(s));
    const uint8_t mode = fz_u8(in);
    const size_t offset = (size_t)(mode >> 5);
    if (need < 0) {
        s.mem = block_new(64, offset);
        s.ctx.buf = s.mem.p;
        s.ctx.size = 64;
        s.have = 1;
    } else if ((mode & 15) == 13) {
        s.mem = block_new(8, offset);
        s.ctx.buf = s.mem.p;
        s.ctx.size = 8;
        s.have = 1;
    } else if ((mode & 7) == 6 && need > 0) {
        s.mem = block_new((size_t)need - 1, offset);
        s.ctx.buf = s.mem.p;
        s.ctx.size = need - 1;
        s.have = 1;
    } else if ((mode & 7) != 7) {
        s.mem = block_new((size_t)need, offset);
        s.ctx.buf = s.mem.p;
        s.ctx.size = need;
        s.have = 1;
    }
    return s;
}

static void scratch_free(scratch *s)
{
    if (s->have) {
        free(s->mem.base);
    }
}

/* ---- squash and length ------------------------------------------------ */

static caps_caps_dims fz_caps_dims(fz_input *in)
{
    caps_caps_dims d;
    d.n_caps = fz_int(in, 1, 4096);
    d.dim = fz_int(in, 1, CAPS_NN_MAX_CAPS_DIM);
    return d;
}

static void fuzz_squash(fz_input *in, uint64_t seed)
{
    const caps_caps_dims dims = fz_caps_dims(in);
    caps_squash_params params;
    const int32_t zp = fz_zp(in);
    if (fz_u8(in) & 1) {
        params = fz_squash_raw(in, zp);
    } else {
        caps_squash_params_init(fz_scale(in), zp, &params); /* zeros on error */
        params.input_zp = zp;
    }
    const int32_t need = caps_squash_s8_get_buffer_size(&dims, &params);
    const int valid = caps_caps_dims_check(&dims) == CAPS_NN_SUCCESS &&
                      caps_squash_params_check(&params) == CAPS_NN_SUCCESS;
    if ((need >= 0) != valid) {
        fail("squash buffer size vs checks", NULL, need, valid);
    }
    const int64_t n = valid ? (int64_t)dims.n_caps * dims.dim : 1;
    /* a capsule's gain without a table costs about 64 element operations */
    if (n > MAX_TENSOR || (n + 64 * (int64_t)dims.n_caps) * (NUM_BACKENDS + 1) > MAX_WORK) {
        return;
    }
    /* table: 0 none, 1 own dims, 2 filled for a larger dim, 3 forged bytes */
    const uint8_t table_mode = fz_u8(in) % 4;
    scratch table;
    memset(&table, 0, sizeof(table));
    if (table_mode != 0) {
        caps_caps_dims tdims = dims;
        if (table_mode == 2 && valid) {
            tdims.dim = fz_range(in, dims.dim, CAPS_NN_MAX_CAPS_DIM);
        }
        const int32_t tneed = caps_squash_s8_get_buffer_size(&tdims, &params);
        const size_t bytes = tneed >= 0 ? (size_t)tneed : 64;
        table.mem = block_new(bytes, fz_u8(in) % 4);
        table.ctx.buf = table.mem.p;
        table.ctx.size = (int32_t)bytes;
        table.have = 1;
        if (table_mode == 3) {
            uint64_t s = seed;
            for (size_t k = 0; k < bytes; ++k) {
                ((uint8_t *)table.ctx.buf)[k] = (uint8_t)fz_next(&s);
            }
            if (valid && bytes >= 27 && (fz_u8(in) & 1)) {
                /* a header that claims these params, gains left random */
                int32_t *w = (int32_t *)(((uintptr_t)table.ctx.buf + 3u) & ~(uintptr_t)3u);
                const int32_t words[5] = {0x54515343, dims.dim, params.input_zp,
                                          params.sq_multiplier, params.sq_exponent};
                memcpy(w, words, sizeof(words));
                /* entries as caps_squash_table.c computes them */
                const int32_t m = 127 - params.input_zp > 128 + params.input_zp
                                      ? 127 - params.input_zp
                                      : 128 + params.input_zp;
                w[5] = (int32_t)caps_nn_squash_index((uint32_t)dims.dim * (uint32_t)(m * m)) + 1;
            }
        } else {
            const caps_nn_status st = caps_squash_s8_init_table(&table.ctx, &tdims, &params);
            if (st != (tneed >= 0 ? CAPS_NN_SUCCESS : CAPS_NN_ARG_ERROR)) {
                fail("squash init_table status", NULL, st, tneed >= 0 ? 0 : -1);
            }
        }
    }
    const caps_nn_context *ctx = table.have ? &table.ctx : NULL;
    const int in_place = fz_u8(in) & 1;
    const uint8_t fill = fz_u8(in);
    block x = block_new((size_t)n, fz_u8(in) % 8);
    fz_fill_i8((int8_t *)x.p, (size_t)n, fill, seed);
    const caps_nn_status expect =
        caps_squash_s8_args_check(ctx, &dims, &params, (const int8_t *)x.p, (int8_t *)x.p, NULL);
    if (verbose()) {
        fprintf(stderr, "squash: %d x %d, table mode %d, expect %d\n", (int)dims.n_caps,
                (int)dims.dim, (int)table_mode, (int)expect);
    }
    int8_t *first = NULL;
    for (int b = 0; b < NUM_BACKENDS; ++b) {
        const backend *be = &kBackends[b];
        block y = block_new((size_t)n, 0);
        int8_t *out = (int8_t *)y.p;
        if (in_place) {
            memcpy(out, x.p, (size_t)n);
        }
        const caps_nn_status st =
            be->squash(ctx, &dims, &params, in_place ? out : (const int8_t *)x.p, out);
        if (st != expect) {
            fail("squash status", be->name, st, expect);
        }
        if (st == CAPS_NN_SUCCESS) {
            if (first == NULL) {
                first = (int8_t *)malloc((size_t)n > 0 ? (size_t)n : 1);
                memcpy(first, out, (size_t)n);
            } else {
                same_bytes("squash output", be, first, out, (size_t)n);
            }
        }
        free(y.base);
    }
    /* a genuine table gives the gains of the table-less path */
    if (first != NULL && table_mode != 0 && table_mode != 3) {
        block y = block_new((size_t)n, 0);
        const caps_nn_status st =
            kBackends[0].squash(NULL, &dims, &params, (const int8_t *)x.p, (int8_t *)y.p);
        if (st != CAPS_NN_SUCCESS) {
            fail("squash without table", kBackends[0].name, st, 0);
        }
        same_bytes("squash table vs no table", &kBackends[0], first, (const int8_t *)y.p,
                   (size_t)n);
        free(y.base);
    }
    free(first);
    free(x.base);
    scratch_free(&table);
}

static void fuzz_length(fz_input *in, uint64_t seed)
{
    const caps_caps_dims dims = fz_caps_dims(in);
    caps_length_params params;
    const int32_t zp = fz_zp(in);
    if (fz_u8(in) & 1) {
        params.input_zp = zp;
        params.out = fz_requant(in);
    } else {
        caps_length_params_init(fz_scale(in), zp, &params);
        params.input_zp = zp;
    }
    const int valid = caps_caps_dims_check(&dims) == CAPS_NN_SUCCESS &&
                      caps_length_params_check(&params) == CAPS_NN_SUCCESS;
    const int64_t n_caps = valid ? dims.n_caps : 1;
    const int64_t n = valid ? n_caps * dims.dim : 1;
    if (n > MAX_TENSOR || (n + 32 * n_caps) * NUM_BACKENDS > MAX_WORK) {
        return;
    }
    block x = block_new((size_t)n, fz_u8(in) % 8);
    fz_fill_i8((int8_t *)x.p, (size_t)n, fz_u8(in), seed);
    const caps_nn_status expect = valid ? CAPS_NN_SUCCESS : CAPS_NN_ARG_ERROR;
    if (verbose()) {
        fprintf(stderr, "length: %d x %d, expect %d\n", (int)dims.n_caps, (int)dims.dim,
                (int)expect);
    }
    int8_t *first = NULL;
    for (int b = 0; b < NUM_BACKENDS; ++b) {
        const backend *be = &kBackends[b];
        block y = block_new((size_t)n_caps, 0);
        const caps_nn_status st = be->length(&dims, &params, (const int8_t *)x.p, (int8_t *)y.p);
        if (st != expect) {
            fail("length status", be->name, st, expect);
        }
        if (st == CAPS_NN_SUCCESS) {
            if (first == NULL) {
                first = (int8_t *)malloc((size_t)n_caps > 0 ? (size_t)n_caps : 1);
                memcpy(first, y.p, (size_t)n_caps);
            } else {
                same_bytes("length output", be, first, (const int8_t *)y.p, (size_t)n_caps);
            }
        }
        free(y.base);
    }
    free(first);
    free(x.base);
}

/* ---- class capsules ---------------------------------------------------- */

typedef struct {
    caps_class_caps_dims dims;
    caps_class_caps_params params;
    int32_t *multipliers; /* num_scales entries (or 1 when that is absurd) */
    int32_t *shifts;
    float *weight_scales;
} layer;

static void layer_free(layer *l)
{
    free(l->multipliers);
    free(l->shifts);
    free(l->weight_scales);
}

static void fuzz_routing_raw(fz_input *in, const caps_class_caps_dims *d, caps_routing_params *r)
{
    memset(r, 0, sizeof(*r));
    r->n_in = d->n_in;
    r->n_out = d->n_out;
    r->dim_out = d->dim_out;
    if (fz_u8(in) >= 248) { /* dims the params were not derived for */
        r->n_in = fz_int(in, 1, CAPS_NN_MAX_N_IN);
        r->n_out = fz_int(in, 1, CAPS_NN_MAX_N_OUT);
        r->dim_out = fz_int(in, 1, CAPS_NN_MAX_CAPS_DIM);
    }
    r->routings = fz_int(in, 1, CAPS_NN_MAX_ROUTINGS);
    for (int32_t k = 0; k < CAPS_NN_MAX_ROUTINGS; ++k) {
        r->s[k] = fz_requant(in);
        r->squash[k] = fz_squash_raw(in, fz_u8(in) >= 250 ? fz_zp(in) : 0);
    }
    for (int32_t k = 0; k + 1 < CAPS_NN_MAX_ROUTINGS; ++k) {
        r->agree[k] = fz_requant(in);
        r->carry[k] = k == 0 ? (caps_nn_requant){0, 0} : fz_requant(in);
        r->exp_beta[k] = fz_requant(in);
    }
}

/* Class-capsule dims (dim_out mostly up to max_dim_out), sometimes with
 * n_in just below a size where some product stops fitting. */
static void fuzz_class_dims(fz_input *in, caps_class_caps_dims *d, int32_t max_dim_out)
{
    d->n_in = fz_int(in, 1, CAPS_NN_MAX_N_IN);
    d->dim_in = fz_int(in, 1, CAPS_NN_MAX_DIM_IN);
    d->n_out = fz_int(in, 1, CAPS_NN_MAX_N_OUT);
    d->dim_out = fz_int(in, 1, max_dim_out);
    const uint8_t near = fz_u8(in);
    if (near >= 240) {
        static const int64_t kTargets[4] = {(INT32_MAX - 65536) / 2, INT32_MAX / 2, INT32_MAX,
                                            (int64_t)1 << 30};
        const int32_t k = (near & 4) ? d->dim_in : 1;
        if (d->n_out >= 1 && d->n_out <= (1 << 20) && d->dim_out >= 1 &&
            d->dim_out <= (1 << 20) && k >= 1 && k <= (1 << 20)) {
            const int64_t per = (int64_t)d->n_out * d->dim_out * k;
            const int64_t n_in = kTargets[near & 3] / per - fz_range(in, -8, 4096);
            d->n_in = n_in < 1 ? 1 : (n_in > INT32_MAX ? INT32_MAX : (int32_t)n_in);
        }
    }
}

/* Dims, then parameters derived from float scales or taken raw. */
static void fuzz_layer(fz_input *in, uint64_t seed, layer *l)
{
    memset(l, 0, sizeof(*l));
    caps_class_caps_dims *d = &l->dims;
    fuzz_class_dims(in, d, CAPS_NN_MAX_CAPS_DIM);
    const int derived = (fz_u8(in) & 1) == 0;
    int32_t num_scales = 1;
    const uint8_t ns = fz_u8(in);
    if (ns & 1) {
        num_scales = ns >= 250 ? fz_i32(in) : d->n_out;
    }
    const int32_t alloc = num_scales >= 1 && num_scales <= CAPS_NN_MAX_N_OUT ? num_scales : 1;
    l->multipliers = (int32_t *)calloc((size_t)alloc, sizeof(int32_t));
    l->shifts = (int32_t *)calloc((size_t)alloc, sizeof(int32_t));
    l->weight_scales = (float *)calloc((size_t)alloc, sizeof(float));
    const int32_t zp = fz_zp(in);
    if (derived) {
        float s_scales[CAPS_NN_MAX_ROUTINGS];
        float b_scales[CAPS_NN_MAX_ROUTINGS];
        caps_class_caps_quant q;
        q.input_scale = fz_scale(in);
        q.input_zp = zp;
        const float w0 = fz_scale(in);
        uint64_t s = seed;
        for (int32_t j = 0; j < alloc; ++j) {
            /* per-capsule scales within a factor 4 of the first */
            l->weight_scales[j] = j == 0 ? w0 : w0 * (0.25f + (float)(fz_next(&s) % 1024) / 256.0f);
        }
        q.weight_scales = l->weight_scales;
        q.num_weight_scales = num_scales;
        q.uhat_scale = fz_scale(in);
        q.routings = fz_int(in, 1, CAPS_NN_MAX_ROUTINGS);
        for (int32_t k = 0; k < CAPS_NN_MAX_ROUTINGS; ++k) {
            s_scales[k] = fz_scale(in);
            b_scales[k] = fz_scale(in);
        }
        q.s_scales = s_scales;
        q.b_scales = b_scales;
        /* may refuse (dims, scales): the params stay zero and are used anyway */
        caps_class_caps_params_init(d, &q, l->multipliers, l->shifts, &l->params);
        l->params.pred.multipliers = l->multipliers;
        l->params.pred.shifts = l->shifts;
        l->params.pred.num_scales = num_scales;
        l->params.pred.input_zp = zp;
    } else {
        for (int32_t j = 0; j < alloc; ++j) {
            l->multipliers[j] = fz_mult(in);
            l->shifts[j] = fz_shift(in);
        }
        l->params.pred.input_zp = zp;
        l->params.pred.num_scales = num_scales;
        l->params.pred.multipliers = l->multipliers;
        l->params.pred.shifts = l->shifts;
        fuzz_routing_raw(in, d, &l->params.routing);
    }
}

enum { K_PREDICTIONS = 0, K_ROUTING = 1, K_CLASS_CAPS = 2, K_PREDICTIONS_S4 = 3,
       K_CLASS_CAPS_S4 = 4 };
static const char *const kKernelNames[5] = {"predictions", "routing", "class_caps",
                                            "predictions_s4", "class_caps_s4"};

/* The int8 kernel a packed 4-bit one mirrors. */
static int base_kind(int kind)
{
    return kind == K_PREDICTIONS_S4 ? K_PREDICTIONS : (kind == K_CLASS_CAPS_S4 ? K_CLASS_CAPS : kind);
}

/* Buffers of one class-capsule kernel call. */
typedef struct {
    block u, w, uhat, out;
    int64_t n_u, n_w, n_uhat, n_out;
} layer_io;

static int32_t kernel_buffer_size(int kind, const caps_class_caps_dims *d, int32_t store)
{
    switch (kind) {
    case K_PREDICTIONS: return caps_predictions_s8_get_buffer_size(d);
    case K_ROUTING: return caps_dynamic_routing_s8_get_buffer_size(d);
    case K_PREDICTIONS_S4: return caps_predictions_s4_get_buffer_size(d);
    case K_CLASS_CAPS_S4: return caps_class_caps_s4_get_buffer_size(d, store);
    default: return caps_class_caps_s8_get_buffer_size(d, store);
    }
}

static caps_nn_status kernel_check(int kind, const caps_nn_context *ctx, const layer *l,
                                   int32_t store, const layer_io *io)
{
    switch (kind) {
    case K_PREDICTIONS:
        return caps_predictions_s8_args_check(ctx, &l->dims, &l->params.pred,
                                              (const int8_t *)io->u.p, (const int8_t *)io->w.p,
                                              (const int8_t *)io->uhat.p);
    case K_ROUTING:
        return caps_dynamic_routing_s8_args_check(ctx, &l->dims, &l->params.routing,
                                                  (const int8_t *)io->uhat.p,
                                                  (const int8_t *)io->out.p);
    case K_PREDICTIONS_S4:
        return caps_predictions_s4_args_check(ctx, &l->dims, &l->params.pred,
                                              (const int8_t *)io->u.p, (const int8_t *)io->w.p,
                                              (const int8_t *)io->uhat.p);
    case K_CLASS_CAPS_S4:
        return caps_class_caps_s4_args_check(ctx, &l->dims, &l->params, store,
                                             (const int8_t *)io->u.p, (const int8_t *)io->w.p,
                                             (const int8_t *)io->out.p);
    default:
        return caps_class_caps_s8_args_check(ctx, &l->dims, &l->params, store,
                                             (const int8_t *)io->u.p, (const int8_t *)io->w.p,
                                             (const int8_t *)io->out.p);
    }
}

/* Runs the kernel; returns its status, output in `out` (n bytes). */
static caps_nn_status kernel_run(int kind, const backend *be, const caps_nn_context *ctx,
                                 const layer *l, int32_t store, const layer_io *io, int8_t *out)
{
    switch (kind) {
    case K_PREDICTIONS:
        return be->predictions(ctx, &l->dims, &l->params.pred, (const int8_t *)io->u.p,
                               (const int8_t *)io->w.p, out);
    case K_ROUTING:
        return be->routing(ctx, &l->dims, &l->params.routing, (const int8_t *)io->uhat.p, out);
    case K_PREDICTIONS_S4:
        return be->predictions_s4(ctx, &l->dims, &l->params.pred, (const int8_t *)io->u.p,
                                  (const int8_t *)io->w.p, out);
    case K_CLASS_CAPS_S4:
        return be->class_caps_s4(ctx, &l->dims, &l->params, store, (const int8_t *)io->u.p,
                                 (const int8_t *)io->w.p, out);
    default:
        return be->class_caps(ctx, &l->dims, &l->params, store, (const int8_t *)io->u.p,
                              (const int8_t *)io->w.p, out);
    }
}

static void layer_io_free(layer_io *io)
{
    free(io->u.base);
    free(io->w.base);
    free(io->uhat.base);
    free(io->out.base);
}

static void fuzz_layer_kernel(fz_input *in, uint64_t seed, int kind)
{
    const char *name = kKernelNames[kind];
    const int s4 = kind != base_kind(kind);
    layer l;
    fuzz_layer(in, seed, &l);
    const caps_class_caps_dims *d = &l.dims;
    int32_t store = 1;
    if (base_kind(kind) == K_CLASS_CAPS) {
        const uint8_t sp = fz_u8(in);
        store = sp < 128 ? 1 : (sp < 250 ? 0 : fz_i32(in));
    }
    const int32_t need = kernel_buffer_size(kind, d, store);
    /* packed weights: each input capsule's block starts on a byte */
    const int dims_ok = caps_class_caps_dims_check(d) == CAPS_NN_SUCCESS &&
                        (!s4 || ((int64_t)d->n_out * d->dim_out * d->dim_in) % 2 == 0);
    if ((need >= 0) != dims_ok) {
        fprintf(stderr, "fuzz_kernels: %s dims %d %d %d %d store %d\n", name, (int)d->n_in,
                (int)d->dim_in, (int)d->n_out, (int)d->dim_out, (int)store);
        fail("buffer size -1 exactly for dims the dims check refuses", name, need, dims_ok);
    }
    /* tensor sizes; 1 byte each for refused dims or a size of -1 (the call
     * must be refused, or the sanitizer sees it write past them) */
    layer_io io;
    memset(&io, 0, sizeof(io));
    io.n_u = io.n_w = io.n_uhat = io.n_out = 1;
    const int32_t r = l.params.routing.routings;
    const int64_t iters = r >= 1 && r <= CAPS_NN_MAX_ROUTINGS ? r : 1;
    if (dims_ok && need >= 0) {
        io.n_uhat = (int64_t)d->n_in * d->n_out * d->dim_out;
        io.n_w = io.n_uhat * d->dim_in;
        io.n_u = (int64_t)d->n_in * d->dim_in;
        io.n_out = base_kind(kind) == K_PREDICTIONS ? io.n_uhat : (int64_t)d->n_out * d->dim_out;
        int64_t work = io.n_w * (s4 ? 2 : 1); /* s4: + the int8 kernel on unpacked weights */
        if (kind == K_ROUTING) {
            work = io.n_uhat * 4 * iters;
        } else if (base_kind(kind) == K_CLASS_CAPS) {
            /* recomputed predictions: one prediction pass per iteration;
             * + one run in the other prediction mode */
            work = (io.n_w * (1 + iters) + io.n_uhat * 4 * iters) * (NUM_BACKENDS + 1 + s4) /
                   NUM_BACKENDS;
        }
        if (io.n_w > MAX_TENSOR || io.n_u > MAX_TENSOR || work * NUM_BACKENDS > MAX_WORK ||
            need > MAX_SCRATCH) {
            /* too big to run: one byte less than the reported scratch is refused */
            if (need > 0) {
                const caps_nn_context small = {&l, need - 1};
                static int8_t one[1];
                layer_io fake;
                memset(&fake, 0, sizeof(fake));
                fake.u.p = fake.w.p = fake.uhat.p = fake.out.p = one;
                if (kernel_check(kind, &small, &l, store, &fake) != CAPS_NN_ARG_ERROR) {
                    fail("accepted a scratch one byte short", name, 0, -1);
                }
            }
            layer_free(&l);
            return;
        }
    }
    io.u = block_new((size_t)io.n_u, fz_u8(in) % 8);
    /* packed weights: exactly n_w / 2 bytes (n_w is even for valid dims) */
    const int64_t w_bytes = s4 && dims_ok ? io.n_w / 2 : io.n_w;
    io.w = block_new((size_t)w_bytes, fz_u8(in) % 8);
    io.uhat = block_new((size_t)io.n_uhat, fz_u8(in) % 8);
    io.out = block_new((size_t)io.n_out, 0);
    fz_fill_i8((int8_t *)io.u.p, (size_t)io.n_u, fz_u8(in), seed);
    fz_fill_i8((int8_t *)io.w.p, (size_t)w_bytes, fz_u8(in), seed * 3u);
    fz_fill_i8((int8_t *)io.uhat.p, (size_t)io.n_uhat, fz_u8(in), seed * 5u);
    scratch sc = scratch_new(in, need);
    const caps_nn_context *ctx = sc.have ? &sc.ctx : NULL;
    const caps_nn_status expect = kernel_check(kind, ctx, &l, store, &io);
    if (expect == CAPS_NN_SUCCESS && (need < 0 || sc.ctx.size < need)) {
        fail("entry check accepted a scratch below the reported size", name, sc.ctx.size, need);
    }
    if (verbose()) {
        fprintf(stderr, "%s: dims %d %d %d %d, scratch %d of %d, expect %d\n", name,
                (int)d->n_in, (int)d->dim_in, (int)d->n_out, (int)d->dim_out,
                sc.have ? (int)sc.ctx.size : -1, (int)need, (int)expect);
    }
    int8_t *first = NULL;
    for (int b = 0; b < NUM_BACKENDS; ++b) {
        const backend *be = &kBackends[b];
        block out = block_new((size_t)io.n_out, 0);
        const caps_nn_status st = kernel_run(kind, be, ctx, &l, store, &io, (int8_t *)out.p);
        if (st != expect) {
            fail(name, be->name, st, expect);
        }
        if (st == CAPS_NN_SUCCESS) {
            if (first == NULL) {
                first = (int8_t *)malloc((size_t)io.n_out);
                memcpy(first, out.p, (size_t)io.n_out);
            } else {
                same_bytes(name, be, first, (const int8_t *)out.p, (size_t)io.n_out);
            }
        }
        free(out.base);
    }
    /* class capsules: the other prediction mode, own exact scratch, agrees */
    if (first != NULL && base_kind(kind) == K_CLASS_CAPS) {
        const int32_t other = store ? 0 : 1;
        const int32_t need2 = kernel_buffer_size(kind, d, other);
        block s2 = block_new((size_t)need2, 0);
        const caps_nn_context ctx2 = {s2.p, need2};
        block out = block_new((size_t)io.n_out, 0);
        const caps_nn_status st =
            kernel_run(kind, &kBackends[0], &ctx2, &l, other, &io, (int8_t *)out.p);
        if (st != CAPS_NN_SUCCESS) {
            fail("class_caps in the other prediction mode", kBackends[0].name, st, 0);
        }
        same_bytes("class_caps stored vs recomputed predictions", &kBackends[0], first,
                   (const int8_t *)out.p, (size_t)io.n_out);
        free(out.base);
        free(s2.base);
    }
    /* packed weights: the int8 kernel on the unpacked values agrees */
    if (first != NULL && s4) {
        layer_io unpacked = io;
        block w8 = block_new((size_t)io.n_w, 0);
        for (int64_t e = 0; e < io.n_w; ++e) {
            const uint8_t byte = ((const uint8_t *)io.w.p)[e / 2];
            const int32_t nib = (e & 1) ? byte >> 4 : byte & 0xF;
            ((int8_t *)w8.p)[e] = (int8_t)(nib >= 8 ? nib - 16 : nib);
        }
        unpacked.w = w8;
        const int base = base_kind(kind);
        const int32_t need8 = kernel_buffer_size(base, d, store);
        block s8 = block_new((size_t)need8, 0);
        const caps_nn_context ctx8 = {s8.p, need8};
        block out = block_new((size_t)io.n_out, 0);
        const caps_nn_status st =
            kernel_run(base, &kBackends[0], &ctx8, &l, store, &unpacked, (int8_t *)out.p);
        if (st != CAPS_NN_SUCCESS) {
            fail("int8 kernel on the unpacked weights", kBackends[0].name, st, 0);
        }
        same_bytes("packed 4-bit vs unpacked int8 weights", &kBackends[0], first,
                   (const int8_t *)out.p, (size_t)io.n_out);
        free(out.base);
        free(s8.base);
        free(w8.base);
    }
    free(first);
    scratch_free(&sc);
    layer_io_free(&io);
    layer_free(&l);
}

/* ---- Efficient-CapsNet: exponential squash ---------------------------- */

static void fuzz_efficient_squash(fz_input *in, uint64_t seed)
{
    const caps_caps_dims dims = fz_caps_dims(in);
    caps_efficient_squash_params params;
    const int32_t zp = fz_zp(in);
    if (fz_u8(in) & 1) {
        params.input_zp = zp;
        params.exp = fz_requant(in);
    } else {
        caps_efficient_squash_params_init(fz_scale(in), zp, &params); /* zeros on error */
        params.input_zp = zp;
    }
    const int32_t need = caps_efficient_squash_s8_get_buffer_size(&dims, &params);
    const int valid = caps_caps_dims_check(&dims) == CAPS_NN_SUCCESS &&
                      caps_efficient_squash_params_check(&params) == CAPS_NN_SUCCESS;
    if ((need >= 0) != valid) {
        fail("efficient squash buffer size vs checks", NULL, need, valid);
    }
    const int64_t n = valid ? (int64_t)dims.n_caps * dims.dim : 1;
    if (n > MAX_TENSOR || (n + 64 * (int64_t)dims.n_caps) * (NUM_BACKENDS + 1) > MAX_WORK) {
        return;
    }
    /* table: 0 none, 1 own dims, 2 filled for a larger dim, 3 forged bytes,
     * 4 one byte short, 5 tiny */
    uint8_t table_mode = fz_u8(in) % 6;
    scratch table;
    memset(&table, 0, sizeof(table));
    if (table_mode != 0) {
        caps_caps_dims tdims = dims;
        if (table_mode == 2 && valid) {
            tdims.dim = fz_range(in, dims.dim, CAPS_NN_MAX_CAPS_DIM);
        }
        const int32_t tneed = caps_efficient_squash_s8_get_buffer_size(&tdims, &params);
        size_t bytes = tneed >= 0 ? (size_t)tneed : 64;
        if (table_mode == 4 && bytes > 0) {
            bytes -= 1;
        } else if (table_mode == 5) {
            bytes = 8;
        }
        table.mem = block_new(bytes, fz_u8(in) % 4);
        table.ctx.buf = table.mem.p;
        table.ctx.size = (int32_t)bytes;
        table.have = 1;
        memset(table.ctx.buf, 0, bytes); /* a table init refused stays deterministic */
        if (table_mode == 3) {
            uint64_t s = seed;
            for (size_t k = 0; k < bytes; ++k) {
                ((uint8_t *)table.ctx.buf)[k] = (uint8_t)fz_next(&s);
            }
            if (valid && bytes >= 27 && (fz_u8(in) & 1)) {
                /* a header that claims these params, gains left random */
                int32_t *w = (int32_t *)(((uintptr_t)table.ctx.buf + 3u) & ~(uintptr_t)3u);
                const int32_t words[5] = {0x51534543, dims.dim, params.input_zp,
                                          params.exp.multiplier, params.exp.shift};
                memcpy(w, words, sizeof(words));
                const int32_t m = 127 - params.input_zp > 128 + params.input_zp
                                      ? 127 - params.input_zp
                                      : 128 + params.input_zp;
                w[5] = (int32_t)caps_nn_squash_index((uint32_t)dims.dim * (uint32_t)(m * m)) + 1;
            }
        } else {
            const caps_nn_status st = caps_efficient_squash_s8_init_table(&table.ctx, &tdims, &params);
            const int fits = tneed >= 0 && (int64_t)bytes >= tneed;
            if (st != (fits ? CAPS_NN_SUCCESS : CAPS_NN_ARG_ERROR)) {
                fail("efficient squash init_table status", NULL, st, fits ? 0 : -1);
            }
            if (!fits) {
                table_mode = 3; /* an unfilled table: not a genuine one */
            }
        }
    }
    const caps_nn_context *ctx = table.have ? &table.ctx : NULL;
    const int in_place = fz_u8(in) & 1;
    const uint8_t fill = fz_u8(in);
    block x = block_new((size_t)n, fz_u8(in) % 8);
    fz_fill_i8((int8_t *)x.p, (size_t)n, fill, seed);
    const caps_nn_status expect = caps_efficient_squash_s8_args_check(
        ctx, &dims, &params, (const int8_t *)x.p, (int8_t *)x.p, NULL);
    if (expect == CAPS_NN_SUCCESS && ctx != NULL && ctx->size < need) {
        fail("efficient squash accepted a table below the reported size", NULL, ctx->size, need);
    }
    if (verbose()) {
        fprintf(stderr, "efficient_squash: %d x %d, table mode %d, expect %d\n",
                (int)dims.n_caps, (int)dims.dim, (int)table_mode, (int)expect);
    }
    int8_t *first = NULL;
    for (int b = 0; b < NUM_BACKENDS; ++b) {
        const backend *be = &kBackends[b];
        block y = block_new((size_t)n, 0);
        int8_t *out = (int8_t *)y.p;
        if (in_place) {
            memcpy(out, x.p, (size_t)n);
        }
        const caps_nn_status st =
            be->efficient_squash(ctx, &dims, &params, in_place ? out : (const int8_t *)x.p, out);
        if (st != expect) {
            fail("efficient squash status", be->name, st, expect);
        }
        if (st == CAPS_NN_SUCCESS) {
            if (first == NULL) {
                first = (int8_t *)malloc((size_t)n > 0 ? (size_t)n : 1);
                memcpy(first, out, (size_t)n);
            } else {
                same_bytes("efficient squash output", be, first, out, (size_t)n);
            }
        }
        free(y.base);
    }
    if (first != NULL && table_mode != 0 && table_mode != 3) {
        block y = block_new((size_t)n, 0);
        const caps_nn_status st = kBackends[0].efficient_squash(NULL, &dims, &params,
                                                                (const int8_t *)x.p, (int8_t *)y.p);
        if (st != CAPS_NN_SUCCESS) {
            fail("efficient squash without table", kBackends[0].name, st, 0);
        }
        same_bytes("efficient squash table vs no table", &kBackends[0], first,
                   (const int8_t *)y.p, (size_t)n);
        free(y.base);
    }
    free(first);
    free(x.base);
    scratch_free(&table);
}

/* ---- Efficient-CapsNet: self-attention capsules ------------------------ */

/* Bias [count] in one of a few patterns: zero, small, the largest allowed
 * magnitude, random up to it, one value beyond it, raw. */
static void fill_bias(int32_t *b, int64_t count, uint8_t mode, uint64_t seed)
{
    uint64_t s = seed | 1u;
    const int32_t top = CAPS_NN_MAX_ATTENTION_BIAS;
    for (int64_t k = 0; k < count; ++k) {
        const uint64_t r = fz_next(&s);
        switch (mode % 6) {
        case 0: b[k] = 0; break;
        case 1: b[k] = (int32_t)(r % 65537) - 32768; break;
        case 2: b[k] = (k & 1) ? top : -top; break;
        case 3: b[k] = (int32_t)(r % (2u * (uint32_t)top + 1u)) - top; break;
        case 4: b[k] = k == 0 ? top + 1 : 0; break;
        default: b[k] = (int32_t)(uint32_t)r; break;
        }
    }
}

static void fuzz_self_attention(fz_input *in, uint64_t seed)
{
    caps_class_caps_dims d;
    fuzz_class_dims(in, &d, CAPS_NN_MAX_ATTENTION_DIM_OUT);
    caps_self_attention_params params;
    memset(&params, 0, sizeof(params));
    int32_t num_scales = 1;
    const uint8_t ns = fz_u8(in);
    if (ns & 1) {
        num_scales = ns >= 250 ? fz_i32(in) : d.n_out;
    }
    const int32_t alloc = num_scales >= 1 && num_scales <= CAPS_NN_MAX_N_OUT ? num_scales : 1;
    int32_t *mult = (int32_t *)calloc((size_t)alloc, sizeof(int32_t));
    int32_t *shifts = (int32_t *)calloc((size_t)alloc, sizeof(int32_t));
    float *w_scales = (float *)calloc((size_t)alloc, sizeof(float));
    const int32_t zp = fz_zp(in);
    const int dims_ok = caps_self_attention_dims_check(&d) == CAPS_NN_SUCCESS;
    const int32_t need = caps_self_attention_s8_get_buffer_size(&d);
    if ((need >= 0) != dims_ok) {
        fprintf(stderr, "fuzz_kernels: self_attention dims %d %d %d %d\n", (int)d.n_in,
                (int)d.dim_in, (int)d.n_out, (int)d.dim_out);
        fail("self_attention buffer size -1 exactly for dims the dims check refuses", NULL,
             need, dims_ok);
    }
    /* tensors: 1 byte (1 bias) each for refused dims */
    int64_t n_u = 1, n_w = 1, n_bias = 1, n_out = 1;
    int too_big = 0;
    if (dims_ok) {
        n_u = (int64_t)d.n_in * d.dim_in;
        n_out = (int64_t)d.n_out * d.dim_out;
        n_w = (int64_t)d.n_in * n_out * d.dim_in;
        n_bias = (int64_t)d.n_in * d.n_out;
        /* votes, vote sums, agreements, weighted sums; + params_init's bias scan */
        const int64_t work = (n_w + 3 * d.n_in * n_out + 8 * n_bias) * NUM_BACKENDS;
        too_big = n_w > MAX_TENSOR || n_u > MAX_TENSOR || 4 * n_bias > MAX_TENSOR ||
                  work > MAX_WORK || need > MAX_SCRATCH;
    }
    int32_t *bias = (int32_t *)malloc(too_big ? sizeof(int32_t) : (size_t)n_bias * 4u);
    fill_bias(bias, too_big ? 1 : n_bias, fz_u8(in), seed * 7u);
    if (fz_u8(in) & 1) { /* derived from float scales */
        caps_self_attention_quant q;
        q.input_scale = fz_scale(in);
        q.input_zp = zp;
        const float w0 = fz_scale(in);
        uint64_t s = seed;
        for (int32_t j = 0; j < alloc; ++j) {
            w_scales[j] = j == 0 ? w0 : w0 * (0.25f + (float)(fz_next(&s) % 1024) / 256.0f);
        }
        q.weight_scales = w_scales;
        q.num_weight_scales = num_scales;
        q.uhat_scale = fz_scale(in);
        q.s_scale = fz_scale(in);
        /* params_init scans the n_in * n_out bias: only with a bias that big */
        if (!too_big) {
            caps_self_attention_params_init(&d, &q, bias, mult, shifts, &params);
        }
        params.pred.multipliers = mult;
        params.pred.shifts = shifts;
        params.pred.num_scales = num_scales;
        params.pred.input_zp = zp;
    } else {
        for (int32_t j = 0; j < alloc; ++j) {
            mult[j] = fz_mult(in);
            shifts[j] = fz_shift(in);
        }
        params.pred.input_zp = zp;
        params.pred.num_scales = num_scales;
        params.pred.multipliers = mult;
        params.pred.shifts = shifts;
        params.n_in = d.n_in;
        params.n_out = d.n_out;
        params.dim_out = d.dim_out;
        if (fz_u8(in) >= 248) {
            params.n_in = fz_int(in, 1, CAPS_NN_MAX_N_IN);
            params.dim_out = fz_int(in, 1, CAPS_NN_MAX_ATTENTION_DIM_OUT);
        }
        params.acc_shift = fz_u8(in) < 240 ? caps_nn_routing_acc_shift(d.n_in) : fz_shift(in);
        params.coupling_shift = fz_int(in, 0, 10);
        params.exp_beta = fz_requant(in);
        params.s = fz_requant(in);
        params.squash_exp = fz_requant(in);
    }
    if (too_big) {
        /* only checked: one byte less than the reported scratch is refused */
        if (need > 0) {
            const caps_nn_context small = {&params, need - 1};
            static int8_t one[1];
            if (caps_self_attention_s8_args_check(&small, &d, &params, one, one, bias, one) !=
                CAPS_NN_ARG_ERROR) {
                fail("self_attention accepted a scratch one byte short", NULL, 0, -1);
            }
        }
        free(bias);
        free(mult);
        free(shifts);
        free(w_scales);
        return;
    }
    block u = block_new((size_t)n_u, fz_u8(in) % 8);
    block w = block_new((size_t)n_w, fz_u8(in) % 8);
    fz_fill_i8((int8_t *)u.p, (size_t)n_u, fz_u8(in), seed);
    fz_fill_i8((int8_t *)w.p, (size_t)n_w, fz_u8(in), seed * 3u);
    scratch sc = scratch_new(in, need);
    const caps_nn_context *ctx = sc.have ? &sc.ctx : NULL;
    const caps_nn_status expect = caps_self_attention_s8_args_check(
        ctx, &d, &params, (const int8_t *)u.p, (const int8_t *)w.p, bias, (const int8_t *)u.p);
    if (expect == CAPS_NN_SUCCESS && (need < 0 || sc.ctx.size < need)) {
        fail("self_attention entry check accepted a scratch below the reported size", NULL,
             sc.ctx.size, need);
    }
    if (verbose()) {
        fprintf(stderr, "self_attention: dims %d %d %d %d, scratch %d of %d, expect %d\n",
                (int)d.n_in, (int)d.dim_in, (int)d.n_out, (int)d.dim_out,
                sc.have ? (int)sc.ctx.size : -1, (int)need, (int)expect);
    }
    int8_t *first = NULL;
    for (int b = 0; b < NUM_BACKENDS; ++b) {
        const backend *be = &kBackends[b];
        block out = block_new((size_t)n_out, 0);
        const caps_nn_status st = be->self_attention(ctx, &d, &params, (const int8_t *)u.p,
                                                     (const int8_t *)w.p, bias, (int8_t *)out.p);
        if (st != expect) {
            fail("self_attention status", be->name, st, expect);
        }
        if (st == CAPS_NN_SUCCESS) {
            if (first == NULL) {
                first = (int8_t *)malloc((size_t)n_out);
                memcpy(first, out.p, (size_t)n_out);
            } else {
                same_bytes("self_attention output", be, first, (const int8_t *)out.p,
                           (size_t)n_out);
            }
        }
        free(out.base);
    }
    free(first);
    scratch_free(&sc);
    free(u.base);
    free(w.base);
    free(bias);
    free(mult);
    free(shifts);
    free(w_scales);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size, 0};
    const uint64_t seed = fz_hash(data, size);
    /* selector: 0..159 the int8 kernels (as before the Efficient-CapsNet
     * and packed 4-bit kernels, so older reproducers still decode), then
     * the newer kernels */
    const uint8_t sel = fz_u8(&in);
    if (sel < 160) {
        switch (sel % 5) {
        case 0: fuzz_squash(&in, seed); break;
        case 1: fuzz_length(&in, seed); break;
        case 2: fuzz_layer_kernel(&in, seed, K_PREDICTIONS); break;
        case 3: fuzz_layer_kernel(&in, seed, K_ROUTING); break;
        default: fuzz_layer_kernel(&in, seed, K_CLASS_CAPS); break;
        }
    } else {
        switch ((sel - 160) % 4) {
        case 0: fuzz_efficient_squash(&in, seed); break;
        case 1: fuzz_self_attention(&in, seed); break;
        case 2: fuzz_layer_kernel(&in, seed, K_PREDICTIONS_S4); break;
        default: fuzz_layer_kernel(&in, seed, K_CLASS_CAPS_S4); break;
        }
    }
    return 0;
}
