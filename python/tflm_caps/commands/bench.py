"""``tflm-caps bench``: instruction counts of the kernels on emulated MCUs
(``tflm_caps.baremetal.bench``).  Needs the cross toolchains and QEMU that
scripts/install.sh installs."""
import json

from tflm_caps.commands import options


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="instruction counts of the kernels on emulated Cortex-M7/M55 and RISC-V",
        description="Build the kernels bare-metal for Cortex-M7 (portable vs Cortex-M "
                    "backend), Cortex-M55 (scalar Cortex-M vs Helium backend) and RV32IMAC "
                    "(RISC-V backend, 1 and 8 cores), run them under "
                    "QEMU with exact instruction counting on the costa2022-mnist and "
                    "sabour2017-mnist class-capsule layers and a 1024x4D squash, check every "
                    "output against the numpy reference, and print a table and the "
                    "project's goals.",
        parents=[options.shared(json="the rows and goal checks", progress=True,
                                seed="the benchmark's data", report="none",
                                report_siblings=False)])
    p.add_argument("--quick", action="store_true", help="costa2022-mnist, squash, length only")
    p.add_argument("--configs", nargs="+", default=None, metavar="NAME",
                   help="subset of the configurations, e.g. m7-cortex_m (default: all; an "
                        "unknown name lists them)")
    p.add_argument("--timeout", type=float, default=600.0, help="per emulator run (s)")
    p.set_defaults(func=run)
    return p


def run(args):
    from tflm_caps.baremetal import McuError, bench
    from tflm_caps.commands.errors import CliError

    for name in args.configs or ():
        if name not in bench.CONFIG_NAMES:
            raise CliError(f"unknown configuration {name!r}; expected one of "
                           f"{', '.join(bench.CONFIG_NAMES)}")
    if args.timeout <= 0:
        raise CliError(f"--timeout must be positive, got {args.timeout:g}")
    options.check_report_path(args.report)

    try:
        report = bench.run(args.configs, quick=args.quick, seed=args.seed,
                           timeout=args.timeout, progress=not args.no_progress)
    except McuError as exc:
        raise CliError(str(exc)) from None
    text = json.dumps(report, indent=2)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
    if args.json:
        print(text)
        return 0
    bench.print_table(report)
    if args.report:
        print(f"\nwrote {args.report}")
    return 0
