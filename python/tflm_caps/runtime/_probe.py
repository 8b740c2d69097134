"""Arena probes in a worker subprocess (see _arena_worker.py).

A too small arena can crash the tflite_micro wheel (always below ~500
bytes; at any shortage when all tensors are preserved), so every arena
size whose success is not certain is tried here first, where a crash only
ends the worker.
"""
import os
import select
import subprocess
import sys
import tempfile
from contextlib import contextmanager


class TFLMProbeError(RuntimeError):
    """The probe worker did not answer."""


@contextmanager
def model_file(data):
    """Path of a temporary file holding the model bytes."""
    fd, path = tempfile.mkstemp(suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        os.unlink(path)


class Prober:
    """Runs probes in a worker process; a crash counts as failure."""

    def __init__(self, path, preserve, registerers, timeout):
        self.args = [sys.executable, "-m", "tflm_caps.runtime._arena_worker", path]
        if preserve:
            self.args.append("--preserve")
        self.args += [f"--registerer={r}" for r in registerers]
        self.timeout = timeout
        self.proc = None
        self.probes = 0
        self.crashes = 0

    def _start(self):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def _ask(self, line):
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self.close()
            raise TFLMProbeError(f"arena probe '{line}' did not answer within {self.timeout} s")
        reply = self.proc.stdout.readline().strip()
        return reply or None  # EOF: the worker died

    def __call__(self, size):
        self.probes += 1
        reply = self._ask(str(int(size)))
        if reply is None:
            self.crashes += 1
            self.proc.wait()
            self.proc = None
            return False
        return reply == "ok"

    def recorded(self):
        reply = self._ask("report")
        try:
            return int(reply.split()[1])
        except (AttributeError, IndexError, ValueError):
            return -1

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def probe_sizes(data, sizes, preserve=False, registerers=(), timeout=120):
    """[bool]: does the model load and run with each arena size? (one worker)"""
    with model_file(data) as path:
        prober = Prober(path, preserve, list(registerers), timeout)
        try:
            return [prober(s) for s in sizes]
        finally:
            prober.close()
