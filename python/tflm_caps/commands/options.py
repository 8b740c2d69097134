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
import tempfile

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


def shared(*, json, data=None, seed=None, progress=False, report=None, report_siblings=True):
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
                            help="write the JSON report here" +
                                 (", REPORT.md and REPORT.png next to it" if report_siblings
                                  else "") + f" (default: {report})")
    parser.add_argument("--json", action="store_true",
                        help=f"print {json} as one JSON document on stdout (nothing else "
                             "goes to stdout" + ("; no progress bars)" if progress else ")"))
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's log messages and the traceback of an error")
    return parser


def add_fit(parser):
    """``--fit``: how data images of another shape are adapted to the model's."""
    parser.add_argument("--fit", choices=("none", "auto", "pad", "resize"), default="none",
                        help="adapt data images to the model input shape (default: none, "
                             "a mismatch is an error)")


def show_progress(args):
    """Progress bars unless --no-progress or --json (machine-readable runs stay quiet)."""
    return not (getattr(args, "no_progress", False) or args.json)


def _check_writable_dir(path, what):
    """CliError unless files can be created in the existing directory ``path``."""
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CliError(f"{what}: cannot write in {path} ({exc.strerror or exc})") from None


def check_output_file(path, option):
    """Refuse an output file named by ``option`` that cannot be written, before
    the long work: missing folder, a directory in the way, no permission."""
    if path is None:
        return
    what = f"{option} {path}"
    if os.path.isdir(path):
        raise CliError(f"{what}: is a directory, expected a file name")
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise CliError(f"{what}: output directory does not exist: {out_dir}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CliError(f"{what}: the file exists and is not writable")
    _check_writable_dir(out_dir, what)


def check_output_dir(path, option):
    """Refuse an output directory (created later if missing) that is a file,
    lies below a file, or cannot be written."""
    what = f"{option} {path}"
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise CliError(f"{what}: {probe} is a file, expected a directory")
    _check_writable_dir(probe, what)


def check_report_path(path):
    """Refuse a --report path that cannot be written, before the long work."""
    check_output_file(path, "--report")
