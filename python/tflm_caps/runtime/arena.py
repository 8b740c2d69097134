"""Exact minimum tensor-arena size of a model in the TFLM host interpreter.

The wheel's own figure (print_allocations) understates the need, and a too
small arena can crash the process, so the minimum is found by bisection
over real interpreter creations plus one inference, each probe run in a
worker subprocess (restarted whenever a probe crashes it).  The result is
the smallest arena in bytes with which the model loads and runs; one byte
less fails.
"""
from tflm_caps.runtime._probe import Prober, model_file
from tflm_caps.tflite.reader import check_model
from tflm_caps.runtime.runner import (TFLMError, default_arena_size, explain_load_failure,
                                      read_model)


def find_min_arena_size(model, *, preserve_all_tensors=False, registerers=(), timeout=120,
                        return_details=False):
    """Smallest tensor arena (bytes) with which ``model`` loads and runs in
    the TFLM host interpreter (path or bytes).

    preserve_all_tensors: search for TFLMRunner(..., preserve_all_tensors=True)
    (no tensor memory reuse).  return_details: also return a dict with the
    number of probes, crashed probes and the wheel's own reported figure.
    Raises ModelFormatError for malformed models and TFLMError when the
    model does not load at any arena size.
    """
    data, name = read_model(model)
    info = check_model(data, name)
    with model_file(data) as path:
        prober = Prober(path, preserve_all_tensors, list(registerers), timeout)
        try:
            hi = default_arena_size(info, preserve_all_tensors)
            if not prober(hi):
                hi *= 16
                if not prober(hi):
                    # Not an arena problem: load in-process (safe) for the messages.
                    explain_load_failure(data, hi, registerers, name)
                    raise TFLMError(f"{name}: does not run in TFLM with a {hi}-byte arena")
            lo = 0  # an empty arena always fails
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if prober(mid):
                    hi = mid
                else:
                    lo = mid
            details = {"arena_bytes": hi, "probes": prober.probes, "crashed_probes": prober.crashes}
            if return_details:
                prober(hi)
                details["wheel_reported_bytes"] = prober.recorded()
        finally:
            prober.close()
    return (hi, details) if return_details else hi
