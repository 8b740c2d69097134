/* 64-bit retired-instruction counter on RV32 (minstret/minstreth), and the
 * fatal-error exit.  Exceptions are reported and turned into a non-zero
 * exit by picolibc's semihosting crt0 trap handler. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mcu_harness.h"

static uint64_t counter_origin;

static uint64_t read_minstret(void) {
  uint32_t hi, lo, hi2;
  do {
    __asm__ volatile("csrr %0, minstreth" : "=r"(hi));
    __asm__ volatile("csrr %0, minstret" : "=r"(lo));
    __asm__ volatile("csrr %0, minstreth" : "=r"(hi2));
  } while (hi != hi2);
  return ((uint64_t)hi << 32) | lo;
}

void mcu_counter_start(void) { counter_origin = read_minstret(); }

uint64_t mcu_counter_read(void) { return read_minstret() - counter_origin; }

void mcu_fail(const char *message) {
  fputs(message, stdout);
  fflush(stdout);
  exit(1);
}
