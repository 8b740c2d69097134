/*
 * Runs the kernel calls of a vector file (format: tflm_caps.baremetal.vectors)
 * and writes each call's status and output.  Every input, output and
 * scratch buffer is a separate heap block of exactly the size the API
 * promises, optionally offset by a few bytes from malloc's alignment, so
 * an address sanitizer catches any access outside them.
 *
 * usage: kernel_vectors IN OUT [OFFSET]
 */
#include <stdio.h>
#include <stdlib.h>

#include "tflm_caps/caps_nn_functions.h"
/* Record parsing shared with the bare-metal driver (in the installed
 * package's baremetal/harness/common, on the include path). */
#include "caps_vector_records.h"

static FILE *g_in;
static FILE *g_out;
static size_t g_offset;

static void die(const char *msg)
{
    fprintf(stderr, "kernel_vectors: %s\n", msg);
    exit(2);
}

static void check_record(const char *error)
{
    if (error != NULL) {
        die(error);
    }
}

static int32_t rd32(void)
{
    unsigned char b[4];
    if (fread(b, 1, 4, g_in) != 4) {
        die("truncated vector file");
    }
    return (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
                     ((uint32_t)b[3] << 24));
}

/* A heap block of exactly n bytes placed `offset` bytes past malloc's
 * alignment; *base is what to free. */
static void *block_at(size_t n, size_t offset, void **base)
{
    const size_t total = n + offset;
    unsigned char *p = (unsigned char *)malloc(total > 0 ? total : 1);
    if (p == NULL) {
        die("out of memory");
    }
    *base = p;
    return p + offset;
}

/* int8 data and scratch: offset (the API promises no alignment for them). */
static void *block(size_t n, void **base) { return block_at(n, g_offset, base); }

static int8_t *read_i8(size_t n, void **base)
{
    int8_t *p = (int8_t *)block(n, base);
    if (n > 0 && fread(p, 1, n, g_in) != n) {
        die("truncated vector data");
    }
    return p;
}

static void emit(int32_t status, const int8_t *data, size_t n)
{
    unsigned char b[4];
    for (int k = 0; k < 4; ++k) {
        b[k] = (unsigned char)(((uint32_t)status >> (8 * k)) & 0xFF);
    }
    fwrite(b, 1, 4, g_out);
    if (status != CAPS_NN_SUCCESS) {
        for (size_t k = 0; k < n; ++k) {
            fputc(0, g_out);
        }
    } else {
        fwrite(data, 1, n, g_out);
    }
}

static void run_caps_op(int32_t op)
{
    caps_caps_dims dims;
    caps_squash_params sp;
    caps_length_params lp;
    caps_vec_read_caps_op(rd32, &dims, &sp, &lp);
    const size_t n_in = (size_t)dims.n_caps * (size_t)dims.dim;
    void *bx, *bo;
    int8_t *x = read_i8(n_in, &bx);
    if (op == CAPS_VEC_OP_SQUASH) {
        /* with the gain table (a block of exactly the promised size), then
         * computing each gain */
        const int32_t bytes = caps_squash_s8_get_buffer_size(&dims, &sp);
        void *bt;
        caps_nn_context table;
        table.size = bytes < 0 ? 0 : bytes;
        table.buf = block((size_t)table.size, &bt);
        caps_nn_status st = caps_squash_s8_init_table(&table, &dims, &sp);
        int8_t *o = (int8_t *)block(n_in, &bo);
        emit(st != CAPS_NN_SUCCESS ? st : caps_squash_s8(&table, &dims, &sp, x, o), o, n_in);
        emit(caps_squash_s8(NULL, &dims, &sp, x, o), o, n_in);
        free(bt);
    } else {
        int8_t *o = (int8_t *)block((size_t)dims.n_caps, &bo);
        emit(caps_length_s8(&dims, &lp, x, o), o, (size_t)dims.n_caps);
    }
    free(bx);
    free(bo);
}

static void run_class_caps(void)
{
    caps_class_caps_dims dims;
    int32_t flags;
    caps_class_caps_params params;
    /* Exact-size scale arrays, so the sanitizer checks their reads too. */
    check_record(caps_vec_read_class_caps_head(rd32, &dims, &flags, &params, 4096));
    void *bm, *bs;
    int32_t *mult = (int32_t *)block_at(sizeof(int32_t) * (size_t)params.pred.num_scales, 0, &bm);
    int32_t *shift = (int32_t *)block_at(sizeof(int32_t) * (size_t)params.pred.num_scales, 0, &bs);
    check_record(caps_vec_read_class_caps_rest(rd32, &dims, &params, mult, shift));
    const caps_routing_params *rp = &params.routing;
    caps_vec_kernels kern;
    caps_vec_kernels_of(&dims, flags, &kern);
    const size_t nu = (size_t)dims.n_in * (size_t)dims.dim_in;
    const size_t nv = (size_t)dims.n_out * (size_t)dims.dim_out;
    const size_t nuh = (size_t)dims.n_in * nv;
    void *bu, *bw, *buh = NULL, *bv, *bbuf;
    int8_t *u = read_i8(nu, &bu);
    int8_t *w = read_i8(kern.weight_bytes, &bw);
    int8_t *v = (int8_t *)block(nv, &bv);
    caps_nn_context ctx;

    if (flags & CAPS_VEC_F_PREDICTIONS) {
        int8_t *uh = (int8_t *)block(nuh, &buh);
        ctx.size = kern.predictions_buffer_size(&dims);
        ctx.buf = block(ctx.size > 0 ? (size_t)ctx.size : 0, &bbuf);
        const caps_nn_status st = kern.predictions(&ctx, &dims, &params.pred, u, w, uh);
        emit(st, uh, nuh);
        free(bbuf);
        if (flags & CAPS_VEC_F_ROUTING) {
            ctx.size = caps_dynamic_routing_s8_get_buffer_size(&dims);
            ctx.buf = block(ctx.size > 0 ? (size_t)ctx.size : 0, &bbuf);
            emit(caps_dynamic_routing_s8(&ctx, &dims, rp, uh, v), v, nv);
            free(bbuf);
        }
        free(buh);
    }
    for (int32_t store = 1; store >= 0; --store) {
        if (!(flags & (store ? CAPS_VEC_F_STORE : CAPS_VEC_F_RECOMPUTE))) {
            continue;
        }
        ctx.size = kern.class_caps_buffer_size(&dims, store);
        ctx.buf = block(ctx.size > 0 ? (size_t)ctx.size : 0, &bbuf);
        emit(kern.class_caps(&ctx, &dims, &params, store, u, w, v), v, nv);
        free(bbuf);
    }
    free(bu);
    free(bw);
    free(bv);
    free(bm);
    free(bs);
}

static void run_efficient_squash(void)
{
    caps_caps_dims dims;
    caps_efficient_squash_params ep;
    caps_vec_read_efficient_squash(rd32, &dims, &ep);
    const size_t n = (size_t)dims.n_caps * (size_t)dims.dim;
    void *bx, *bo, *bt;
    int8_t *x = read_i8(n, &bx);
    /* with the gain table (a block of exactly the promised size), then
     * computing each gain */
    const int32_t bytes = caps_efficient_squash_s8_get_buffer_size(&dims, &ep);
    caps_nn_context table;
    table.size = bytes < 0 ? 0 : bytes;
    table.buf = block((size_t)table.size, &bt);
    caps_nn_status st = caps_efficient_squash_s8_init_table(&table, &dims, &ep);
    int8_t *o = (int8_t *)block(n, &bo);
    emit(st != CAPS_NN_SUCCESS ? st : caps_efficient_squash_s8(&table, &dims, &ep, x, o), o, n);
    emit(caps_efficient_squash_s8(NULL, &dims, &ep, x, o), o, n);
    free(bt);
    free(bx);
    free(bo);
}

static void run_self_attention(void)
{
    caps_class_caps_dims dims;
    caps_self_attention_params p;
    check_record(caps_vec_read_self_attention_head(rd32, &dims, &p, 4096));
    /* exact-size scale arrays, as for the class capsules */
    void *bm, *bs, *bu, *bw, *bb, *bv, *bbuf;
    int32_t *mult = (int32_t *)block_at(sizeof(int32_t) * (size_t)p.pred.num_scales, 0, &bm);
    int32_t *shift = (int32_t *)block_at(sizeof(int32_t) * (size_t)p.pred.num_scales, 0, &bs);
    caps_vec_read_self_attention_rest(rd32, &dims, &p, mult, shift);
    const size_t md = (size_t)dims.n_out * (size_t)dims.dim_out;
    const size_t nb = (size_t)dims.n_in * (size_t)dims.n_out;
    int8_t *u = read_i8((size_t)dims.n_in * (size_t)dims.dim_in, &bu);
    int8_t *w = read_i8((size_t)dims.n_in * md * (size_t)dims.dim_in, &bw);
    /* the int32 bias: 4-byte aligned (the API takes an int32 array) */
    int32_t *bias = (int32_t *)block_at(4 * nb, 0, &bb);
    for (size_t k = 0; k < nb; ++k) {
        bias[k] = rd32();
    }
    int8_t *v = (int8_t *)block(md, &bv);
    caps_nn_context ctx;
    ctx.size = caps_self_attention_s8_get_buffer_size(&dims);
    ctx.buf = block(ctx.size > 0 ? (size_t)ctx.size : 0, &bbuf);
    emit(caps_self_attention_s8(&ctx, &dims, &p, u, w, bias, v), v, md);
    free(bbuf);
    free(bv);
    free(bb);
    free(bw);
    free(bu);
    free(bs);
    free(bm);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s IN OUT [OFFSET]\n", argv[0]);
        return 2;
    }
    g_offset = argc == 4 ? (size_t)strtoul(argv[3], NULL, 10) : 0;
    g_in = fopen(argv[1], "rb");
    g_out = fopen(argv[2], "wb");
    if (g_in == NULL || g_out == NULL) {
        die("cannot open files");
    }
    int32_t count;
    check_record(caps_vec_read_header(rd32, &count));
    for (int32_t c = 0; c < count; ++c) {
        const int32_t op = rd32();
        if (op == CAPS_VEC_OP_SQUASH || op == CAPS_VEC_OP_LENGTH) {
            run_caps_op(op);
        } else if (op == CAPS_VEC_OP_CLASS_CAPS) {
            run_class_caps();
        } else if (op == CAPS_VEC_OP_EFFICIENT_SQUASH) {
            run_efficient_squash();
        } else if (op == CAPS_VEC_OP_SELF_ATTENTION) {
            run_self_attention();
        } else {
            die("unknown op code");
        }
    }
    fclose(g_in);
    fclose(g_out);
    return 0;
}
