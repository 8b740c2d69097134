"""``tflm-caps convert``: Keras CapsNet (.keras) -> fully int8 .tflite."""
import json
import os

from tflm_caps import ops_contract as C
from tflm_caps.commands import options
from tflm_caps.commands.errors import CliError


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "convert", help="convert a Keras CapsNet to a fully int8 .tflite",
        parents=[options.shared(json="the conversion summary", progress=True,
                                data="data source of the calibration images (train split "
                                     "only; sources: `tflm-caps train --help`)")],
        description="Convert a Keras CapsNet (.keras) to a .tflite whose capsule layers are "
                    "int8 TFLite CUSTOM ops (" + ", ".join(C.CUSTOM_OPS) + ") and whose "
                    "builtins are int8 (or packed int4, --weight-bits), calibrated on "
                    "training images of the data source.")
    parser.add_argument("model", metavar="MODEL.keras", help="trained Keras model")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.tflite",
                        help="where to write the int8 model")
    parser.add_argument("--samples", type=options.positive_int, default=200, metavar="N",
                        help="calibration images (stratified from the train split; "
                             "default: 200)")
    options.add_fit(parser)
    parser.add_argument("--per-capsule", action="store_true",
                        help="one ClassCaps weight scale per output capsule (default: per "
                             "tensor)")
    parser.add_argument("--float-io", action="store_true",
                        help="float32 input/output (one QUANTIZE and one DEQUANTIZE); default "
                             "int8 input/output")
    parser.add_argument("--recompute-predictions", action="store_true",
                        help="ClassCaps recomputes the prediction vectors in every routing "
                             "iteration instead of storing them (less RAM, more MACs)")
    parser.add_argument("--batch-size", type=options.positive_int, default=1, metavar="B",
                        help="fixed batch dimension of the model (default: 1)")
    parser.add_argument("--float-output", metavar="FLOAT.tflite",
                        help="also write the float model of the same graph")
    parser.add_argument("--no-metadata", action="store_true",
                        help="do not embed TFLite metadata (name, labels, normalization)")
    parser.add_argument("--weight-bits", type=_weight_bits, default=8, metavar="8|4|auto|L=B,..",
                        help="weight width of the weighted layers (convolutions, dense, "
                             "ClassCaps W): 8 (default), 4 (packed int4 wherever possible), "
                             "auto (greedy per-layer search, needs --max-drop), or "
                             "LAYER=BITS pairs such as class_caps=4 (the rest int8)")
    parser.add_argument("--max-drop", type=_points, default=None, metavar="P",
                        help="--weight-bits auto: the most validation accuracy, in points, the "
                             "int4 layers may cost against the float model (e.g. 0.3)")
    parser.add_argument("--validation-samples", type=options.positive_int, default=1000,
                        metavar="N",
                        help="--weight-bits auto: validation images carved from the train "
                             "split (default: 1000; never the test split)")
    parser.set_defaults(func=run)
    return parser


def _weight_bits(text):
    """8, 4, 'auto' or {layer: bits} from 'name=bits,name=bits'."""
    import argparse

    text = text.strip()
    if text in ("8", "4"):
        return int(text)
    if text == "auto":
        return text
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"must be 8, 4, auto or LAYER=BITS[,LAYER=BITS...], "
                                         f"got {text!r}")
    out = {}
    for item in text.split(","):
        name, _, bits = item.partition("=")
        if not name.strip() or bits.strip() not in ("8", "4"):
            raise argparse.ArgumentTypeError(f"{item!r}: expected LAYER=8 or LAYER=4")
        out[name.strip()] = int(bits)
    return out


def _points(text):
    import argparse

    value = float(text)
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of points >= 0, got {text}")
    return value


def _calibration_data(args, model):
    """The data source, adapted to the model's input shape when --fit says so."""
    from tflm_caps import data as caps_data

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    return caps_data.fit_for_model(caps_data.load(args.data), shape, args.fit, args.data)


def run(args):
    if not os.path.exists(args.model):
        raise CliError(f"model file not found: {args.model}")
    options.check_output_file(args.output, "-o/--output")
    options.check_output_file(args.float_output, "--float-output")

    if args.weight_bits == "auto" and args.max_drop is None:
        raise CliError("--weight-bits auto needs --max-drop P (accuracy points, e.g. 0.3)")
    if args.max_drop is not None and args.weight_bits != "auto":
        raise CliError("--max-drop only applies to --weight-bits auto")

    from tflm_caps.converter import convert_detailed, load_keras_model

    model = load_keras_model(args.model)
    result = convert_detailed(
        model, _calibration_data(args, model), num_samples=args.samples,
        weight_granularity="per-capsule" if args.per_capsule else "per-tensor",
        io_dtype="float32" if args.float_io else "int8",
        store_predictions=not args.recompute_predictions, batch_size=args.batch_size,
        metadata=None if args.no_metadata else "auto", progress=options.show_progress(args),
        weight_bits=args.weight_bits, max_drop=args.max_drop,
        validation_samples=args.validation_samples)
    with open(args.output, "wb") as f:
        f.write(result.model)
    if args.float_output:
        with open(args.float_output, "wb") as f:
            f.write(result.float_model)
    summary = result.summary
    if args.json:
        body = summary.to_dict()
        body.update({"output": args.output, "float_output": args.float_output,
                     "data": args.data})
        print(json.dumps(body, indent=2))
    else:
        print(summary.format())
        print(f"wrote {args.output}" + (f" and {args.float_output}" if args.float_output else ""))
    return 0
