"""``tflm-caps validate``: float Keras vs int8 TFLM on held-out data."""
import json
import os


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "validate", help="compare a Keras CapsNet with its int8 .tflite running in TFLM",
        description="Run the held-out split of the data through the float Keras model and "
                    "through the int8 .tflite in the TFLM host interpreter (with the "
                    "tflm-caps operators); report float/int8 accuracy, top-1 agreement, "
                    "per-capsule-layer SQNR and max error, model sizes and the exact "
                    "minimum tensor arena.  Writes REPORT.json plus REPORT.md and REPORT.png "
                    "next to it.")
    parser.add_argument("model", metavar="MODEL.keras", help="float Keras model")
    parser.add_argument("tflite", metavar="MODEL.tflite", help="int8 model (tflm-caps convert)")
    parser.add_argument("--data", default="bundled", metavar="SOURCE",
                        help="data source; its held-out split is used (default: bundled)")
    parser.add_argument("--samples", type=int, default=None, metavar="N",
                        help="use only the first N held-out images (default: all)")
    parser.add_argument("--float-tflite", metavar="FLOAT.tflite",
                        help="float model for the size comparison (default: converted from "
                             "MODEL.keras)")
    parser.add_argument("--no-arena", action="store_true",
                        help="skip the exact arena search (a few seconds)")
    parser.add_argument("--json", metavar="REPORT.json",
                        help="write the JSON report here (and REPORT.md, REPORT.png); '-' "
                             "prints the JSON to stdout instead of the summary")
    parser.add_argument("--min-agreement", type=float, default=None, metavar="FRACTION",
                        help="exit with status 1 when the top-1 agreement is below this "
                             "(e.g. 0.995)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from tflm_caps.cli import CliError

    for path in (args.model, args.tflite, args.float_tflite):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"file not found: {path}")
    if args.samples is not None and args.samples < 1:
        raise CliError(f"--samples must be >= 1, got {args.samples}")
    if args.min_agreement is not None and not 0.0 <= args.min_agreement <= 1.0:
        raise CliError(f"--min-agreement must be in [0, 1], got {args.min_agreement}")
    if args.json not in (None, "-"):
        out_dir = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(out_dir):
            raise CliError(f"output directory does not exist: {out_dir}")

    from tflm_caps.converter import ConversionError
    from tflm_caps.runtime import TFLMError
    from tflm_caps.validation import markdown, to_json, validate, write_report

    try:
        report = validate(args.model, args.tflite, args.data, samples=args.samples,
                          float_tflite=args.float_tflite,
                          arena_bytes=None if args.no_arena else "search",
                          progress=not args.no_progress and args.json != "-")
    except (TFLMError, ConversionError) as exc:
        raise CliError(str(exc)) from exc
    if args.json == "-":
        print(json.dumps(to_json(report), indent=2))
    else:
        print(markdown(report))
        if args.json:
            files = write_report(report, args.json)
            print(f"wrote {files['json']}, {files['markdown']}, {files['png']}")
    if args.min_agreement is not None and report["agreement"] < args.min_agreement:
        print(f"agreement {report['agreement']:.4f} is below --min-agreement "
              f"{args.min_agreement}")
        return 1
    return 0
