"""Running the profiling image under QEMU and reading what it printed.

Every run uses ``-icount shift=0`` (one instruction per virtual ns), so the
SysTick counts the firmware prints are exact, repeatable instruction
counts once divided by the calibrated ticks (firmware.py lists the lines).
"""
import dataclasses
import os
import select
import subprocess
import time
from pathlib import Path


class EmulatorError(RuntimeError):
    """The image failed, hung or printed something unexpected."""


@dataclasses.dataclass
class RunOutput:
    calibration: tuple = None      # (instructions, ticks, instructions, ticks)
    overhead: tuple = None         # (events, ticks)
    alloc: tuple = None            # (ticks, arena used bytes)
    events: list = dataclasses.field(default_factory=list)        # (index, depth, tag)
    invocations: list = dataclasses.field(default_factory=list)   # (n, ticks, [event ticks])
    outputs: dict = dataclasses.field(default_factory=dict)       # n -> bytes
    arena: tuple = None            # (ok, bytes, used bytes or failing stage)
    done: bool = False
    failure: str = None
    log: list = dataclasses.field(default_factory=list)           # anything else (TFLM)

    @property
    def instructions_per_tick(self):
        """From the two calibration loops: the difference cancels the cost
        of reading the counter."""
        if self.calibration is None:
            raise EmulatorError("the image printed no calibration (CAL) line")
        n1, t1, n2, t2 = self.calibration
        if t2 <= t1:
            raise EmulatorError(f"calibration loops gave {t1} and {t2} ticks: the SysTick "
                                "counter is not running (is -icount shift=0 set?)")
        return (n2 - n1) / (t2 - t1)

    def check(self, what):
        if self.failure:
            raise EmulatorError(f"{what}: the firmware reported: {self.failure}"
                                + ("\n" + "\n".join(self.log[-20:]) if self.log else ""))
        if not self.done:
            raise EmulatorError(f"{what}: the firmware stopped before the end"
                                + ("\n" + "\n".join(self.log[-20:]) if self.log else ""))
        return self


def _ints(fields, what):
    try:
        return [int(f) for f in fields]
    except ValueError:
        raise EmulatorError(f"malformed {what} line: {' '.join(fields)}") from None


def parse_output(text):
    """RunOutput from the firmware's stdout (see firmware.py)."""
    out = RunOutput()
    for raw in text.splitlines():
        line = raw.strip()
        tag, _, rest = line.partition(" ")
        fields = rest.split()
        if tag == "CAL" and len(fields) == 4:
            out.calibration = tuple(_ints(fields, "CAL"))
        elif tag == "OVERHEAD" and len(fields) == 2:
            out.overhead = tuple(_ints(fields, "OVERHEAD"))
        elif tag == "ALLOC" and len(fields) == 2:
            out.alloc = tuple(_ints(fields, "ALLOC"))
        elif tag == "EVENT" and len(fields) == 3:
            k, depth = _ints(fields[:2], "EVENT")
            out.events.append((k, depth, fields[2]))
        elif tag == "P" and len(fields) >= 2:
            values = _ints(fields, "P")
            out.invocations.append((values[0], values[1], values[2:]))
        elif tag == "O" and len(fields) in (1, 2):
            n = _ints(fields[:1], "O")[0]
            try:
                out.outputs[n] = bytes.fromhex(fields[1] if len(fields) == 2 else "")
            except ValueError:
                raise EmulatorError(f"malformed output line: {line[:80]}") from None
        elif tag == "ARENA" and len(fields) == 3 and fields[0] in ("ok", "fail"):
            size = _ints(fields[1:2], "ARENA")[0]
            detail = int(fields[2]) if fields[0] == "ok" else fields[2]
            out.arena = (fields[0] == "ok", size, detail)
        elif tag == "DONE" and not fields:
            out.done = True
        elif tag == "FAIL":
            out.failure = rest
        elif line:
            out.log.append(line)
    n_events = len(out.events)
    for n, _, ticks in out.invocations:
        if len(ticks) != n_events:
            raise EmulatorError(f"invocation {n}: {len(ticks)} operator counts for "
                                f"{n_events} events")
    return out


def qemu_command(board, elf):
    """QEMU system emulation of `board` (harness board table entry) with
    semihosting and exact instruction counting."""
    return ["qemu-system-arm", "-M", board.board, "-nographic", "-monitor", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
            "-kernel", str(elf)]


def run_image(board, elf, workdir, *, timeout=None, progress_total=0, desc="QEMU"):
    """Runs `elf` with `workdir` as the semihosting directory (profile.cfg,
    inputs.bin); returns its stdout.  A progress bar counts output lines
    (``O ...``) when progress_total is set."""
    cmd = qemu_command(board, elf)
    proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    bar = None
    if progress_total:
        from tqdm import tqdm
        bar = tqdm(total=progress_total, desc=desc, unit="inference", leave=False)
    chunks, pending = [], b""
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([proc.stdout], [], [], wait)
            if not ready:
                proc.kill()
                proc.wait()
                raise EmulatorError(f"{Path(elf).name} on {board.board} did not finish within "
                                    f"{timeout:.0f} s ({' '.join(cmd)})")
            data = os.read(proc.stdout.fileno(), 1 << 16)
            if not data:
                break
            chunks.append(data)
            if bar is not None:
                pending += data
                lines = pending.split(b"\n")
                pending = lines[-1]
                bar.update(sum(1 for ln in lines[:-1] if ln.startswith(b"O ")))
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if bar is not None:
            bar.close()
    text = b"".join(chunks).decode(errors="replace")
    if proc.returncode != 0 and "FAIL " not in text:
        raise EmulatorError(f"{Path(elf).name} on {board.board} exited with status "
                            f"{proc.returncode}:\n{text[-3000:]}")
    return text


def minimum_arena(probe, start, capacity, step=16):
    """Smallest arena for which ``probe(bytes)`` is true, searched around
    `start` (the arena the firmware reported as used): widening steps to a
    failing and a passing size, then bisection to the byte.  Success is
    assumed monotonic in the size.  Returns (minimum, probes made);
    EmulatorError when even `capacity` fails."""
    probes = 0

    def ok(size):
        nonlocal probes
        probes += 1
        return probe(size)

    start = max(1, min(int(start), capacity))
    if ok(start):
        hi, width = start, step
        lo = max(0, start - width)
        while lo > 0 and ok(lo):
            hi, width = lo, width * 4
            lo = max(0, start - width)
    else:
        lo, width = start, step
        hi = min(capacity, start + width)
        while not ok(hi):
            if hi == capacity:
                raise EmulatorError(f"the model does not run with the whole {capacity}-byte "
                                    "arena buffer")
            lo, width = hi, width * 4
            hi = min(capacity, start + width)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, probes
