/* Bare-metal test harness shared by the Cortex-M and RISC-V images:
 * an instruction counter and a fatal-error exit.  Output goes through
 * printf over semihosting (newlib rdimon on Arm, picolibc on RISC-V). */
#ifndef MCU_HARNESS_H
#define MCU_HARNESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Starts the free-running counter (call once, early in main). */
void mcu_counter_start(void);

/* Raw counter value.  RISC-V: retired instructions (minstret, exact under
 * QEMU -icount shift=0).  Cortex-M: SysTick ticks of the processor clock;
 * with -icount shift=0 QEMU retires one instruction per ns, so a tick is
 * 1e9 / clock instructions (40 on mps2 at 25 MHz).  The host driver converts
 * ticks to instructions; MCU_COUNTER_UNIT names the unit in the output. */
uint64_t mcu_counter_read(void);

#if defined(__riscv)
#define MCU_COUNTER_UNIT "instructions"
#else
#define MCU_COUNTER_UNIT "systick"
#endif

/* Prints the message and ends the run with a non-zero exit code. */
__attribute__((noreturn)) void mcu_fail(const char *message);

#ifdef __cplusplus
}
#endif

#endif /* MCU_HARNESS_H */
