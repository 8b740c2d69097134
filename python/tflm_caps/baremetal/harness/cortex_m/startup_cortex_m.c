/* Minimal startup for bare-metal Cortex-M images run under QEMU's system
 * boards with semihosting.  newlib ships no vector table or reset code for
 * these boards, so this file provides them: enable the FPU before any
 * compiler-generated FP instruction can run, copy .data, clear .bss, open
 * the semihosting stdio handles, run constructors, call main and exit with
 * its result.  Every fault ends the run with a message and a non-zero exit
 * code so a broken test never hangs the emulator. */
#include <stdint.h>
#include <stdlib.h>

#include "mcu_harness.h"

extern uint32_t __data_load, __data_start, __data_end;
extern uint32_t __bss_start, __bss_end;
extern uint32_t __stack_top;
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);

extern int main(void);
extern void initialise_monitor_handles(void);

void Reset_Handler(void);
void Fault_Handler(void);
void SysTick_Handler(void);

/* -nostartfiles drops crti/crtn; newlib's init code still references
 * these. */
void _init(void) {}
void _fini(void) {}

#define CPACR (*(volatile uint32_t *)0xE000ED88u)

/* Semihosting: r0 = operation, r1 = argument. */
static inline int semihost_call(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define ADP_STOPPED_RUNTIME_ERROR 0x20023 /* any reason but ApplicationExit */

__attribute__((noreturn)) void mcu_fail(const char *message) {
  semihost_call(SYS_WRITE0, message);
  for (;;) semihost_call(SYS_EXIT, (const void *)ADP_STOPPED_RUNTIME_ERROR);
}

void Fault_Handler(void) { mcu_fail("\nMCU FAULT: processor exception\n"); }

__attribute__((noreturn)) void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  /* Full access to CP10/CP11 (FPU and MVE). */
  CPACR |= (0xFu << 20);
  __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
  uint32_t *src = &__data_load;
  for (uint32_t *dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t *dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
  initialise_monitor_handles();
  for (void (**fn)(void) = __init_array_start; fn < __init_array_end; ++fn) (*fn)();
  exit(main());
}

/* Cortex-M vector table: initial stack pointer, then handlers 1..15. */
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__stack_top),
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    Fault_Handler, /* SecureFault (v8-M) */
    0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    SysTick_Handler,
};
