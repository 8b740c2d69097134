/*
 * Checks the RISC-V backend's work split: for every item count n and core
 * count, caps_nn_core_range gives each item to exactly one core, and
 * caps_nn_parallel runs every core id exactly once per phase.
 * Prints "PARTITION PASS" / "PARTITION FAIL ..." and exits accordingly.
 */
#include <stdint.h>
#include <stdio.h>

#include "mcu_harness.h"
#include "tflm_caps/caps_nn_backend_riscv.h"

#define MAX_ITEMS 300

static uint8_t g_seen[MAX_ITEMS];
static uint32_t g_core_calls[CAPS_NN_MAX_CORES];

static void count_phase(void *args, int32_t core, int32_t cores)
{
    (void)args;
    if (core >= 0 && core < CAPS_NN_MAX_CORES && cores == CAPS_NN_NUM_CORES) {
        ++g_core_calls[core];
    }
}

int main(void)
{
    int32_t failures = 0;
    for (int32_t cores = 1; cores <= CAPS_NN_MAX_CORES; ++cores) {
        for (int32_t n = 0; n <= MAX_ITEMS; ++n) {
            for (int32_t k = 0; k < n; ++k) {
                g_seen[k] = 0;
            }
            int32_t prev_stop = 0;
            for (int32_t core = 0; core < cores; ++core) {
                int32_t start, stop;
                caps_nn_core_range(n, core, cores, &start, &stop);
                if (start < 0 || stop > n || start > stop || (start < stop && start != prev_stop)) {
                    ++failures;
                }
                for (int32_t k = start; k < stop; ++k) {
                    ++g_seen[k];
                }
                if (start < stop) {
                    prev_stop = stop;
                }
            }
            for (int32_t k = 0; k < n; ++k) {
                if (g_seen[k] != 1) {
                    if (failures < 5) {
                        printf("PARTITION FAIL n=%ld cores=%ld item=%ld seen=%u\n", (long)n,
                               (long)cores, (long)k, (unsigned)g_seen[k]);
                    }
                    ++failures;
                }
            }
        }
    }
    for (int32_t phase = 0; phase < 3; ++phase) {
        caps_nn_parallel(count_phase, NULL);
    }
    for (int32_t core = 0; core < CAPS_NN_MAX_CORES; ++core) {
        const uint32_t want = core < CAPS_NN_NUM_CORES ? 3u : 0u;
        if (g_core_calls[core] != want) {
            printf("PARTITION FAIL core=%ld ran %lu phases, want %lu\n", (long)core,
                   (unsigned long)g_core_calls[core], (unsigned long)want);
            ++failures;
        }
    }
    printf("PARTITION %s cores=%d\n", failures == 0 ? "PASS" : "FAIL", CAPS_NN_NUM_CORES);
    return failures == 0 ? 0 : 1;
}
