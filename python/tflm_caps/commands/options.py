"""Options the sub-commands share, defined once.

``shared(...)`` builds the argparse parent parser of a sub-command: every
command gets ``--json`` (one JSON document on stdout, nothing else there)
and ``--verbose``; ``--data``, ``--seed``, ``--no-progress`` and
``--report`` (files) are added for the commands that use them.  The
``positive_int``... functions are argparse types: a value out of range is a
usage error naming the option.
"""
import argparse
import os

from tflm_caps.commands.errors import CliError


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def shared(*, json, data=None, seed=None, progress=False, report=None):
    """Parent parser: ``--json`` (printing ``json``), ``--verbose``, and when
    asked for ``--data`` (help: the source and what it is for), ``--seed``
    (help: what it seeds), ``--no-progress``, ``--report`` (help: its default)."""
    parser = argparse.ArgumentParser(add_help=False)
    if data is not None:
        parser.add_argument("--data", default="bundled", metavar="SOURCE",
                            help=f"{data} (default: bundled)")
    if seed is not None:
        parser.add_argument("--seed", type=non_negative_int, default=0,
                            help=f"random seed of {seed} (default: 0)")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if report is not None:
        parser.add_argument("--report", metavar="REPORT.json",
                            help="write the JSON report here, REPORT.md and REPORT.png next "
                                 f"to it (default: {report})")
    parser.add_argument("--json", action="store_true",
                        help=f"print {json} as one JSON document on stdout (nothing else "
                             "goes to stdout" + ("; no progress bars)" if progress else ")"))
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's log messages and the traceback of an error")
    return parser


def show_progress(args):
    """Progress bars unless --no-progress or --json (machine-readable runs stay quiet)."""
    return not (getattr(args, "no_progress", False) or args.json)


def check_report_path(path):
    """Refuse a --report path whose folder does not exist, before the long work."""
    if path is not None:
        out_dir = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(out_dir):
            raise CliError(f"output directory does not exist: {out_dir}")
