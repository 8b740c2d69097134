"""``tflm-caps prune``: remove capsule types (and channels), fine-tune, save."""
import argparse
import json
import math
import os
import sys

from tflm_caps.commands import options
from tflm_caps.commands.errors import CliError

HELP = "remove primary capsule types (and conv channels) from a trained CapsNet"

EPILOG = """\
what is removed:
  A capsule type is one group of capsule_dim output channels of the
  primary-capsule convolution together with its input capsules (one per grid
  position) and their rows of the class-capsule weights W.  --keep-channels
  also removes output channels of the convolutions before it (and the
  matching input channels of the next convolution).  The saved model is an
  ordinary, smaller Keras model: train it, convert it with tflm-caps convert.

data:
  Importance is scored and the model fine-tuned on the training split; a
  stratified --validation-fraction of it is held out for the per-step
  accuracy and --accuracy-floor.  The test split is measured for the summary
  only.

examples:
  tflm-caps prune model.keras --out half.keras --keep-fraction 0.5
  tflm-caps prune model.keras --out small.keras --keep-types 4 --steps 2 \\
      --keep-channels conv1=12 --accuracy-floor 0.96 --json
"""


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"a fraction to keep must be in (0, 1], got {text}")
    return value


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _accuracy(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"an accuracy in [0, 1], got {text}")
    return value


def _keep_value(text):
    """'12' -> 12 channels, '0.75' -> fraction."""
    return _count(text) if text.strip().isdigit() else _fraction(text)


def parse_keep_channels(text):
    """``N``, ``F`` or ``LAYER=N|F[,LAYER=N|F...]`` -> prune()'s keep_channels."""
    if "=" not in text:
        return _keep_value(text)
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected LAYER=COUNT or LAYER=FRACTION, got "
                                             f"{item!r}")
        out[name.strip()] = _keep_value(value)
    return out


def add_parser(subparsers):
    from tflm_caps.pruning import CHANNEL_CRITERIA, DEFAULTS, TYPE_CRITERIA

    p = subparsers.add_parser(
        "prune", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[options.shared(json="the summary", progress=True,
                                data="data source (train split for scoring and fine-tuning, "
                                     "held-out split for the report)",
                                seed="the validation split and fine-tuning")])
    p.add_argument("model", metavar="MODEL.keras", help="trained CapsNet (.keras)")
    p.add_argument("--out", required=True, metavar="PRUNED.keras",
                   help="where to save the pruned model (must end in .keras)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep-types", type=_count, metavar="N",
                      help="number of primary capsule types to keep")
    keep.add_argument("--keep-fraction", type=_fraction, metavar="F",
                      help=f"fraction of capsule types to keep, in (0, 1] (default: "
                           f"{DEFAULTS['keep_types']})")
    p.add_argument("--keep-channels", type=parse_keep_channels, metavar="SPEC",
                   help="channels to keep in the convolutions before the primary capsules: "
                        "N or F for all of them, or LAYER=N|F[,LAYER=N|F...] (default: keep all)")
    p.add_argument("--criterion", choices=TYPE_CRITERIA, default="routing",
                   help="capsule type importance (default: routing)")
    p.add_argument("--channel-criterion", choices=CHANNEL_CRITERIA, default="l1",
                   help="channel importance (default: l1)")
    p.add_argument("--steps", type=_count, default=DEFAULTS["steps"],
                   help=f"prune in this many steps, fine-tuning after each (default: "
                        f"{DEFAULTS['steps']})")
    p.add_argument("--finetune-epochs", type=int, default=DEFAULTS["finetune_epochs"],
                   metavar="E", help=f"fine-tuning epochs per step, 0 for none (default: "
                                     f"{DEFAULTS['finetune_epochs']})")
    p.add_argument("--batch-size", type=_count, default=DEFAULTS["batch_size"],
                   help=f"fine-tuning batch size (default: {DEFAULTS['batch_size']})")
    p.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"],
                   help=f"fine-tuning Adam learning rate (default: {DEFAULTS['learning_rate']:g})")
    p.add_argument("--lr-decay", type=float, default=DEFAULTS["lr_decay"],
                   help=f"learning-rate factor per epoch (default: {DEFAULTS['lr_decay']:g})")
    p.add_argument("--validation-fraction", type=float, default=DEFAULTS["validation_fraction"],
                   metavar="F", help="part of the training split held out for validation "
                                     f"(default: {DEFAULTS['validation_fraction']:g})")
    p.add_argument("--accuracy-floor", type=_accuracy, metavar="ACC",
                   help="stop pruning when the validation accuracy falls below ACC (0..1); "
                        "the last model that met it is saved")
    p.add_argument("--score-samples", type=_count, default=DEFAULTS["score_samples"],
                   metavar="N", help="training images used to score the capsule types "
                                     f"(default: {DEFAULTS['score_samples']})")
    p.set_defaults(func=run)
    return p


def _check_paths(args):
    if not os.path.isfile(args.model):
        raise CliError(f"model file not found: {args.model}")
    if not args.out.endswith(".keras"):
        raise CliError(f"--out {args.out!r}: the file name must end in .keras")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise CliError(f"--out {args.out!r}: directory {parent} does not exist")
    if os.path.abspath(args.out) == os.path.abspath(args.model):
        raise CliError("--out must differ from the input model")


def run(args):
    _check_paths(args)
    import tensorflow as tf

    from tflm_caps.pruning import DEFAULTS, prune

    # Evaluating a new model per step makes Keras warn about retracing: noise here.
    tf.get_logger().setLevel("ERROR")

    keep = args.keep_types if args.keep_types is not None else (
        args.keep_fraction if args.keep_fraction is not None else DEFAULTS["keep_types"])
    result = prune(args.model, args.data, keep_types=keep, keep_channels=args.keep_channels,
                   criterion=args.criterion, channel_criterion=args.channel_criterion,
                   steps=args.steps, finetune_epochs=args.finetune_epochs,
                   batch_size=args.batch_size, learning_rate=args.learning_rate,
                   lr_decay=args.lr_decay, validation_fraction=args.validation_fraction,
                   accuracy_floor=args.accuracy_floor, score_samples=args.score_samples,
                   seed=args.seed, progress=not args.no_progress)
    result.model.save(args.out)
    if args.json:
        print(json.dumps({"model": args.model, "out": args.out, **result.as_dict()}, indent=2))
    else:
        print(result.table())
        print(f"saved {args.out}", file=sys.stderr)
    return 0
