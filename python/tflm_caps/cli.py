"""Command line interface: ``tflm-caps <command> ...``.

Each sub-command lives in ``tflm_caps.commands.<name>`` and exposes
``add_parser(subparsers)`` which registers its arguments and sets
``func`` (called with the parsed namespace, returns an exit code).
Heavy imports (TensorFlow) happen inside ``func`` so ``--help`` is fast.
"""
import argparse
import importlib
import os
import sys

# TensorFlow's C++ info/warning lines would interleave with progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tflm_caps import __version__

# Order shown in --help.
COMMANDS = ("zoo", "train", "convert", "validate", "demo", "export", "bench", "profile")


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


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


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CliError, FileNotFoundError, ValueError) as exc:
        print(f"tflm-caps {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run through the package so CliError is the same class commands raise.
    from tflm_caps.cli import main as _main
    sys.exit(_main())
