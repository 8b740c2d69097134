"""``tflm-caps bench [MODEL.tflite]``: instruction counts of the kernels on
emulated MCUs (``tflm_caps.baremetal.bench``), or of a converted model's own
capsule ops at their actual shapes plus the MACs of its builtin layers
(``tflm_caps.baremetal.bench_model``).  Needs the cross toolchains and QEMU
that scripts/install.sh installs."""
import json
import sys

from tflm_caps.commands import options


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="instruction counts of the kernels (or of a model's capsule ops) on "
                      "emulated Cortex-M7/M55 and RISC-V",
        description="Without MODEL: build the kernels bare-metal for Cortex-M7 (portable vs "
                    "Cortex-M backend), Cortex-M55 (scalar Cortex-M vs Helium backend) and "
                    "RV32IMAC (RISC-V backend, 1 and 8 cores), run them under "
                    "QEMU with exact instruction counting on the costa2022-mnist and "
                    "sabour2017-mnist class-capsule layers and a 1024x4D squash, check every "
                    "output against the numpy reference, and print a table and the "
                    "project's goals.  With MODEL (a converted int8 .tflite): run each of "
                    "its capsule ops at its actual shapes, quantization and weights "
                    "(random int8 inputs from --seed) on emulated Cortex-M7 (cortex_m "
                    "backend) and Cortex-M55 (helium), check every output bit for bit, and "
                    "report instructions per op, MACs of each builtin layer, model bytes "
                    "and the minimum tensor arena.",
        parents=[options.shared(json="the rows and goal checks (or the model report)",
                                progress=True, seed="the benchmark's data", report="none",
                                report_siblings=False)])
    p.add_argument("model", nargs="?", metavar="MODEL.tflite",
                   help="a converted model: benchmark its own capsule ops (default: the "
                        "kernels on the published layer shapes)")
    p.add_argument("--quick", action="store_true",
                   help="costa2022-mnist, squash, length only (without MODEL)")
    p.add_argument("--configs", nargs="+", default=None, metavar="NAME",
                   help="subset of the configurations, e.g. m7-cortex_m (default: all; with "
                        "MODEL: m7-cortex_m m55-helium; an unknown name lists them)")
    p.add_argument("--input-data", default=None, metavar="SOURCE",
                   help="with MODEL: run it in the TFLM host interpreter on the first test "
                        "image of this data source (e.g. bundled) and give each capsule op its "
                        "real input; the routing's count depends on the data (default: random "
                        "int8 inputs from --seed)")
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
    if args.model is not None:
        return run_model(args)
    if args.input_data is not None:
        raise CliError("--input-data applies to a MODEL")

    try:
        report = bench.run(args.configs, quick=args.quick, seed=args.seed,
                           timeout=args.timeout, progress=not args.no_progress)
    except McuError as exc:
        raise CliError(str(exc)) from None
    _write(report, args)
    if not args.json:
        bench.print_table(report)
        if args.report:
            print(f"\nwrote {args.report}")
    return 0


def _write(report, args):
    text = json.dumps(report, indent=2)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
    if args.json:
        print(text)


def _first_test_image(source, model_bytes, name):
    """The first model batch of the test split of ``source``."""
    from tflm_caps import data as caps_data
    from tflm_caps.tflite import check_model

    shape = check_model(model_bytes, name).input_tensors()[0].shape
    ds = caps_data.load(source)
    batch = int(shape[0]) if shape else 1
    return ds.x_test[:batch]


def run_model(args):
    from tflm_caps.baremetal import McuError, bench_model
    from tflm_caps.commands.errors import CliError

    if args.quick:
        raise CliError("--quick selects the kernel benchmark's layers; it does not apply "
                       "to a MODEL")
    try:
        image = None
        if args.input_data is not None:
            data = bench_model.read_model(args.model)
            image = _first_test_image(args.input_data, data, args.model)
        report = bench_model.run(args.model, configs=args.configs or bench_model.DEFAULT_CONFIGS,
                                 seed=args.seed, timeout=args.timeout,
                                 progress=options.show_progress(args), image=image)
    except (bench_model.BenchModelError, McuError) as exc:
        raise CliError(str(exc)) from None
    _write(report, args)
    if not args.json:
        bench_model.print_table(report)
        if args.report:
            print(f"\nwrote {args.report}")
    if not report["capsule_ops"]:
        print(f"tflm-caps bench: error: {args.model} has no capsule custom ops "
              f"({', '.join(bench_model.C.CUSTOM_OPS)}): nothing to emulate (builtin MACs "
              "reported)", file=sys.stderr)
        return 2
    return 0
