/*
 * Bare-metal kernel test and benchmark program.
 *
 * Runs every kernel call of an in-memory vector blob (format of
 * tflm_caps.baremetal.vectors, embedded by its write_header() as
 * caps_vectors.h), compares each output with the numpy reference's output
 * embedded next to it, and counts the instructions of each call:
 *
 *   CALL index=K case=C op=NAME status=S count=N mismatches=M first=I
 *   PROFILE index=K cores=C critical=N serial=N core0=N ...   (RISC-V profiling)
 *   SUMMARY calls=N failed=F
 *
 * Exit code 0 only if every call returned CAPS_NN_SUCCESS and matched.
 * Scratch buffers get exactly the size the API promises, starting
 * CAPS_SCRATCH_OFFSET bytes past a 16-byte boundary (the API promises no
 * alignment), inputs are read in place from the unaligned blob.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "caps_vector_records.h"
#include "caps_vectors.h"
#include "mcu_harness.h"
#include "tflm_caps/caps_nn_functions.h"

#if defined(CAPS_NN_RISCV_PROFILE)
#include "tflm_caps/caps_nn_backend_riscv.h"
#endif

#ifndef CAPS_SCRATCH_OFFSET
#define CAPS_SCRATCH_OFFSET 0
#endif

/* Scratch beyond what caps_*_get_buffer_size reports (0: exactly that).
 * CAPS_EXTRA_BLOCK_SCRATCH=1 adds 2 * n_out * min(n_in, 256) bytes, which
 * the kernels must ignore (a caller may round its scratch up). */
#ifndef CAPS_EXTRA_BLOCK_SCRATCH
#define CAPS_EXTRA_BLOCK_SCRATCH 0
#endif

static int32_t extra_scratch(const caps_class_caps_dims *dims)
{
    if (!CAPS_EXTRA_BLOCK_SCRATCH) {
        return 0;
    }
    const int32_t n = dims->n_in < 256 ? dims->n_in : 256;
    return (2 * dims->n_out * n + 7) & ~7;
}

/* Bump allocator over one static arena, reset per case. */
static uint8_t g_arena[CAPS_ARENA_BYTES] __attribute__((aligned(16)));
static size_t g_arena_used;

static void *arena_take(size_t n, size_t offset)
{
    size_t start = (g_arena_used + 15u) & ~(size_t)15u;
    start += offset;
    if (start + n > sizeof(g_arena)) {
        mcu_fail("kernel_vectors_main: arena too small (CAPS_ARENA_BYTES)\n");
    }
    g_arena_used = start + n;
    return g_arena + start;
}

static const uint8_t *g_pos;
static const uint8_t *g_end;
static const int8_t *g_expected;
static int32_t g_calls;
static int32_t g_failed;

static int32_t rd32(void)
{
    if (g_pos + 4 > g_end) {
        mcu_fail("kernel_vectors_main: truncated vector blob\n");
    }
    const uint32_t v = (uint32_t)g_pos[0] | ((uint32_t)g_pos[1] << 8) |
                       ((uint32_t)g_pos[2] << 16) | ((uint32_t)g_pos[3] << 24);
    g_pos += 4;
    return (int32_t)v;
}

static void check_record(const char *error)
{
    if (error != NULL) {
        printf("kernel_vectors_main: %s\n", error);
        fflush(stdout);
        mcu_fail("kernel_vectors_main: bad vector blob\n");
    }
}

static const int8_t *rd_i8(size_t n)
{
    if (g_pos + n > g_end) {
        mcu_fail("kernel_vectors_main: truncated vector data\n");
    }
    const int8_t *p = (const int8_t *)g_pos;
    g_pos += n;
    return p;
}

static void profile_reset(void)
{
#if defined(CAPS_NN_RISCV_PROFILE)
    caps_nn_riscv_profile_reset();
#endif
}

static void profile_report(int32_t index, uint64_t total)
{
#if defined(CAPS_NN_RISCV_PROFILE)
    const caps_nn_riscv_profile *p = caps_nn_riscv_profile_get();
    const uint64_t serial = total > p->parallel_total ? total - p->parallel_total : 0;
    printf("PROFILE index=%ld cores=%ld phases=%lu critical=%llu serial=%llu", (long)index,
           (long)p->num_cores, (unsigned long)p->phases,
           (unsigned long long)(serial + p->parallel_critical), (unsigned long long)serial);
    for (int32_t c = 0; c < p->num_cores; ++c) {
        printf(" core%ld=%llu", (long)c, (unsigned long long)p->core_instructions[c]);
    }
    printf("\n");
#else
    (void)index;
    (void)total;
#endif
}

/* Compare n output bytes with the next n expected bytes and report. */
static void check_call(int32_t case_index, const char *op, caps_nn_status st, uint64_t count,
                       const int8_t *out, size_t n)
{
    size_t mismatches = 0;
    long first = -1;
    for (size_t k = 0; k < n; ++k) {
        if (out[k] != g_expected[k]) {
            if (first < 0) {
                first = (long)k;
            }
            ++mismatches;
        }
    }
    const int ok = st == CAPS_NN_SUCCESS && mismatches == 0;
    printf("CALL index=%ld case=%ld op=%s status=%d count=%llu mismatches=%lu first=%ld",
           (long)g_calls, (long)case_index, op, (int)st, (unsigned long long)count,
           (unsigned long)mismatches, first);
    if (first >= 0) {
        printf(" got=%d want=%d", out[first], g_expected[first]);
    }
    printf(" %s\n", ok ? "PASS" : "FAIL");
    profile_report(g_calls, count);
    g_expected += n;
    g_failed += ok ? 0 : 1;
    ++g_calls;
}

static void run_squash_or_length(int32_t case_index, int32_t op)
{
    caps_caps_dims dims;
    caps_squash_params sp;
    caps_length_params lp;
    caps_vec_read_caps_op(rd32, &dims, &sp, &lp);
    const size_t n = (size_t)dims.n_caps * (size_t)dims.dim;
    const int8_t *x = rd_i8(n);
    uint64_t t0, t1;
    caps_nn_status st;
    if (op == CAPS_VEC_OP_SQUASH) {
        /* the gain table is filled once outside the timed call, as TFLM
         * Prepare does; then the same call without a table */
        const int32_t bytes = caps_squash_s8_get_buffer_size(&dims, &sp);
        caps_nn_context table;
        table.size = bytes < 0 ? 0 : bytes;
        table.buf = arena_take((size_t)table.size, 0);
        st = caps_squash_s8_init_table(&table, &dims, &sp);
        int8_t *out = (int8_t *)arena_take(n, 0);
        profile_reset();
        t0 = mcu_counter_read();
        if (st == CAPS_NN_SUCCESS) {
            st = caps_squash_s8(&table, &dims, &sp, x, out);
        }
        t1 = mcu_counter_read();
        check_call(case_index, "squash", st, t1 - t0, out, n);
        profile_reset();
        t0 = mcu_counter_read();
        st = caps_squash_s8(NULL, &dims, &sp, x, out);
        t1 = mcu_counter_read();
        check_call(case_index, "squash_no_table", st, t1 - t0, out, n);
    } else {
        int8_t *out = (int8_t *)arena_take((size_t)dims.n_caps, 0);
        profile_reset();
        t0 = mcu_counter_read();
        st = caps_length_s8(&dims, &lp, x, out);
        t1 = mcu_counter_read();
        check_call(case_index, "length", st, t1 - t0, out, (size_t)dims.n_caps);
    }
}

static caps_nn_context scratch(int32_t bytes)
{
    caps_nn_context ctx;
    ctx.size = bytes < 0 ? 0 : bytes;
    ctx.buf = arena_take((size_t)ctx.size, CAPS_SCRATCH_OFFSET);
    return ctx;
}

static void run_class_caps(int32_t case_index)
{
    caps_class_caps_dims dims;
    int32_t flags;
    caps_class_caps_params p;
    static int32_t mult[CAPS_NN_MAX_N_OUT];
    static int32_t shift[CAPS_NN_MAX_N_OUT];
    check_record(caps_vec_read_class_caps_head(rd32, &dims, &flags, &p, CAPS_NN_MAX_N_OUT));
    check_record(caps_vec_read_class_caps_rest(rd32, &dims, &p, mult, shift));
    const caps_routing_params *rp = &p.routing;
    caps_vec_kernels kern;
    caps_vec_kernels_of(&dims, flags, &kern);
    const size_t md = (size_t)dims.n_out * (size_t)dims.dim_out;
    const int8_t *u = rd_i8((size_t)dims.n_in * (size_t)dims.dim_in);
    const int8_t *w = rd_i8(kern.weight_bytes);
    int8_t *v = (int8_t *)arena_take(md, 0);
    uint64_t t0, t1;
    caps_nn_status st;

    if (flags & CAPS_VEC_F_PREDICTIONS) {
        int8_t *u_hat = (int8_t *)arena_take((size_t)dims.n_in * md, 0);
        caps_nn_context ctx = scratch(kern.predictions_buffer_size(&dims));
        profile_reset();
        t0 = mcu_counter_read();
        st = kern.predictions(&ctx, &dims, &p.pred, u, w, u_hat);
        t1 = mcu_counter_read();
        check_call(case_index, (flags & CAPS_VEC_F_INT4) ? "predictions_s4" : "predictions", st,
                   t1 - t0, u_hat, (size_t)dims.n_in * md);
        if (flags & CAPS_VEC_F_ROUTING) {
            caps_nn_context rctx =
                scratch(caps_dynamic_routing_s8_get_buffer_size(&dims) + extra_scratch(&dims));
            profile_reset();
            t0 = mcu_counter_read();
            st = caps_dynamic_routing_s8(&rctx, &dims, rp, u_hat, v);
            t1 = mcu_counter_read();
            check_call(case_index, "routing", st, t1 - t0, v, md);
        }
    }
    for (int32_t store = 1; store >= 0; --store) {
        if (!(flags & (store ? CAPS_VEC_F_STORE : CAPS_VEC_F_RECOMPUTE))) {
            continue;
        }
        caps_nn_context ctx =
            scratch(kern.class_caps_buffer_size(&dims, store) + extra_scratch(&dims));
        memset(v, 0x55, md);
        profile_reset();
        t0 = mcu_counter_read();
        st = kern.class_caps(&ctx, &dims, &p, store, u, w, v);
        t1 = mcu_counter_read();
        static const char *const names[2][2] = {{"class_caps_recompute", "class_caps_store"},
                                                {"class_caps_recompute_s4", "class_caps_store_s4"}};
        check_call(case_index, names[(flags & CAPS_VEC_F_INT4) != 0][store], st, t1 - t0,
                   v, md);
    }
}

static void run_efficient_squash(int32_t case_index)
{
    caps_caps_dims dims;
    caps_efficient_squash_params ep;
    caps_vec_read_efficient_squash(rd32, &dims, &ep);
    const size_t n = (size_t)dims.n_caps * (size_t)dims.dim;
    const int8_t *x = rd_i8(n);
    /* the gain table is filled outside the timed call (TFLM Prepare) */
    const int32_t bytes = caps_efficient_squash_s8_get_buffer_size(&dims, &ep);
    caps_nn_context table;
    table.size = bytes < 0 ? 0 : bytes;
    table.buf = arena_take((size_t)table.size, 0);
    caps_nn_status st = caps_efficient_squash_s8_init_table(&table, &dims, &ep);
    int8_t *out = (int8_t *)arena_take(n, 0);
    profile_reset();
    uint64_t t0 = mcu_counter_read();
    if (st == CAPS_NN_SUCCESS) {
        st = caps_efficient_squash_s8(&table, &dims, &ep, x, out);
    }
    uint64_t t1 = mcu_counter_read();
    check_call(case_index, "efficient_squash", st, t1 - t0, out, n);
    profile_reset();
    t0 = mcu_counter_read();
    st = caps_efficient_squash_s8(NULL, &dims, &ep, x, out);
    t1 = mcu_counter_read();
    check_call(case_index, "efficient_squash_no_table", st, t1 - t0, out, n);
}

static void run_self_attention(int32_t case_index)
{
    caps_class_caps_dims dims;
    caps_self_attention_params p;
    static int32_t mult[CAPS_NN_MAX_N_OUT];
    static int32_t shift[CAPS_NN_MAX_N_OUT];
    check_record(caps_vec_read_self_attention_head(rd32, &dims, &p, CAPS_NN_MAX_N_OUT));
    caps_vec_read_self_attention_rest(rd32, &dims, &p, mult, shift);
    const size_t md = (size_t)dims.n_out * (size_t)dims.dim_out;
    const size_t nb = (size_t)dims.n_in * (size_t)dims.n_out;
    const int8_t *u = rd_i8((size_t)dims.n_in * (size_t)dims.dim_in);
    const int8_t *w = rd_i8((size_t)dims.n_in * md * (size_t)dims.dim_in);
    /* the int32 bias is copied out of the unaligned blob */
    int32_t *bias = (int32_t *)arena_take(4 * nb, 0);
    memcpy(bias, rd_i8(4 * nb), 4 * nb);
    int8_t *v = (int8_t *)arena_take(md, 0);
    caps_nn_context ctx = scratch(caps_self_attention_s8_get_buffer_size(&dims));
    memset(v, 0x55, md);
    profile_reset();
    const uint64_t t0 = mcu_counter_read();
    const caps_nn_status st = caps_self_attention_s8(&ctx, &dims, &p, u, w, bias, v);
    const uint64_t t1 = mcu_counter_read();
    check_call(case_index, "self_attention", st, t1 - t0, v, md);
}

int main(void)
{
    mcu_counter_start();
    g_pos = caps_vectors;
    g_end = caps_vectors + sizeof(caps_vectors) - 1; /* string literal: drop the NUL */
    g_expected = (const int8_t *)caps_expected;
    int32_t cases;
    check_record(caps_vec_read_header(rd32, &cases));
    /* Overhead of one counter read pair, for the host to subtract. */
    const uint64_t a = mcu_counter_read();
    const uint64_t b = mcu_counter_read();
    printf("START cases=%ld unit=%s overhead=%llu\n", (long)cases, MCU_COUNTER_UNIT,
           (unsigned long long)(b - a));
    for (int32_t c = 0; c < cases; ++c) {
        g_arena_used = 0;
        const int32_t op = rd32();
        if (op == CAPS_VEC_OP_SQUASH || op == CAPS_VEC_OP_LENGTH) {
            run_squash_or_length(c, op);
        } else if (op == CAPS_VEC_OP_CLASS_CAPS) {
            run_class_caps(c);
        } else if (op == CAPS_VEC_OP_EFFICIENT_SQUASH) {
            run_efficient_squash(c);
        } else if (op == CAPS_VEC_OP_SELF_ATTENTION) {
            run_self_attention(c);
        } else {
            mcu_fail("kernel_vectors_main: unknown op code in vector blob\n");
        }
    }
    if ((const uint8_t *)g_expected != (const uint8_t *)caps_expected + sizeof(caps_expected) - 1) {
        mcu_fail("kernel_vectors_main: expected outputs not fully consumed\n");
    }
    printf("SUMMARY calls=%ld failed=%ld\n", (long)g_calls, (long)g_failed);
    return g_failed == 0 ? 0 : 1;
}
