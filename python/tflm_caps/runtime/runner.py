"""Run a converted ``.tflite`` in the TFLM host interpreter (tflite_micro
wheel) with the tflm-caps custom operators registered.

    runner = TFLMRunner("model.tflite")          # arena sized automatically
    probs = runner.predict(x_test)               # float in, float out

The model is checked in Python first (``tflm_caps.tflite.check_model``), so
a malformed file is a ModelFormatError instead of a native crash.  Native
failures surface as TFLMError carrying the operators' own messages (the
wheel itself only says "TFLM failed to allocate tensors").
"""
import os
import struct
import tempfile
from contextlib import contextmanager

import numpy as np

from tflm_caps.ops_contract import CLASS_CAPS, SELF_ATTENTION_CAPS
from tflm_caps.runtime import _library
from tflm_caps.tflite.reader import ModelFormatError, check_model

# Below this many bytes the wheel crashes (it cannot even create its
# allocator, measured at ~500 bytes); such sizes are refused up front.
MIN_SAFE_ARENA = 1024
# Headroom of the automatic arena size over the graph's activations.
_AUTO_ARENA_OVERHEAD = 64 * 1024
# What the wheel's Python flatbuffer parser raises on bytes it cannot decode.
_WHEEL_PARSE_ERRORS = (struct.error, IndexError, KeyError, ValueError, TypeError,
                       OverflowError, UnicodeDecodeError)


class TFLMError(RuntimeError):
    """The TFLM interpreter failed (prepare or invoke); message included."""


class ArenaTooSmallError(ValueError):
    """The tensor arena cannot hold the model.  ``minimum``: the exact
    smallest arena of the host interpreter when it was measured, else None."""

    def __init__(self, message, arena_size=None, minimum=None):
        super().__init__(message)
        self.arena_size = arena_size
        self.minimum = minimum


class _NativeStderr:
    """Captures what native code writes to file descriptor 2 (TFLM's
    MicroPrintf goes there), reusing one temporary file."""

    def __init__(self):
        self._file = tempfile.TemporaryFile()

    @contextmanager
    def capture(self):
        fd = self._file.fileno()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        saved = os.dup(2)
        os.dup2(fd, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    def text(self):
        fd = self._file.fileno()
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 1 << 20).decode("utf-8", errors="replace")

    def close(self):
        self._file.close()


def read_model(model):
    """(bytes, name) from a path or bytes-like object."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "model"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        with open(path, "rb") as f:
            return f.read(), os.path.basename(path)
    raise TypeError(f"model must be a path or bytes, got {type(model).__name__}")


def class_caps_scratch_bytes(n_in, n_out, dim_out, dim_in, store_predictions=True):
    """Scratch bytes of one TFLMCaps_ClassCaps op (docs/quantization.md)."""
    a8 = lambda v: (v + 7) & ~7  # noqa: E731
    routing = a8(n_in * n_out) + 8 * n_out * dim_out + a8(n_out * dim_out) + 1024 + \
        a8(4 * n_out) + 8
    stored = a8(n_in * n_out * dim_out) if store_predictions else a8(n_out * dim_out)
    return routing + stored + a8(2 * dim_in)


def self_attention_scratch_bytes(n_in, n_out, dim_out, dim_in):
    """Scratch bytes of one TFLMCaps_SelfAttentionCaps op (docs/quantization.md)."""
    a8 = lambda v: (v + 7) & ~7  # noqa: E731
    md = n_out * dim_out
    return (8 + a8(n_in * md) + a8(2 * md) + 8 * md + 2 * a8(4 * n_out) + a8(2 * n_in * n_out)
            + a8(2 * md) + a8(2 * dim_in) + 8)


def default_arena_size(info, preserve_all_tensors=False):
    """A generous arena for ``info`` (ModelInfo): every non-constant tensor
    without reuse, the class-capsule scratch buffers, plus fixed headroom
    (doubled when all tensors are preserved)."""
    total = sum(t.nbytes for t in info.tensors if not t.is_constant)
    for op in info.ops_named(CLASS_CAPS):
        if len(op.inputs) == 2 and op.inputs[1] >= 0:
            w = info.tensors[op.inputs[1]].shape
            if len(w) == 4:
                total += class_caps_scratch_bytes(w[0], w[1], w[2], w[3])
    for op in info.ops_named(SELF_ATTENTION_CAPS):
        w = info.tensors[op.inputs[1]].shape if len(op.inputs) > 1 and op.inputs[1] >= 0 else ()
        if len(w) == 4:
            total += self_attention_scratch_bytes(w[0], w[1], w[2], w[3])
    size = int(total + _AUTO_ARENA_OVERHEAD + 1024 * len(info.tensors))
    return 2 * size if preserve_all_tensors else size


def _clean_native_text(text, ours):
    """TFLM's own stderr lines, minus the ones our operators reported."""
    seen = set(ours.splitlines())
    lines = [ln for ln in text.splitlines() if ln.strip() and ln not in seen]
    return "\n".join(lines)


class TFLMRunner:
    """A .tflite model in the TFLM host interpreter with our operators.

    model: path or bytes.  arena_size: tensor arena in bytes (None: sized
    automatically, see default_arena_size; use find_min_arena_size for the
    exact minimum).  preserve_all_tensors: keep every intermediate tensor
    readable after invoke (tensor()/intermediates()), at the cost of arena
    reuse.  registerers: extra registerer symbol names (already loaded
    globally) for custom ops other than ours.
    """

    def __init__(self, model, arena_size=None, *, preserve_all_tensors=False, registerers=()):
        data, self.name = read_model(model)
        self.model_bytes = data
        self.info = check_model(data, self.name)
        self.registerers = [_library.REGISTERER] + list(registerers)
        missing = sorted(set(self.info.custom_codes) - set(_library.PROVIDED_OPS))
        if missing and not registerers:
            raise ModelFormatError(
                f"{self.name}: uses custom op(s) {', '.join(missing)} that tflm-caps does not "
                f"provide (it provides {', '.join(_library.PROVIDED_OPS)})")
        self.preserve_all_tensors = bool(preserve_all_tensors)
        self._stderr = _NativeStderr()
        _library.load_library()
        if arena_size is None:
            size = default_arena_size(self.info, self.preserve_all_tensors)
            if self.preserve_all_tensors:
                # With all tensors preserved the wheel crashes on any arena
                # shortage: prove the size in a subprocess first.
                size = self._checked_size(size, auto=True)
                self._interp = self._create(size)
            else:
                try:
                    self._interp = self._create(size)
                except TFLMError:
                    # The estimate can miss exotic builtins' scratch: once more, much larger.
                    size *= 4
                    self._interp = self._create(size)
        else:
            size = self._checked_size(self._check_arena_arg(arena_size), auto=False)
            self._interp = self._create(size)
        self.arena_size = size

    # ------------------------------------------------------------------
    def _check_arena_arg(self, arena_size):
        if isinstance(arena_size, bool) or not isinstance(arena_size, (int, np.integer)):
            raise TypeError(f"arena_size must be an integer number of bytes, got {arena_size!r}")
        size = int(arena_size)
        if size < MIN_SAFE_ARENA:
            raise ArenaTooSmallError(
                f"{self.name}: arena_size={size} bytes is too small for any model (TFLM needs "
                f"at least {MIN_SAFE_ARENA} bytes for its own bookkeeping); use "
                "tflm_caps.runtime.find_min_arena_size() for the exact minimum", size)
        return size

    def _checked_size(self, size, auto):
        """Tries `size` (and a generous size) in a probe subprocess, so an
        arena shortage is an exception here instead of a crash.  Returns the
        size to use in-process."""
        from tflm_caps.runtime._probe import probe_sizes

        generous = max(4 * size, 2 * default_arena_size(self.info, self.preserve_all_tensors))
        ok = probe_sizes(self.model_bytes, [size], self.preserve_all_tensors,
                         self.registerers[1:])[0]
        if ok:
            return size
        generous_ok = probe_sizes(self.model_bytes, [generous], self.preserve_all_tensors,
                                  self.registerers[1:])[0]
        if generous_ok and auto:
            return generous
        if generous_ok:
            minimum = self._exact_minimum()
            if minimum is not None:
                raise ArenaTooSmallError(
                    f"{self.name}: arena_size={size} bytes is too small for this model: it "
                    f"needs at least {minimum} bytes in the host TFLM interpreter (exact "
                    "minimum, found by bisection)", size, minimum)
            raise ArenaTooSmallError(
                f"{self.name}: arena_size={size} bytes is too small for this model; it loads "
                f"with {generous} bytes, an upper bound (the exact minimum could not be "
                "measured: use tflm_caps.runtime.find_min_arena_size())", size)
        explain_load_failure(self.model_bytes, generous, self.registerers[1:], self.name)
        raise TFLMError(f"{self.name}: does not load in TFLM with all tensors preserved "
                        f"(arena {generous} bytes)")

    def _exact_minimum(self):
        """The host minimum arena (bisection in a worker), or None if the
        search itself fails."""
        from tflm_caps.runtime.arena import find_min_arena_size

        try:
            return find_min_arena_size(self.model_bytes,
                                       preserve_all_tensors=self.preserve_all_tensors,
                                       registerers=self.registerers[1:])
        except (TFLMError, RuntimeError, OSError):
            return None

    def _create(self, arena_size, preserve=None):
        from tflite_micro import runtime as tflm

        preserve = self.preserve_all_tensors if preserve is None else preserve
        config = (tflm.InterpreterConfig.kPreserveAllTensors if preserve
                  else tflm.InterpreterConfig.kAllocationRecording)
        _library.clear_error()
        try:
            with self._stderr.capture():
                return tflm.Interpreter.from_bytes(
                    self.model_bytes, custom_op_registerers=list(self.registerers),
                    arena_size=int(arena_size), intrepreter_config=config)
        except RuntimeError as exc:
            raise TFLMError(self._explain(f"cannot load {self.name} into TFLM", exc)) from None
        except _WHEEL_PARSE_ERRORS as exc:
            # The wheel unpacks the whole flatbuffer in Python before TFLM
            # sees it; parts the pre-check does not read can still break it.
            raise ModelFormatError(f"{self.name}: malformed .tflite: the TFLM wheel cannot "
                                   f"parse it ({type(exc).__name__}: {exc})") from None
        except MemoryError as exc:
            raise TFLMError(f"cannot load {self.name} into TFLM: the host could not allocate a "
                            f"{int(arena_size)}-byte arena ({exc})") from None

    def _explain(self, what, exc):
        ours = _library.last_error()
        native = _clean_native_text(self._stderr.text(), ours)
        parts = [f"{what}: {exc}"]
        if ours:
            parts.append(ours)
        if native:
            parts.append(native)
        return "\n".join(parts)

    # ------------------------------------------------------------------
    @property
    def input_details(self):
        return self.info.input_tensors()

    @property
    def output_details(self):
        return self.info.output_tensors()

    @property
    def batch_size(self):
        """The batch dimension baked into the model's (first) input."""
        shape = self.info.input_tensors()[0].shape
        return int(shape[0]) if shape else 1

    def _prepare_input(self, tensor, x, k):
        """Checks x [N, *tensor.shape[1:]] and converts it to the tensor's dtype."""
        x = np.asarray(x)
        want = tuple(tensor.shape[1:])
        if x.ndim != len(tensor.shape) or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"input {k} ({tensor.name!r}): expected shape [N, {', '.join(map(str, want))}] "
                f"(model input {list(tensor.shape)}), got {list(x.shape)}")
        batch = tensor.shape[0] if tensor.shape else 1
        if batch <= 0 or x.shape[0] % batch:
            raise ValueError(f"input {k} ({tensor.name!r}): {x.shape[0]} samples is not a "
                             f"multiple of the model's batch size {batch}")
        dtype = tensor.dtype
        if dtype is None:
            raise ValueError(f"input {k} ({tensor.name!r}) has unsupported type "
                             f"{tensor.type_name}")
        if x.dtype == dtype:
            return x
        if np.issubdtype(x.dtype, np.floating):
            if np.issubdtype(dtype, np.floating):
                return x.astype(dtype)
            bad = int(np.count_nonzero(np.isnan(x)))
            if bad:
                # Quantizing would turn NaN into the zero point: silent garbage.
                raise ValueError(f"input {k} ({tensor.name!r}): {bad} NaN value(s) (first at "
                                 f"index {np.argwhere(np.isnan(x))[0].tolist()}); the model "
                                 "quantizes its input and NaN has no int8 value")
            q = tensor.quantization
            if q is None or not np.issubdtype(dtype, np.integer):
                raise ValueError(f"input {k} ({tensor.name!r}) is {tensor.type_name} without "
                                 "per-tensor quantization; pass it already in that type")
            return quantize_like_tflite(x, q[0], q[1], dtype)
        raise ValueError(
            f"input {k} ({tensor.name!r}): wrong dtype {x.dtype}; the model expects "
            f"{tensor.type_name}" + ("" if np.issubdtype(dtype, np.floating)
                                     else " (or float values to quantize)"))

    def invoke(self, *inputs):
        """One interpreter call on exactly one model batch; raw outputs (list)."""
        for k, x in enumerate(inputs):
            self._interp.set_input(np.ascontiguousarray(x), k)
        _library.clear_error()
        try:
            with self._stderr.capture():
                self._interp.invoke()
        except RuntimeError as exc:
            raise TFLMError(self._explain(f"TFLM invoke of {self.name} failed", exc)) from None
        return [self._interp.get_output(k) for k in range(len(self.info.outputs))]

    def _batches(self, inputs):
        tensors = self.info.input_tensors()
        if len(inputs) != len(tensors):
            raise ValueError(f"{self.name} has {len(tensors)} input(s), got {len(inputs)}")
        arrays = [self._prepare_input(t, x, k) for k, (t, x) in enumerate(zip(tensors, inputs))]
        counts = {a.shape[0] // max(t.shape[0], 1) for a, t in zip(arrays, tensors)}
        if len(counts) != 1:
            raise ValueError("all inputs must hold the same number of batches")
        n_batches = counts.pop()
        return arrays, tensors, n_batches

    def predict(self, x, *, dequantize=True, progress=False):
        """Outputs for all samples of x (an array, or a list for several inputs).

        Float inputs of an int8 model are quantized with the input tensor's
        scale/zero point (as TFLite's QUANTIZE: float32 division, round half
        away from zero).  Quantized outputs are dequantized to float32 unless
        dequantize=False.  Returns an array (one output) or a list.
        """
        inputs = list(x) if isinstance(x, (list, tuple)) else [x]
        arrays, tensors, n_batches = self._batches(inputs)
        outs = [[] for _ in self.info.outputs]
        steps = range(n_batches)
        if progress:
            from tflm_caps.console import progress as progress_bar
            steps = progress_bar(steps, desc=f"TFLM {self.name}", unit="batch", leave=False)
        for b in steps:
            chunk = [a[b * t.shape[0]:(b + 1) * t.shape[0]] for a, t in zip(arrays, tensors)]
            for k, y in enumerate(self.invoke(*chunk)):
                outs[k].append(y)
        results = []
        for k, t in enumerate(self.info.output_tensors()):
            y = np.concatenate(outs[k], axis=0) if outs[k] else \
                np.zeros((0,) + tuple(t.shape[1:]), t.dtype)
            if dequantize and t.quantization is not None and np.issubdtype(y.dtype, np.integer):
                scale, zp = t.quantization
                y = ((y.astype(np.float32) - np.float32(zp)) * np.float32(scale))
            results.append(y)
        return results[0] if len(results) == 1 else results

    def tensor(self, index):
        """Contents of tensor `index` after the last invoke (needs
        preserve_all_tensors=True)."""
        if not self.preserve_all_tensors:
            raise ValueError("tensor() needs TFLMRunner(..., preserve_all_tensors=True)")
        if not 0 <= int(index) < len(self.info.tensors):
            raise ValueError(f"tensor index {index} out of range [0, {len(self.info.tensors)})")
        return np.array(self._interp.GetTensor(int(index), 0)["tensor_data"])

    def intermediates(self, x, tensor_indices, *, progress=False):
        """Raw contents of the given tensors for every sample of x:
        {index: array [N, ...]} (needs preserve_all_tensors=True)."""
        if not self.preserve_all_tensors:
            raise ValueError("intermediates() needs TFLMRunner(..., preserve_all_tensors=True)")
        inputs = list(x) if isinstance(x, (list, tuple)) else [x]
        arrays, tensors, n_batches = self._batches(inputs)
        got = {int(i): [] for i in tensor_indices}
        steps = range(n_batches)
        if progress:
            from tflm_caps.console import progress as progress_bar
            steps = progress_bar(steps, desc=f"TFLM {self.name}", unit="batch", leave=False)
        for b in steps:
            self.invoke(*[a[b * t.shape[0]:(b + 1) * t.shape[0]] for a, t in zip(arrays, tensors)])
            for i in got:
                got[i].append(self.tensor(i))
        return {i: np.concatenate(v, axis=0) for i, v in got.items()}

    def close(self):
        self._interp = None
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def explain_load_failure(model_bytes, arena_size, registerers=(), name="model"):
    """Loads the model in-process with a large arena and without preserving
    tensors (a configuration that fails cleanly) to raise TFLMError with
    TFLM's and our operators' messages; returns if it loads."""
    runner = TFLMRunner.__new__(TFLMRunner)
    runner.name = name
    runner.model_bytes = model_bytes
    runner.registerers = [_library.REGISTERER] + list(registerers)
    runner.preserve_all_tensors = False
    runner._stderr = _NativeStderr()
    try:
        runner._create(max(int(arena_size), MIN_SAFE_ARENA), preserve=False)
    finally:
        runner._stderr.close()


def quantize_like_tflite(x, scale, zero_point, dtype=np.int8):
    """Float -> integer as TFLite's QUANTIZE: round(x / scale) in float32
    (half away from zero) + zero point, saturated to dtype."""
    q = (np.asarray(x, np.float32) / np.float32(scale)).astype(np.float64)
    q = np.sign(q) * np.floor(np.abs(q) + 0.5)  # exact in float64 for float32 q
    info = np.iinfo(dtype)
    return np.clip(q + zero_point, info.min, info.max).astype(dtype)
