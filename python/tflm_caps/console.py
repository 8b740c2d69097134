"""What the library prints: progress bars and the logs of TensorFlow's native code.

Quiet by default.  TensorFlow's converter and quantizer write absl and
converter lines ("fully_quantize: 0, inference_type: 6 ...") straight to
file descriptor 2, and its Python logger warns about retracing when Keras
models are rebuilt; ``quiet_native()`` hides both around those calls and
replays them if the call fails.  ``set_verbose(True)`` (the CLI's
``--verbose``) or ``TFLM_CAPS_VERBOSE=1`` shows everything.

``progress(...)`` is tqdm on stderr; when stderr is not a terminal (a CI
log, a file) it redraws at most every ``NON_TTY_INTERVAL`` seconds and
leaves its final line, so a log gets a few lines instead of one per update.
"""
import contextlib
import logging
import os
import sys
import tempfile

# Seconds between two progress lines when stderr is not a terminal.
NON_TTY_INTERVAL = 60.0

_state = {"verbose": False}


def set_verbose(flag):
    """Show (True) or hide (False, the default) TensorFlow's native logs."""
    _state["verbose"] = bool(flag)


def verbose():
    return _state["verbose"] or os.environ.get("TFLM_CAPS_VERBOSE", "") not in ("", "0")


def _is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable=None, *, enabled=True, **kwargs):
    """A tqdm bar on stderr (``kwargs`` as tqdm's); few lines in a non-TTY log."""
    from tqdm import tqdm

    stream = kwargs.pop("file", None) or sys.stderr
    if not _is_tty(stream):
        kwargs.update(mininterval=NON_TTY_INTERVAL, leave=True, dynamic_ncols=False)
    return tqdm(iterable, file=stream, disable=not enabled, **kwargs)


def _writes_to_fd2(stream):
    try:
        return stream.fileno() == 2
    except (AttributeError, ValueError, OSError):
        return False


@contextlib.contextmanager
def quiet_native():
    """Hide what native code and TensorFlow's logger write to stderr inside
    the block (unless verbose); Python's own ``sys.stderr`` (progress bars,
    messages) still shows.  If the block raises, the hidden text is written
    out, so a failure keeps its context."""
    if verbose():
        yield
        return
    tf_logger = logging.getLogger("tensorflow")
    old_level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    hidden = tempfile.TemporaryFile()
    saved = os.dup(2)
    old_stderr = sys.stderr
    if _writes_to_fd2(old_stderr):
        # Keep Python-level writes (tqdm, prints) visible through a copy of fd 2.
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(hidden.fileno(), 2)
    failed = True
    try:
        yield
        failed = False
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if sys.stderr is not old_stderr:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = old_stderr
        tf_logger.setLevel(old_level)
        if failed:
            hidden.seek(0)
            text = hidden.read().decode("utf-8", errors="replace")
            if text.strip():
                sys.stderr.write(text)
        hidden.close()
