/*
 * RISC-V backend (PULP-NN style): how kernels split work over the cores of
 * a cluster, and the instruction profile of the sequential emulation.
 *
 * Every kernel is a sequence of parallel phases.  A phase is a function
 * fn(args, core_id, num_cores) that handles its share of the work
 * (caps_nn_core_range: chunk = ceil(n / cores), start = min(chunk * id, n),
 * stop = min(start + chunk, n)); a team barrier ends every phase.
 *
 * Build options (preprocessor):
 *   CAPS_NN_NUM_CORES   cores of the cluster (default 1, GAP-8: 8).
 *   CAPS_NN_PULP        run phases on a PULP cluster: caps_nn_parallel forks
 *                       the team with the PULP runtime (pmsis: pi_cl_team_fork,
 *                       pi_core_id, pi_cl_team_barrier).  The kernels must then
 *                       be called from the cluster's master core.
 *   CAPS_NN_PULP_SDOTP  use the Xpulp 4-way int8 dot product builtin
 *                       (__builtin_pulp_sdotsp4) of a PULP GCC toolchain.
 *   (neither)           phases run one core id after the other on a single
 *                       hart: same integers, any RV32 core (and any host).
 *   CAPS_NN_RISCV_PROFILE  sequential emulation only: read minstret around
 *                       each core's share of each phase (see below).
 */
#ifndef TFLM_CAPS_CAPS_NN_BACKEND_RISCV_H
#define TFLM_CAPS_CAPS_NN_BACKEND_RISCV_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CAPS_NN_NUM_CORES
#define CAPS_NN_NUM_CORES 1
#endif

#define CAPS_NN_MAX_CORES 16
#if CAPS_NN_NUM_CORES < 1 || CAPS_NN_NUM_CORES > CAPS_NN_MAX_CORES
#error "CAPS_NN_NUM_CORES must be in 1..16"
#endif

/* One parallel phase: handles core `core_id`'s share of the work. */
typedef void (*caps_nn_phase_fn)(void *args, int32_t core_id, int32_t num_cores);

/* Runs `fn` on every core of the team and returns after the barrier. */
void caps_nn_parallel(caps_nn_phase_fn fn, void *args);

/* PULP-NN work split of n items: [*start, *stop) for core `core_id`. */
static inline void caps_nn_core_range(int32_t n, int32_t core_id, int32_t num_cores,
                                      int32_t *start, int32_t *stop)
{
    const int32_t chunk = (n + num_cores - 1) / num_cores;
    int32_t s = chunk * core_id;
    s = s < n ? s : n;
    const int32_t e = s + chunk;
    *start = s;
    *stop = e < n ? e : n;
}

/* Instruction profile of the sequential emulation since the last reset
 * (all zero unless built with CAPS_NN_RISCV_PROFILE).  core_instructions:
 * per core, the instructions of its shares of every phase;
 * parallel_critical: sum over phases of the busiest core's share (the
 * phases' length on a real cluster, barriers aside); parallel_total: all
 * instructions spent inside phases.  A kernel's time on the cluster is
 * about (its total - parallel_total) + parallel_critical. */
typedef struct {
    int32_t num_cores;
    uint32_t phases;
    uint64_t core_instructions[CAPS_NN_MAX_CORES];
    uint64_t parallel_critical;
    uint64_t parallel_total;
} caps_nn_riscv_profile;

void caps_nn_riscv_profile_reset(void);
const caps_nn_riscv_profile *caps_nn_riscv_profile_get(void);

#ifdef __cplusplus
}
#endif

#endif /* TFLM_CAPS_CAPS_NN_BACKEND_RISCV_H */
