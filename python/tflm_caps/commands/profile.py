"""``tflm-caps profile``: a model on an emulated Cortex-M core, built with the
user's TFLM tree (instructions per operator, arena, flash, bit-exactness)."""
import json
import os
import sys

from tflm_caps.commands import options


def add_parser(subparsers):
    from tflm_caps.profiling.cache import CACHE_ENV
    from tflm_caps.profiling.targets import TARGETS

    p = subparsers.add_parser(
        "profile", help="instructions per op, arena and flash on an emulated Cortex-M core",
        description="Build TFLM's library with CMSIS-NN and the tflm-caps operators from "
                    "your TFLM tree for the target (cached), link the model with a profiling "
                    "main, run it on the matching QEMU board with exact instruction counting "
                    "and report instructions per operator and per inference, the minimum "
                    "tensor arena found by bisection on the target, flash of the model and "
                    "the code, and whether the outputs are bit-exact with the host TFLM "
                    "runner.  Nothing is downloaded: a missing third-party folder of the "
                    "tree is reported with the TFLM script that fetches it.  Exits with "
                    "status 1 when an output differs from the host's.  See "
                    "docs/firmware.md.",
        parents=[options.shared(json="the profile", progress=True,
                                data="data source whose held-out split is used",
                                report="none; the bar chart goes next to it as REPORT.png",
                                report_siblings=False)])
    p.add_argument("model", metavar="MODEL.tflite", help="int8 model (tflm-caps convert)")
    p.add_argument("--tflm-root", required=True, metavar="DIR",
                   help="tflite-micro checkout with its third-party downloads in place")
    p.add_argument("--target", default="cortex-m7", choices=sorted(TARGETS),
                   help="core (QEMU board: M4 mps2-an386, M7 mps2-an500, M33 mps2-an505, "
                        "M55 mps3-an547); default cortex-m7")
    p.add_argument("--images", type=int, default=1000, metavar="N",
                   help="held-out images run on the target and compared with the host "
                        "runner (default 1000)")
    p.add_argument("--no-arena-search", action="store_true",
                   help="skip the bisection of the arena on the target")
    p.add_argument("--cache-dir", metavar="DIR",
                   help=f"TFLM library builds (default: ${CACHE_ENV}, else "
                        "$XDG_CACHE_HOME/tflm-caps or ~/.cache/tflm-caps)")
    p.add_argument("--make-var", action="append", default=[], metavar="NAME=VALUE",
                   help="extra variable for TFLM's make, e.g. CAPS_NN_USE_CMSIS_NN=1 "
                        "(part of the cache key; repeatable)")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="parallel compile jobs for the TFLM build (default: all cores)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="limit per emulator run (default: none)")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the generated sources, image and linker map here")
    p.add_argument("--source-root", metavar="DIR",
                   help="checkout whose tflm_caps_ops/ to build (default: the operator "
                        "sources installed with the package)")
    p.add_argument("--png", metavar="PATH", help="bar chart of instructions per operator")
    p.set_defaults(func=run)
    return p


def _check_output(path, what):
    from tflm_caps.commands.errors import CliError

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"{what}: directory does not exist: {directory}")
    if os.path.isdir(path):
        raise CliError(f"{what}: {path} is a directory")


def run(args):
    from tflm_caps.commands.errors import CliError
    from tflm_caps import profiling

    if not os.path.isfile(args.model):
        raise CliError(f"model file not found: {args.model}")
    if args.jobs is not None and args.jobs < 1:
        raise CliError(f"--jobs must be >= 1, got {args.jobs}")
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be positive, got {args.timeout}")
    for var in args.make_var:
        if "=" not in var or not var.split("=", 1)[0]:
            raise CliError(f"--make-var expects NAME=VALUE, got {var!r}")
    for path, what in ((args.report, "--report"), (args.png, "--png")):
        if path:
            _check_output(path, what)
    try:
        profiling.check_arguments(args.images, args.target)
    except ValueError as exc:
        raise CliError(f"--images: {exc}") from None

    # Quiet unless a person watches: bars and stage lines on a terminal only.
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    log = (lambda msg: print(f"[profile] {msg}", file=sys.stderr, flush=True)) \
        if progress else None
    try:
        result = profiling.profile(
            args.model, args.tflm_root, args.target, images=args.images, data=args.data,
            cache_dir=args.cache_dir, source_root=args.source_root, make_vars=args.make_var,
            jobs=args.jobs, timeout=args.timeout, arena_search=not args.no_arena_search,
            workdir=args.workdir, progress=progress, log=log)
    except (profiling.TreeError, profiling.BuildError, profiling.FirmwareError,
            profiling.EmulatorError, profiling.SourcesNotFoundError) as exc:
        raise CliError(str(exc)) from None

    from tflm_caps.profiling import report

    doc = result.to_json()
    written = []
    if args.report:
        with open(args.report, "w") as f:
            json.dump(doc, f, indent=2)
        written.append(args.report)
        png = os.path.splitext(args.report)[0] + ".png"
        written.append(str(report.plot(result, png)))
    if args.png:
        written.append(str(report.plot(result, args.png)))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(report.table(result))
        for path in written:
            print(f"wrote {path}")
    exact = result.bit_exact
    return 0 if exact["identical"] == exact["compared"] else 1
