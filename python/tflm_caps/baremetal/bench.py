"""Instruction counts of the capsule kernels on emulated microcontrollers
(``tflm-caps bench``).

Runs the kernels bare-metal under QEMU with deterministic instruction
counting (-icount shift=0) on the published CapsNet shapes and compares the
portable C build with the optimized backends:

- Cortex-M7 (mps2-an500, -O2 -mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard;
  SysTick ticks of 40 instructions): portable vs the cortex_m backend;
- Cortex-M55 (mps3-an547, -O2 -mcpu=cortex-m55 -mfloat-abi=hard; SysTick
  ticks of 31.25 instructions): the scalar cortex_m backend vs helium (MVE);
- RV32IMAC (QEMU virt, minstret, exact): the riscv backend on 1 core and on
  8 emulated cluster cores (busiest-core critical path from the per-core
  counters).

Layers: the class-capsule layers of costa2022-mnist and sabour2017-mnist
(dynamic routing), a 1024 x 4D squash and length, and Efficient-CapsNet's
(mazzia2021-mnist) self-attention capsule layer and 16 x 8D squash.

Every call is also checked bit for bit against the numpy reference, and the
SysTick rate of each Arm board is calibrated first against a loop of a known
instruction count (reported as instructions per tick).  Each
kernel gets exactly the scratch caps_*_get_buffer_size reports (what TFLM
firmware gets); the squash gets its gain table, filled outside the timed
call as TFLM Prepare does, and is also timed without one.
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tflm_caps.baremetal import McuError, cases, qemu
from tflm_caps.baremetal import vectors as vec
from tflm_caps.baremetal.build import KERNEL_VECTORS_MAIN, build, kernel_sources
from tflm_caps.baremetal.targets import counts_to_instructions, get_target, missing_tools

# Published int8 CapsNet kernels (Costa et al. 2022 on Cortex-M7), and the
# goals of this project for the same layers with stored predictions, per
# optimized configuration.
PUBLISHED = {"costa2022-mnist": 9.0e6, "sabour2017-mnist": 23.9e6, "squash 1024x4": 133e3}
GOALS = {"costa2022-mnist": 2.0e6, "sabour2017-mnist": 6.0e6, "squash 1024x4": 30e3}
GOALS_BY_CONFIG = {
    "m7-cortex_m": GOALS,
    "m55-helium": {"costa2022-mnist": 0.6e6, "sabour2017-mnist": 1.6e6, "squash 1024x4": 12e3},
}
# The configuration each optimized one is compared with (>= 2x fewer).
BASELINE = {"m7-cortex_m": "m7-portable", "m55-helium": "m55-cortex_m"}
RISCV_CORES = 8
INT4 = " int4"  # label suffix of the packed int4 weight rows

# name, target, backend, kernel defines
CONFIGS = [
    ("m7-portable", "cortex-m7", "portable", ()),
    ("m7-cortex_m", "cortex-m7", "cortex_m", ()),
    ("m55-cortex_m", "cortex-m55", "cortex_m", ()),
    ("m55-helium", "cortex-m55", "helium", ()),
    ("rv32-riscv-1core", "rv32imac", "riscv", ("CAPS_NN_NUM_CORES=1",)),
    ("rv32-riscv-8core", "rv32imac", "riscv",
     (f"CAPS_NN_NUM_CORES={RISCV_CORES}", "CAPS_NN_RISCV_PROFILE")),
]
CONFIG_NAMES = tuple(c[0] for c in CONFIGS)

NOTES = {"cortex-m7": "mps2-an500, -O2 -mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard, "
                      "SysTick under -icount shift=0 (40 instructions per tick)",
         "cortex-m55": "mps3-an547, -O2 -mcpu=cortex-m55 -mfloat-abi=hard, "
                       "SysTick under -icount shift=0 (31.25 instructions per tick)",
         "rv32imac": "QEMU virt, -O2 -march=rv32imac, minstret (exact); cluster cores "
                     "emulated one after the other"}


def make_cases(quick=False, seed=0):
    """[(label, case)] for the benchmark, fixed seed."""
    rng = np.random.default_rng(seed)
    labelled = []
    layers = ["costa2022-mnist"] if quick else ["costa2022-mnist", "sabour2017-mnist"]
    for name in layers:
        n_in, d_in, n_out, d_out = cases.SHAPES[name]
        u, W, p = cases.calibrated_class_caps(rng, n_in, d_in, n_out, d_out, routings=3)
        flags = vec.F_PREDICTIONS | vec.F_ROUTING | vec.F_STORE
        if name == "costa2022-mnist":
            flags |= vec.F_RECOMPUTE
        labelled.append((name, ("class_caps", u, W, p, flags)))
        # the same layer with packed int4 weights (the _s4 kernels)
        u, W, p = cases.calibrated_class_caps(rng, n_in, d_in, n_out, d_out, routings=3,
                                              weight_bits=4)
        labelled.append((name + INT4, ("class_caps", u, W, p, flags | vec.F_INT4)))
    labelled.append(("squash 1024x4", cases.squash_case(rng, 1024, 4, scale=0.05, zp=3)))
    labelled.append(("length 1024x4", cases.length_case(rng, 1024, 4, scale=1 / 128)))
    # Efficient-CapsNet (mazzia2021-mnist): the self-attention capsule layer
    # (votes included) and the squash of its 16 x 8D primary capsules.
    for name, (n_in, d_in, n_out, d_out) in cases.ATTENTION_SHAPES.items():
        u, W, bias, p = cases.calibrated_self_attention(rng, n_in, d_in, n_out, d_out)
        labelled.append((name, ("self_attention", u, W, bias, p)))
    for name, (n, d) in cases.EFFICIENT_SQUASH_SHAPES.items():
        labelled.append((f"{name.split('-')[0][:6]} squash {n}x{d}",
                         cases.efficient_squash_case(rng, n, d, scale=0.04, zp=0)))
    return labelled


def shape_text(case):
    if case[0] == "self_attention":
        n_in, n_out, d_out, d_in = case[2].shape
        return f"{n_in}x{d_in}D->{n_out}x{d_out}D self-attention"
    if case[0] == "class_caps":
        n_in, n_out, d_out, d_in = case[2].shape
        return f"{n_in}x{d_in}D->{n_out}x{d_out}D r{case[3].routing.routings}"
    x = np.asarray(case[1])
    return f"{x.shape[0]}x{x.shape[1]}D"


# A counted loop of exactly 2 instructions per iteration between two counter
# reads (the same program the harness tests use).
CALIBRATION_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include "mcu_harness.h"
int main(void)
{
    uint32_t n = CALIBRATION_LOOPS;
    mcu_counter_start();
    const uint64_t a = mcu_counter_read();
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    const uint64_t b = mcu_counter_read();
    printf("CALIBRATION counts=%llu\n", (unsigned long long)(b - a));
    return 0;
}
"""
CALIBRATION_LOOPS = 2_000_000


def calibrate(target, tmp, cache, timeout):
    """Instructions per raw counter unit, measured on `target` (Arm: a
    SysTick tick) with a loop of 2 * CALIBRATION_LOOPS instructions; raises
    McuError if it differs from the board clock the targets assume."""
    t = get_target(target)
    src = Path(tmp) / f"calibrate_{target}.c"
    src.write_text(CALIBRATION_MAIN)
    elf = Path(tmp) / f"calibrate_{target}.elf"
    build(target, [src], elf, defines=[f"CALIBRATION_LOOPS={CALIBRATION_LOOPS}"],
          cache_dir=cache)
    result = qemu.run(target, elf, timeout=timeout)
    records = result.records("CALIBRATION")
    if result.returncode != 0 or len(records) != 1:
        raise McuError(f"{target}: calibration run failed (exit {result.returncode}):\n"
                       f"{result.output[-3000:]}")
    per_count = 2 * CALIBRATION_LOOPS / records[0]["counts"]
    if abs(per_count - t.instructions_per_count) > 0.01 * t.instructions_per_count:
        raise McuError(f"{target}: the counter advances once per {per_count:.3f} instructions, "
                       f"not {t.instructions_per_count:g} as the target assumes")
    return round(per_count, 3)


def run_config(config, header_dir, calls, labels, cache, timeout):
    """Rows of one configuration; McuError if the run fails or any call is
    not bit-exact."""
    name, target, backend, kdefs = config
    with tempfile.TemporaryDirectory() as tmp:
        elf = Path(tmp) / f"{name}.elf"
        build(target, [KERNEL_VECTORS_MAIN, *kernel_sources(backend)], elf,
              include_dirs=[header_dir], defines=list(kdefs), opt="-O2", cache_dir=cache)
        result = qemu.run(target, elf, timeout=timeout)
    rows = result.records("CALL")
    if result.returncode != 0 or len(rows) != len(calls):
        raise McuError(f"{name}: run failed (exit {result.returncode}):\n"
                       f"{result.output[-3000:]}")
    start = result.records("START")[0]
    overhead = start.get("overhead", 0)
    profiles = {p["index"]: p for p in result.records("PROFILE")}
    out = []
    for row, call in zip(rows, calls):
        if row["mismatches"] != 0 or row["status"] != 0:
            raise McuError(f"{name}: {call['op']} of {labels[call['case']]} is not bit-exact "
                           f"({row})")
        instr = counts_to_instructions(target, max(row["count"] - overhead, 0))
        rec = {"config": name, "target": target, "backend": backend,
               "layer": labels[call["case"]], "kernel": call["op"],
               "shape": call["shape"], "macs": call["macs"], "instructions": instr,
               "instructions_per_mac": round(instr / call["macs"], 3) if call["macs"] else None,
               "resolution": get_target(target).instructions_per_count}
        prof = profiles.get(row["index"])
        if prof is not None:
            rec["cores"] = prof["cores"]
            rec["busiest_core"] = prof["critical"]
            rec["per_core"] = [prof[f"core{c}"] for c in range(prof["cores"])]
        out.append(rec)
    return out


def goal_checks(rows):
    """[{check, value, limit, ok}] of the goals the rows allow to check."""
    by = {(r["config"], r["layer"], r["kernel"]): r for r in rows}
    checks = []

    def check(desc, value, limit, ok):
        checks.append({"check": desc, "value": value, "limit": limit, "ok": bool(ok)})

    for cfg, goals in GOALS_BY_CONFIG.items():
        for layer, goal in goals.items():
            kernel = "squash" if layer.startswith("squash") else "class_caps_store"
            opt = by.get((cfg, layer, kernel))
            if opt is None:
                continue
            check(f"{cfg} {layer} {kernel} <= {goal / 1e6:g} M instructions",
                  opt["instructions"], goal, opt["instructions"] <= goal)
            base = by.get((BASELINE[cfg], layer, kernel))
            if base is not None:
                ratio = base["instructions"] / opt["instructions"]
                check(f"{cfg} {layer} {kernel}: >= 2x fewer than {BASELINE[cfg]}",
                      round(ratio, 2), 2.0, ratio >= 2.0)
    for layer in GOALS:
        kernels = (["squash"] if layer.startswith("squash")
                   else ["class_caps_store", "class_caps_recompute"])
        for kernel in kernels:
            one = by.get(("rv32-riscv-1core", layer, kernel))
            many = by.get(("rv32-riscv-8core", layer, kernel))
            if one is None or many is None:
                continue
            frac = many["busiest_core"] / one["instructions"]
            check(f"rv32-riscv-8core {layer} {kernel}: busiest core <= 1/6 of 1 core",
                  round(frac, 3), round(1 / 6, 3), frac <= 1 / 6)
    return checks


def int4_ratios(rows):
    """[{config, layer, kernel, int4, int8, ratio}]: instructions of each int4
    row (busiest core on the cluster) over those of its int8 row."""
    by = {(r["config"], r["layer"], r["kernel"]): r for r in rows}
    out = []
    for r in rows:
        if not r["layer"].endswith(INT4) or not r["kernel"].endswith("_s4"):
            continue
        layer, kernel = r["layer"][:-len(INT4)], r["kernel"][:-len("_s4")]
        base = by.get((r["config"], layer, kernel))
        if base is None:
            continue
        key = "busiest_core" if r.get("busiest_core") is not None else "instructions"
        out.append({"config": r["config"], "layer": layer, "kernel": kernel,
                    "int4": r[key], "int8": base[key], "ratio": round(r[key] / base[key], 3)})
    return out


def print_table(report, file=sys.stdout):
    rows = report["rows"]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    keys = list(dict.fromkeys((r["layer"], r["kernel"], r["shape"], r["macs"]) for r in rows))
    by = {(r["config"], r["layer"], r["kernel"]): r for r in rows}
    w = 16
    head = f"{'layer / kernel':<38}{'MACs':>10}" + "".join(f"{c:>{w + 8}}" for c in configs)
    print(head, file=file)
    print("-" * len(head), file=file)
    for layer, kernel, shape, macs in keys:
        line = f"{(layer + ' ' + kernel)[:37]:<38}{macs:>10}"
        for c in configs:
            r = by.get((c, layer, kernel))
            if r is None:
                line += " " * (w + 8)
                continue
            cell = f"{r['instructions']:,}"
            if r.get("busiest_core") is not None:
                cell = f"{r['busiest_core']:,}*"
            ipm = r["instructions_per_mac"]
            cell += f" ({ipm:.1f}/MAC)" if ipm is not None and ipm < 1000 else ""
            line += f"{cell:>{w + 8}}"
        print(line, file=file)
    if any(r.get("busiest_core") is not None for r in rows):
        print(f"* busiest core (critical path) of the {RISCV_CORES}-core cluster emulation",
              file=file)
    print("\nGoals:", file=file)
    for c in report["checks"]:
        print(f"  [{'ok' if c['ok'] else 'MISSED'}] {c['check']}: {c['value']:,} "
              f"(limit {c['limit']:,})", file=file)
    ratios = report.get("int4_ratios")
    if ratios:
        print("\nint4 / int8 class-capsule weights, instructions:", file=file)
        for r in ratios:
            print(f"  {r['config']:<18}{r['layer'] + ' ' + r['kernel']:<44}"
                  f"{r['int4']:>12,} / {r['int8']:>12,} = {r['ratio']:.3f}", file=file)
    print("\nPublished int8 CapsNet kernels on Cortex-M7 (Costa et al. 2022): "
          + ", ".join(f"{k} {v / 1e6:g} M" for k, v in PUBLISHED.items()), file=file)
    calibration = report.get("instructions_per_tick")
    if calibration:
        print("SysTick, measured against a counted loop (-icount shift=0): "
              + ", ".join(f"{k} {v:g} instructions per tick" for k, v in calibration.items())
              + "; counts are instructions, not cycles", file=file)


def run(configs=None, quick=False, seed=0, timeout=600.0, progress=True):
    """Build, run and check every configuration named in `configs` (default:
    all of CONFIG_NAMES); returns the report {rows, checks, published,
    int4_ratios, seconds, instructions_per_tick, notes}.  Raises ValueError for an unknown configuration and
    McuError when a toolchain is missing or a run fails."""
    unknown = [c for c in configs or () if c not in CONFIG_NAMES]
    if unknown:
        raise ValueError(f"unknown configuration {unknown[0]!r}; expected one of "
                         f"{', '.join(CONFIG_NAMES)}")
    selected = [c for c in CONFIGS if configs is None or c[0] in configs]
    missing = sorted({t for _, target, *_ in selected for t in missing_tools(target)})
    if missing:
        raise McuError(f"toolchains/emulators not installed: {', '.join(missing)} "
                       "(scripts/install.sh installs them)")
    from tflm_caps.console import progress as progress_bar

    labelled = make_cases(quick, seed)
    labels = [label for label, _ in labelled]
    bench_cases = [case for _, case in labelled]
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        header_dir = Path(tmp)
        calls = vec.write_header(header_dir / "caps_vectors.h", bench_cases)
        for call in calls:
            call["shape"] = shape_text(bench_cases[call["case"]])
        cache = header_dir / "objcache"
        calibration = {}
        with progress_bar(selected, desc="bench", unit="config", enabled=progress) as bar:
            for config in bar:
                bar.set_postfix_str(config[0])
                target = config[1]
                if target not in calibration and get_target(target).arch == "arm":
                    calibration[target] = calibrate(target, tmp, cache, timeout)
                rows += run_config(config, header_dir, calls, labels, cache, timeout)
    return {"rows": rows, "checks": goal_checks(rows), "int4_ratios": int4_ratios(rows),
            "published": PUBLISHED,
            "seconds": round(time.time() - t0, 1), "instructions_per_tick": calibration,
            "notes": NOTES}
