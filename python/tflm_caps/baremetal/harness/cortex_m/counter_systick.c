/* 64-bit counter from the 24-bit SysTick down-counter (processor clock)
 * plus a wrap count kept by its interrupt.  DWT->CYCCNT reads 0 in QEMU, so
 * SysTick under -icount is the only repeatable clock on these boards. */
#include <stdint.h>

#include "mcu_harness.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_RELOAD 0x00FFFFFFu

static volatile uint32_t systick_wraps;
static uint64_t counter_origin;

void SysTick_Handler(void) { ++systick_wraps; }

void mcu_counter_start(void) {
  SYST_CSR = 0;
  SYST_RVR = SYST_RELOAD;
  SYST_CVR = 0; /* any write clears the counter; it reloads on the next tick */
  systick_wraps = 0;
  SYST_CSR = 0x7u; /* ENABLE | TICKINT | CLKSOURCE = processor clock */
  /* The first tick only loads RVR into the cleared counter. */
  while (SYST_CVR == 0) {
  }
  counter_origin = 0;
  counter_origin = mcu_counter_read();
}

uint64_t mcu_counter_read(void) {
  uint32_t wraps, current;
  do { /* retry if the counter wrapped between the two reads */
    wraps = systick_wraps;
    current = SYST_CVR;
  } while (wraps != systick_wraps);
  return (uint64_t)wraps * (SYST_RELOAD + 1u) + (SYST_RELOAD - current) - counter_origin;
}
