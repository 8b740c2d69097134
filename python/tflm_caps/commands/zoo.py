"""``tflm-caps zoo``: list the model zoo with parameter counts."""
import json

from tflm_caps.commands import options
from tflm_caps.commands.errors import CliError


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "zoo", help="list the CapsNet model zoo",
        parents=[options.shared(json="a list of {name, params, trainable_params, "
                                     "published_params, input_shape, num_classes, "
                                     "routing, ...}")],
        description="List the zoo's models: input shape, classes, inference parameter "
                    "count (computed from the layer shapes, without the reconstruction "
                    "decoder; BatchNorm moving statistics included), its trainable part, "
                    "the routing and the count published by the paper.")
    parser.add_argument("--model", action="append", metavar="NAME",
                        help="only this model (repeatable); default: all")
    parser.set_defaults(func=run)
    return parser


def _print_table(rows):
    header = (f"{'name':<22} {'input':<10} {'classes':>7} {'routing':<15} {'params':>11} "
              f"{'trainable':>11} {'published':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        shape = "x".join(str(d) for d in row["input_shape"])
        published = "-" if row["published_params"] is None else f"{row['published_params']:,}"
        print(f"{row['name']:<22} {shape:<10} {row['num_classes']:>7} {row['routing']:<15} "
              f"{row['params']:>11,} {row['trainable_params']:>11,} {published:>11}")


def run(args):
    from tflm_caps import models

    selected = args.model or models.names()
    unknown = [n for n in selected if n not in models.ZOO]
    if unknown:
        raise CliError(f"unknown model(s) {', '.join(unknown)}; available: "
                       f"{', '.join(models.names())}")
    rows = []
    for name in selected:
        row = models.describe(name)
        row["params"] = models.inference_param_count(name)
        row["trainable_params"] = models.trainable_param_count(name)
        if row["params"] is None:  # an entry without an arithmetic count: build it
            import keras

            model = models.build(name)
            row["params"] = models.count_inference_params(model)
            row["trainable_params"] = models.count_trainable_params(model)
            del model
            keras.backend.clear_session()
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0
