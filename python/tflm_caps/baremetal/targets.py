"""The emulated cores: compiler flags, memory map, QEMU board and clock.

SysTick ticks (Arm) are turned into instructions with the board clock:
under ``-icount shift=0`` QEMU retires one instruction per nanosecond.
RISC-V counts retired instructions directly (minstret).
"""
import dataclasses
import shutil

# Instructions per second QEMU retires under -icount shift=0 (1 ns each).
ICOUNT_HZ = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    arch: str            # "arm" or "riscv"
    board: str           # QEMU machine
    cflags: tuple        # CPU / FPU / ABI selection
    code: tuple          # (origin, size) of the code memory
    ram: tuple           # (origin, size) of the data memory
    clock_hz: int        # SysTick processor clock (Arm); unused on RISC-V
    backend: str         # optimized backend for this core
    note: str = ""
    const: tuple = None  # (origin, size) of the constants, if not after the code

    @property
    def instructions_per_count(self):
        """Instructions per raw counter unit the image prints (the
        counter's resolution)."""
        if self.arch == "riscv":
            return 1.0
        return ICOUNT_HZ / self.clock_hz

    @property
    def tools(self):
        """(C compiler, QEMU system emulator)."""
        return ARM_TOOLS if self.arch == "arm" else RISCV_TOOLS

    @property
    def tool_prefix(self):
        """Prefix of the binutils (nm, objdump, addr2line) for this core."""
        return "arm-none-eabi-" if self.arch == "arm" else "riscv64-unknown-elf-"


_MB = 1 << 20
TARGETS = {
    "cortex-m4": Target(
        "cortex-m4", "arm", "mps2-an386",
        ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
        (0x00000000, 4 * _MB), (0x20000000, 4 * _MB), 25_000_000, "cortex_m",
        "MPS2 AN386, 25 MHz SysTick clock"),
    "cortex-m7": Target(
        "cortex-m7", "arm", "mps2-an500",
        ("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
        (0x00000000, 4 * _MB), (0x20000000, 4 * _MB), 25_000_000, "cortex_m",
        "MPS2 AN500, 25 MHz SysTick clock"),
    "cortex-m33": Target(
        "cortex-m33", "arm", "mps2-an505",
        ("-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
        (0x10000000, 4 * _MB), (0x38000000, 2 * _MB), 20_000_000, "cortex_m",
        "MPS2 AN505, secure aliases of SSRAM1/2, 20 MHz SysTick clock"),
    "cortex-m55": Target(
        "cortex-m55", "arm", "mps3-an547",
        ("-mcpu=cortex-m55", "-mfloat-abi=hard"),
        (0x00000000, 512 * 1024), (0x21000000, 4 * _MB), 32_000_000, "helium",
        "MPS3 AN547, code in ITCM, data in SRAM, constants in DDR, 32 MHz SysTick clock",
        (0x60000000, 16 * _MB)),
    "rv32imac": Target(
        "rv32imac", "riscv", "virt",
        ("-march=rv32imac", "-mabi=ilp32", "-misa-spec=2.2"),
        (0x80000000, 4 * _MB), (0x80400000, 4 * _MB), 0, "riscv",
        "QEMU virt, picolibc semihosting, minstret"),
}

ARM_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")
RISCV_TOOLS = ("riscv64-unknown-elf-gcc", "qemu-system-riscv32")


def get_target(target):
    """The Target named `target` (a Target is returned as is)."""
    if isinstance(target, Target):
        return target
    try:
        return TARGETS[target]
    except KeyError:
        raise ValueError(f"unknown MCU target {target!r}; expected one of "
                         f"{', '.join(TARGETS)}") from None


def missing_tools(target):
    """Names of the compiler/emulator for `target` not found on PATH."""
    return [t for t in get_target(target).tools if shutil.which(t) is None]


def counts_to_instructions(target, raw):
    """Raw counter value printed by the image -> instructions."""
    return int(round(raw * get_target(target).instructions_per_count))
