"""Run bare-metal images under QEMU and read what they print.

Images print one record per line, ``TAG key=value key=value ...``, over
semihosting; the exit code of ``main`` becomes QEMU's exit code.
"""
import dataclasses
import re
import subprocess
import time

from tflm_caps.baremetal import McuError
from tflm_caps.baremetal.targets import get_target


@dataclasses.dataclass
class RunResult:
    target: str
    returncode: int
    output: str
    seconds: float

    def records(self, tag):
        return parse_records(self.output, tag)


def qemu_command(target, elf):
    """QEMU command line running `elf` with deterministic instruction counting."""
    target = get_target(target)
    cmd = [target.tools[1], "-M", target.board, "-nographic", "-monitor", "none",
           "-semihosting-config", "enable=on,target=native",
           "-icount", "shift=0", "-kernel", str(elf)]
    if target.arch == "riscv":
        cmd[3:3] = ["-bios", "none"]
    return cmd


def run(target, elf, timeout=120.0):
    """Run `elf` under QEMU with deterministic instruction counting.
    Returns a RunResult (stdout and stderr merged: picolibc writes to stderr)."""
    target = get_target(target)
    cmd = qemu_command(target, elf)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace")
        raise McuError(f"{target.name}: {elf} did not finish within {timeout:.0f} s "
                       f"under {' '.join(cmd)}; output so far:\n{out}") from None
    return RunResult(target.name, proc.returncode, proc.stdout.decode(errors="replace"),
                     time.monotonic() - start)


_RECORD = re.compile(r"^(?P<tag>[A-Z_]+)\s+(?P<body>.*)$")


def parse_records(output, tag):
    """Lines ``TAG key=value key=value ...`` -> list of dicts (ints where
    the value is an integer)."""
    rows = []
    for line in output.splitlines():
        m = _RECORD.match(line.strip())
        if not m or m.group("tag") != tag:
            continue
        row = {}
        for field in m.group("body").split():
            key, sep, value = field.partition("=")
            if not sep:
                continue
            row[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
        rows.append(row)
    return rows
