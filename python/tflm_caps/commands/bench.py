"""``tflm-caps bench``: instruction counts of the kernels on emulated MCUs.

The benchmark builds bare-metal images from the source tree
(benchmarks/mcu_bench.py, firmware/, tflm_caps_ops/): it needs a checkout
of the repository (the editable install finds it) and the cross toolchains
and QEMU that scripts/install.sh installs.
"""
import importlib.util
import json
import os
from pathlib import Path


def _default_root():
    """The checkout holding the benchmark: the editable install's repository
    (python/tflm_caps/commands/bench.py -> root), else the current directory."""
    candidates = [Path(__file__).resolve().parents[3], Path.cwd()]
    for root in candidates:
        if (root / "benchmarks" / "mcu_bench.py").is_file():
            return root
    return candidates[-1]


def _load_bench(root):
    path = Path(root) / "benchmarks" / "mcu_bench.py"
    if not path.is_file():
        from tflm_caps.cli import CliError
        raise CliError(f"benchmark sources not found at {path}: `tflm-caps bench` runs from a "
                       "source checkout (pass --source-root DIR)")
    spec = importlib.util.spec_from_file_location("tflm_caps_mcu_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="instruction counts of the kernels on emulated Cortex-M7 and RISC-V",
        description="Build the kernels bare-metal for Cortex-M7 (portable vs Cortex-M "
                    "backend) and RV32IMAC (RISC-V backend, 1 and 8 cores), run them under "
                    "QEMU with exact instruction counting on the costa2022-mnist and "
                    "sabour2017-mnist class-capsule layers and a 1024x4D squash, check every "
                    "output against the numpy reference, print a table and the project's "
                    "goals, optionally write JSON.")
    p.add_argument("--source-root", default=None,
                   help="repository checkout holding benchmarks/, firmware/ and tflm_caps_ops/")
    p.add_argument("--json", metavar="PATH",
                   help="write rows and goal checks as JSON to PATH ('-': stdout, no table)")
    p.add_argument("--quick", action="store_true", help="costa2022-mnist, squash, length only")
    p.add_argument("--configs", nargs="*", default=None, metavar="NAME",
                   help="subset of configurations (see benchmarks/mcu_bench.py)")
    p.add_argument("--timeout", type=float, default=600.0, help="per emulator run (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args):
    from tflm_caps.cli import CliError

    root = args.source_root or os.environ.get("TFLM_CAPS_SOURCE_ROOT") or _default_root()
    bench = _load_bench(root)
    known = [c[0] for c in bench.CONFIGS]
    for name in args.configs or ():
        if name not in known:
            raise CliError(f"unknown configuration {name!r}; expected {', '.join(known)}")
    try:
        report = bench.run(args, progress=not args.no_progress)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    if args.json == "-":
        print(json.dumps(report, indent=2))
        return 0
    bench.print_table(report["rows"], [(c["check"], c["value"], c["limit"], c["ok"])
                                       for c in report["checks"]],
                      calibration=report.get("instructions_per_tick"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0
