"""Per-function (and per-line) instruction profile of a bare-metal image.

QEMU logs every translated block (``-d in_asm``) and every block execution
(``-d exec,nochain``); weighting each block's instructions by its
executions gives exact retired-instruction counts per address, which are
folded into functions with the ELF symbol table (``nm``) and optionally
into source lines (``addr2line``).  Slow (the log is large): for small
shapes while tuning kernels, not for the benchmark itself.

    python -m tflm_caps.baremetal.profile --target cortex-m7 image.elf [--lines 20]
"""
import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile

from tflm_caps.baremetal.qemu import qemu_command
from tflm_caps.baremetal.targets import TARGETS, get_target

_INSN = re.compile(r"^0x([0-9a-f]+):")
_TRACE = re.compile(r"^Trace \d+: (0x[0-9a-f]+) \[[0-9a-f]+/([0-9a-f]+)/")


def instruction_counts(log_path):
    """{address: executions} from a QEMU in_asm+exec log."""
    blocks = {}          # host TB pointer -> instruction addresses
    pending = None       # addresses of the block just translated
    counts = collections.Counter()
    with open(log_path, errors="replace") as f:
        for line in f:
            if line.startswith("IN:"):
                pending = []
                continue
            m = _INSN.match(line)
            if m and pending is not None:
                pending.append(int(m.group(1), 16))
                continue
            m = _TRACE.match(line)
            if m:
                tb = m.group(1)
                if pending:
                    blocks[tb] = pending
                    pending = None
                for addr in blocks.get(tb, ()):
                    counts[addr] += 1
    return counts


def symbols(elf, nm="arm-none-eabi-nm"):
    out = subprocess.run([nm, "-n", "--defined-only", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].lower() in ("t", "w"):
            syms.append((int(parts[0], 16) & ~1, parts[2]))
    return syms


def fold(counts, syms):
    addrs = [a for a, _ in syms]
    per = collections.Counter()
    for addr, n in counts.items():
        k = bisect.bisect_right(addrs, addr) - 1
        per[syms[k][1] if k >= 0 else "?"] += n
    return per


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tflm_caps.baremetal.profile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("elf")
    p.add_argument("--target", default="cortex-m7", choices=sorted(TARGETS))
    p.add_argument("--top", type=int, default=25, help="functions to show")
    p.add_argument("--lines", type=int, default=0, help="also show the N hottest source lines")
    p.add_argument("--annotate", metavar="FUNCTION",
                   help="print FUNCTION's disassembly with per-instruction counts")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    target = get_target(args.target)
    prefix = target.tool_prefix
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "qemu.log")
        cmd = qemu_command(target, args.elf)
        cmd[1:1] = ["-d", "in_asm,exec,nochain", "-D", log]
        subprocess.run(cmd, stdin=subprocess.DEVNULL, timeout=args.timeout, check=False)
        counts = instruction_counts(log)
    total = sum(counts.values())
    per = fold(counts, symbols(args.elf, prefix + "nm"))
    print(f"{total} instructions")
    for name, n in per.most_common(args.top):
        print(f"{n:>12} {100.0 * n / total:6.2f}%  {name}")
    if args.lines:
        hot = counts.most_common(args.lines * 8)
        out = subprocess.run([prefix + "addr2line", "-e", args.elf] +
                             [hex(a) for a, _ in hot], capture_output=True, text=True).stdout
        per_line = collections.Counter()
        for (addr, n), loc in zip(hot, out.splitlines()):
            per_line[os.path.basename(loc)] += n
        print("hottest source lines:")
        for loc, n in per_line.most_common(args.lines):
            print(f"{n:>12} {100.0 * n / total:6.2f}%  {loc}")
    if args.annotate:
        annotate(args.elf, args.annotate, counts, prefix + "objdump")
    return 0


def annotate(elf, function, counts, objdump):
    """Disassembly of `function` with how often each instruction ran."""
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", f"--disassemble={function}",
                          str(elf)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s*(.*)$", line)
        if m:
            n = counts.get(int(m.group(1), 16), 0)
            print(f"{n:>10}  {m.group(1)}: {m.group(2)}")
        elif line.strip():
            print(line)


if __name__ == "__main__":
    sys.exit(main())
