"""``tflm-caps validate``: float Keras vs int8 TFLM on held-out data."""
import json
import os
import sys

from tflm_caps.commands import options
from tflm_caps.commands.errors import CliError


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "validate", help="compare a Keras CapsNet with its int8 .tflite running in TFLM",
        parents=[options.shared(json="the report", progress=True, report="no files",
                                data="data source whose held-out split is used (sources: "
                                     "`tflm-caps train --help`)")],
        description="Run the held-out split of the data through the float Keras model and "
                    "through the int8 .tflite in the TFLM host interpreter (with the "
                    "tflm-caps operators); report float/int8 accuracy, top-1 agreement, "
                    "per-capsule-layer SQNR and max error, model sizes and the exact "
                    "minimum tensor arena.  Prints a summary (or the JSON report with "
                    "--json); --report writes REPORT.json plus REPORT.md and REPORT.png.")
    parser.add_argument("model", metavar="MODEL.keras", help="float Keras model")
    parser.add_argument("tflite", metavar="MODEL.tflite", help="int8 model (tflm-caps convert)")
    parser.add_argument("--samples", type=options.positive_int, default=None, metavar="N",
                        help="use only the first N held-out images (default: all)")
    options.add_fit(parser)
    parser.add_argument("--float-tflite", metavar="FLOAT.tflite",
                        help="float model for the size comparison (default: converted from "
                             "MODEL.keras)")
    parser.add_argument("--no-arena", action="store_true",
                        help="skip the exact arena search (a few seconds)")
    parser.add_argument("--min-agreement", type=options.fraction, default=None,
                        metavar="FRACTION",
                        help="exit with status 1 when the top-1 agreement is below this "
                             "(e.g. 0.995)")
    parser.set_defaults(func=run)
    return parser


def _check_same_input(model, tflite_path):
    """The .tflite must take the Keras model's images (TF-free file check)."""
    from tflm_caps.runtime import check_model

    with open(tflite_path, "rb") as f:
        info = check_model(f.read(), os.path.basename(tflite_path))
    want = tuple(int(d) for d in model.inputs[0].shape[1:])
    got = tuple(int(d) for d in info.input_tensors()[0].shape[1:])
    if got != want:
        raise CliError(f"{tflite_path} takes inputs of shape {list(got)}, {model.name!r} "
                       f"{list(want)}: not the same model")


def run(args):
    for path in (args.model, args.tflite, args.float_tflite):
        if path is not None and not os.path.isfile(path):
            raise CliError(f"file not found: {path}")
    options.check_report_path(args.report)

    from tflm_caps.converter import load_keras_model
    from tflm_caps.validation import markdown, to_json, validate, write_report

    model = load_keras_model(args.model)
    _check_same_input(model, args.tflite)
    report = validate(model, args.tflite, args.data, samples=args.samples,
                      float_tflite=args.float_tflite,
                      arena_bytes=None if args.no_arena else "search",
                      progress=options.show_progress(args), fit=args.fit)
    files = write_report(report, args.report) if args.report else None
    if args.json:
        print(json.dumps(to_json(report), indent=2))
    else:
        print(markdown(report))
        if files:
            print(f"wrote {files['json']}, {files['markdown']}, {files['png']}")
    if args.min_agreement is not None and report["agreement"] < args.min_agreement:
        print(f"agreement {report['agreement']:.4f} is below --min-agreement "
              f"{args.min_agreement}", file=sys.stderr)
        return 1
    return 0
