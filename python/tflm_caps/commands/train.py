"""``tflm-caps train``: train a zoo CapsNet and save it as ``.keras``."""
import argparse
import json
import os
import sys

from tflm_caps.commands import options
from tflm_caps.commands.errors import CliError

HELP = "train a zoo CapsNet on bundled or user data and save it as .keras"

EPILOG = """\
saved model:
  By default --out holds the inference model (image -> capsule lengths).
  With --save training and --decoder it holds the training model
  ([image, one-hot label] -> [lengths, reconstruction]); tflm-caps convert
  and tflm_caps.models.inference_model() accept either.  Load it with
  keras.models.load_model(path) after `import tflm_caps.layers`.

defaults per model (epochs / batch size / learning rate / decay per epoch):
{recipes}

data sources (--data):
{sources}
"""


def _epilog():
    from tflm_caps import data, train
    recipes = "\n".join(
        f"  {name:<18} {r['epochs']} / {r['batch_size']} / {r['learning_rate']:g} / "
        f"{r['lr_decay']:g}{'  (decoder)' if r['decoder'] else ''}"
        for name, r in [*train.RECIPES.items(), ("other models", train.DEFAULT_RECIPE)])
    sources = "\n".join(f"  {spec:<23} {text}" for spec, text in data.sources().items())
    return EPILOG.format(recipes=recipes, sources=sources)


def add_parser(subparsers):
    from tflm_caps import models
    p = subparsers.add_parser(
        "train", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=_epilog(),
        parents=[options.shared(json="{model, epochs, train_accuracy, test_accuracy, "
                                     "seconds, params, out, ...}",
                                data="data source, listed below",
                                seed="the weights and the batch order", progress=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=models.names(), metavar="NAME",
                   help=f"zoo model: {', '.join(models.names())}")
    p.add_argument("--out", required=True, metavar="PATH.keras",
                   help="where to save the trained model (must end in .keras)")
    p.add_argument("--epochs", type=options.positive_int,
                   help="training epochs (default: per model)")
    p.add_argument("--batch-size", type=options.positive_int,
                   help="batch size (default: per model)")
    p.add_argument("--learning-rate", type=options.positive_float,
                   help="Adam learning rate (default: per model)")
    p.add_argument("--lr-decay", type=options.positive_float,
                   help="learning-rate factor per epoch, 1 = constant (default: per model)")
    p.add_argument("--decoder", action=argparse.BooleanOptionalAction, default=None,
                   help="train with the reconstruction decoder (default: per model, off)")
    p.add_argument("--save", choices=("inference", "training"), default="inference",
                   help="save the inference model (default) or the model as trained "
                        "(with the decoder when --decoder)")
    p.add_argument("--fit", choices=("auto", "pad", "resize"),
                   help="build the model at its zoo input shape and pad/resize the data to "
                        "it (default: build the model for the data's image shape)")
    p.add_argument("--train-eval-samples", type=options.non_negative_int, metavar="N",
                   help="measure the final train accuracy on N stratified training images "
                        "(default: all; 0 skips it)")
    p.set_defaults(func=run)
    return p


def _check_out(path):
    if not path.endswith(".keras"):
        raise CliError(f"--out {path!r}: the file name must end in .keras")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise CliError(f"--out {path!r}: {parent} is not a directory")
    options.check_output_dir(parent, "--out")
    os.makedirs(parent, exist_ok=True)
    options.check_output_file(path, "--out")


def _check_input_shape(args, dataset):
    """The model is built for the data's images (or its zoo shape with --fit):
    refuse images too small for its architecture before TensorFlow starts."""
    from tflm_caps import models

    shape = models.ZOO[args.model]["input_shape"] if args.fit else dataset.input_shape
    try:
        models.feature_shapes(args.model, input_shape=tuple(shape))
    except ValueError as exc:  # shape arithmetic only: the message says which layer
        raise CliError(f"{exc} (data {args.data!r})") from exc


def execute(args):
    """Train and save as ``args`` say; returns (trained model, TrainResult, report)."""
    from tflm_caps import data, train

    _check_out(args.out)
    dataset = data.load(args.data)
    if args.save == "training" and args.decoder is False:
        raise CliError("--save training keeps the decoder: use it with --decoder")
    _check_input_shape(args, dataset)
    model, result = train.train(
        args.model, dataset, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        decoder=args.decoder, learning_rate=args.learning_rate, lr_decay=args.lr_decay,
        fit=args.fit, progress=options.show_progress(args), verbose=True,
        train_eval_samples=args.train_eval_samples)
    saved = model if args.save == "training" else result.inference_model
    saved.save(args.out)
    report = {
        "model": result.model,
        "epochs": result.epochs,
        "train_accuracy": (None if result.train_accuracy != result.train_accuracy
                           else result.train_accuracy),  # NaN is not JSON
        "test_accuracy": result.test_accuracy,
        "seconds": result.seconds,
        "params": result.params,
        "out": args.out,
        "saved": "training" if saved is model and result.decoder else "inference",
        "data": result.data,
        "test_images": int(len(dataset.x_test)),
        "decoder": result.decoder,
        "batch_size": result.batch_size,
        "learning_rate": result.learning_rate,
        "lr_decay": result.lr_decay,
        "seed": result.seed,
    }
    return model, result, report


def run(args):
    _, result, report = execute(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"saved {report['saved']} model to {args.out}: held-out accuracy "
              f"{result.test_accuracy:.4f}, train {result.train_accuracy:.4f}, "
              f"{result.params} parameters, {result.seconds:.1f} s", file=sys.stderr)
    return 0
