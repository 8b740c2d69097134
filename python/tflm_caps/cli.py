"""Command line interface: ``tflm-caps <command> ...``.

Each sub-command lives in ``tflm_caps.commands.<name>`` and exposes
``add_parser(subparsers)`` which registers its arguments (the shared ones
from ``tflm_caps.commands.options``) and sets ``func`` (called with the
parsed namespace, returns an exit code).  Heavy imports (TensorFlow) happen
inside ``func`` so ``--help`` is fast.  A user error (see
``tflm_caps.commands.errors``) prints one line and exits with status 2; any
other exception is a bug and shows its traceback.
"""
import argparse
import importlib
import os
import sys
import traceback

from tflm_caps import __version__
from tflm_caps.commands.errors import user_error_types

# Order shown in --help.
COMMANDS = ("zoo", "train", "convert", "validate", "demo", "export", "bench", "prune",
            "profile")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tflm-caps",
        description="Int8 Capsule Networks for TensorFlow Lite Micro.")
    parser.add_argument("--version", action="version", version=f"tflm-caps {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tflm_caps.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tflm_caps.commands.{name}":
                continue  # command not provided by this build
            raise
        module.add_parser(sub)
    return parser


def _set_log_level(verbose):
    # TensorFlow reads this when it is first imported, which the commands do
    # lazily; its C++ info/warning lines would interleave with progress bars.
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", False)
    _set_log_level(verbose)
    from tflm_caps import console
    console.set_verbose(verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not isinstance(exc, user_error_types()):
            raise
        if verbose:
            traceback.print_exc()
        print(f"tflm-caps {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
