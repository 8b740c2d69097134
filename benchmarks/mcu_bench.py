#!/usr/bin/env python3
"""Instruction counts of the capsule kernels on emulated microcontrollers.

Runs the kernels bare-metal under QEMU with deterministic instruction
counting (-icount shift=0) on the published CapsNet shapes and compares the
portable C build with the optimized backends:

- Cortex-M7 (mps2-an500, -O2 -mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard;
  SysTick ticks of 40 instructions): portable vs the cortex_m backend;
- RV32IMAC (QEMU virt, minstret, exact): the riscv backend on 1 core and on
  8 emulated cluster cores (busiest-core critical path from the per-core
  counters).

Every call is also checked bit for bit against the numpy reference.  Each
kernel gets exactly the scratch caps_*_get_buffer_size reports (what TFLM
firmware gets); the squash gets its gain table, filled outside the timed
call as TFLM Prepare does, and is also timed without one.

    python3 benchmarks/mcu_bench.py [--json out.json] [--quick]
    tflm-caps bench ...            (same options)
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "firmware"))

import numpy as np  # noqa: E402

import mcu_build  # noqa: E402
import mcu_vectors  # noqa: E402

from tflm_caps.reference import vectors as vec  # noqa: E402

# Published int8 CapsNet kernels (Costa et al. 2022 on Cortex-M7), and the
# goals of this project for the same layers with stored predictions.
PUBLISHED = {"costa2022-mnist": 9.0e6, "sabour2017-mnist": 23.9e6, "squash 1024x4": 133e3}
GOALS = {"costa2022-mnist": 2.0e6, "sabour2017-mnist": 6.0e6, "squash 1024x4": 30e3}
RISCV_CORES = 8
INT4 = " int4"  # label suffix of the packed int4 weight rows

# name, target, backend, kernel defines
CONFIGS = [
    ("m7-portable", "cortex-m7", "portable", ()),
    ("m7-cortex_m", "cortex-m7", "cortex_m", ()),
    ("rv32-riscv-1core", "rv32imac", "riscv", ("CAPS_NN_NUM_CORES=1",)),
    ("rv32-riscv-8core", "rv32imac", "riscv",
     (f"CAPS_NN_NUM_CORES={RISCV_CORES}", "CAPS_NN_RISCV_PROFILE")),
]


def make_cases(quick=False, seed=0):
    """[(label, case)] for the benchmark, fixed seed."""
    rng = np.random.default_rng(seed)
    cases = []
    layers = ["costa2022-mnist"] if quick else ["costa2022-mnist", "sabour2017-mnist"]
    for name in layers:
        n_in, d_in, n_out, d_out = mcu_vectors.SHAPES[name]
        u, W, p = mcu_vectors.calibrated_class_caps(rng, n_in, d_in, n_out, d_out, routings=3)
        flags = vec.F_PREDICTIONS | vec.F_ROUTING | vec.F_STORE
        if name == "costa2022-mnist":
            flags |= vec.F_RECOMPUTE
        cases.append((name, ("class_caps", u, W, p, flags)))
        # the same layer with packed int4 weights (the _s4 kernels)
        u, W, p = mcu_vectors.calibrated_class_caps(rng, n_in, d_in, n_out, d_out, routings=3,
                                                    weight_bits=4)
        cases.append((name + INT4, ("class_caps", u, W, p, flags | vec.F_INT4)))
    cases.append(("squash 1024x4", mcu_vectors.squash_case(rng, 1024, 4, scale=0.05, zp=3)))
    cases.append(("length 1024x4", mcu_vectors.length_case(rng, 1024, 4, scale=1 / 128)))
    return cases


def shape_text(case):
    if case[0] == "class_caps":
        n_in, n_out, d_out, d_in = case[2].shape
        return f"{n_in}x{d_in}D->{n_out}x{d_out}D r{case[3].routing.routings}"
    x = np.asarray(case[1])
    return f"{x.shape[0]}x{x.shape[1]}D"


def run_config(config, header_dir, calls, labels, cache, timeout):
    name, target, backend, kdefs = config
    with tempfile.TemporaryDirectory() as tmp:
        elf = Path(tmp) / f"{name}.elf"
        mcu_build.build(target, [REPO / "firmware" / "kernel_vectors_main.c",
                                 *mcu_build.kernel_sources(backend)],
                        elf, include_dirs=[header_dir], defines=list(kdefs), opt="-O2",
                        cache_dir=cache)
        result = mcu_build.run(target, elf, timeout=timeout)
    rows = result.records("CALL")
    if result.returncode != 0 or len(rows) != len(calls):
        raise RuntimeError(f"{name}: run failed (exit {result.returncode}):\n"
                           f"{result.output[-3000:]}")
    start = result.records("START")[0]
    overhead = start.get("overhead", 0)
    profiles = {p["index"]: p for p in result.records("PROFILE")}
    out = []
    for row, call in zip(rows, calls):
        if row["mismatches"] != 0 or row["status"] != 0:
            raise RuntimeError(f"{name}: {call['op']} of {labels[call['case']]} is not bit-exact "
                               f"({row})")
        instr = mcu_build.counts_to_instructions(target, max(row["count"] - overhead, 0))
        rec = {"config": name, "target": target, "backend": backend,
               "layer": labels[call["case"]], "kernel": call["op"],
               "shape": call["shape"], "macs": call["macs"], "instructions": instr,
               "instructions_per_mac": round(instr / call["macs"], 3) if call["macs"] else None,
               "resolution": mcu_build.get_target(target).counter_resolution}
        prof = profiles.get(row["index"])
        if prof is not None:
            rec["cores"] = prof["cores"]
            rec["busiest_core"] = prof["critical"]
            rec["per_core"] = [prof[f"core{c}"] for c in range(prof["cores"])]
        out.append(rec)
    return out


def summarize(rows):
    """Goal checks: list of (description, value, limit, ok)."""
    def get(config, layer, kernel):
        for r in rows:
            if r["config"] == config and r["layer"] == layer and r["kernel"] == kernel:
                return r
        return None

    checks = []
    for layer, goal in GOALS.items():
        kernel = "squash" if layer.startswith("squash") else "class_caps_store"
        port = get("m7-portable", layer, kernel)
        for cfg in ("m7-cortex_m",):
            opt = get(cfg, layer, kernel)
            if opt is None:
                continue
            checks.append((f"{cfg} {layer} {kernel} <= {goal / 1e6:g} M instructions",
                           opt["instructions"], goal, opt["instructions"] <= goal))
            if port is not None:
                ratio = port["instructions"] / opt["instructions"]
                checks.append((f"{cfg} {layer} {kernel}: >= 2x fewer than portable",
                               round(ratio, 2), 2.0, ratio >= 2.0))
    for layer in GOALS:
        kernels = (["squash"] if layer.startswith("squash")
                   else ["class_caps_store", "class_caps_recompute"])
        for kernel in kernels:
            one = get("rv32-riscv-1core", layer, kernel)
            many = get("rv32-riscv-8core", layer, kernel)
            if one is None or many is None:
                continue
            frac = many["busiest_core"] / one["instructions"]
            checks.append((f"rv32-riscv-8core {layer} {kernel}: busiest core <= 1/6 of 1 core",
                           round(frac, 3), round(1 / 6, 3), frac <= 1 / 6))
    return checks


def int4_ratios(rows):
    """[(config, layer, kernel, int4 / int8 instructions)] of the int4 rows."""
    by = {(r["config"], r["layer"], r["kernel"]): r for r in rows}
    out = []
    for r in rows:
        if not r["layer"].endswith(INT4) or not r["kernel"].endswith("_s4"):
            continue
        base = by.get((r["config"], r["layer"][:-len(INT4)], r["kernel"][:-3]))
        if base is not None:
            key = "busiest_core" if r.get("busiest_core") is not None else "instructions"
            out.append((r["config"], r["layer"][:-len(INT4)], r["kernel"][:-3],
                        round(r[key] / base[key], 3)))
    return out


def print_table(rows, checks, file=sys.stdout):
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
    print("* busiest core (critical path) of the 8-core cluster emulation", file=file)
    print("\nGoals:", file=file)
    for desc, value, limit, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {desc}: {value:,} (limit {limit:,})", file=file)
    ratios = int4_ratios(rows)
    if ratios:
        print("\nint4 / int8 weights, instructions:", file=file)
        for config, layer, kernel, ratio in ratios:
            print(f"  {config:<18}{layer + ' ' + kernel:<44}{ratio:.3f}", file=file)
    print("\nPublished int8 CapsNet kernels on Cortex-M7 (Costa et al. 2022): "
          + ", ".join(f"{k} {v / 1e6:g} M" for k, v in PUBLISHED.items()), file=file)


def add_arguments(parser):
    parser.add_argument("--json", metavar="PATH", help="write the rows and checks as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="costa2022-mnist, squash and length only")
    parser.add_argument("--configs", nargs="*", default=None,
                        choices=[c[0] for c in CONFIGS], help="subset of configurations")
    parser.add_argument("--timeout", type=float, default=600.0, help="per emulator run (s)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args, progress=True):
    configs = [c for c in CONFIGS if args.configs is None or c[0] in args.configs]
    missing = sorted({t for _, tgt, *_ in configs for t in mcu_build.missing_tools(tgt)})
    if missing:
        raise RuntimeError(f"toolchains/emulators not installed: {', '.join(missing)} "
                           "(scripts/install.sh installs them)")
    labelled = make_cases(args.quick, args.seed)
    labels = [label for label, _ in labelled]
    cases = [case for _, case in labelled]
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        header_dir = Path(tmp)
        calls = mcu_vectors.write_header(header_dir / "caps_vectors.h", cases)
        for call in calls:
            call["shape"] = shape_text(cases[call["case"]])
        cache = header_dir / "objcache"
        it = configs
        bar = None
        if progress and tqdm is not None:
            bar = tqdm(configs, desc="mcu bench", unit="config", file=sys.stderr)
            it = bar
        for config in it:
            if bar is not None:
                bar.set_postfix_str(config[0])
            rows += run_config(config, header_dir, calls, labels, cache, args.timeout)
    checks = summarize(rows)
    report = {"rows": rows, "checks": [{"check": d, "value": v, "limit": lim, "ok": ok}
                                       for d, v, lim, ok in checks],
              "int4_ratios": [{"config": c, "layer": lay, "kernel": k, "ratio": r}
                              for c, lay, k, r in int4_ratios(rows)],
              "published": PUBLISHED, "seconds": round(time.time() - t0, 1),
              "notes": {"cortex-m7": "mps2-an500, -O2 -mcpu=cortex-m7 -mfpu=fpv5-d16 "
                                     "-mfloat-abi=hard, SysTick under -icount shift=0 "
                                     "(40 instructions per tick)",
                        "rv32imac": "QEMU virt, -O2 -march=rv32imac, minstret (exact); cluster "
                                    "cores emulated one after the other"}}
    return report


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(
        description="Instruction counts of the capsule kernels on emulated MCUs."))
    args = parser.parse_args(argv)
    report = run(args)
    print_table(report["rows"], [(c["check"], c["value"], c["limit"], c["ok"])
                                 for c in report["checks"]])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
