/*
 * Team fork/barrier of the RISC-V backend (see caps_nn_backend_riscv.h).
 *
 * CAPS_NN_PULP: the PULP runtime runs the phase on every cluster core
 * (pi_cl_team_fork returns when all cores are done; the explicit barrier
 * keeps the contract even where fork does not join).  Otherwise the core
 * ids run one after the other on this hart, optionally timed with minstret
 * per core so the busiest core of each phase is known.
 */
#include <stddef.h>

#include "tflm_caps/caps_nn_backend_riscv.h"

static caps_nn_riscv_profile g_profile = {CAPS_NN_NUM_CORES, 0, {0}, 0, 0};

void caps_nn_riscv_profile_reset(void)
{
    for (int32_t c = 0; c < CAPS_NN_MAX_CORES; ++c) {
        g_profile.core_instructions[c] = 0;
    }
    g_profile.num_cores = CAPS_NN_NUM_CORES;
    g_profile.phases = 0;
    g_profile.parallel_critical = 0;
    g_profile.parallel_total = 0;
}

const caps_nn_riscv_profile *caps_nn_riscv_profile_get(void) { return &g_profile; }

#if defined(CAPS_NN_PULP)
#include "pmsis.h" /* PULP SDK: pi_core_id, pi_cl_team_fork, pi_cl_team_barrier */

typedef struct {
    caps_nn_phase_fn fn;
    void *args;
} caps_rv_team_job;

static void caps_rv_team_entry(void *arg)
{
    const caps_rv_team_job *job = (const caps_rv_team_job *)arg;
    job->fn(job->args, (int32_t)pi_core_id(), CAPS_NN_NUM_CORES);
    pi_cl_team_barrier();
}

void caps_nn_parallel(caps_nn_phase_fn fn, void *args)
{
    caps_rv_team_job job = {fn, args};
    pi_cl_team_fork(CAPS_NN_NUM_CORES, caps_rv_team_entry, &job);
}

#else /* sequential emulation of the team */

#if defined(CAPS_NN_RISCV_PROFILE) && defined(__riscv)
static inline uint64_t caps_rv_instret(void)
{
    uint32_t hi, lo, hi2;
    do {
        __asm__ volatile("csrr %0, minstreth" : "=r"(hi));
        __asm__ volatile("csrr %0, minstret" : "=r"(lo));
        __asm__ volatile("csrr %0, minstreth" : "=r"(hi2));
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}
#define CAPS_RV_PROFILING 1
#else
#define CAPS_RV_PROFILING 0
#endif

void caps_nn_parallel(caps_nn_phase_fn fn, void *args)
{
#if CAPS_RV_PROFILING
    uint64_t busiest = 0;
    for (int32_t core = 0; core < CAPS_NN_NUM_CORES; ++core) {
        const uint64_t t0 = caps_rv_instret();
        fn(args, core, CAPS_NN_NUM_CORES);
        const uint64_t spent = caps_rv_instret() - t0;
        g_profile.core_instructions[core] += spent;
        g_profile.parallel_total += spent;
        busiest = spent > busiest ? spent : busiest;
    }
    g_profile.parallel_critical += busiest;
    g_profile.phases += 1;
#else
    for (int32_t core = 0; core < CAPS_NN_NUM_CORES; ++core) {
        fn(args, core, CAPS_NN_NUM_CORES);
    }
#endif
}

#endif /* CAPS_NN_PULP */
