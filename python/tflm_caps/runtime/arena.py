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


# Arena bookkeeping whose size follows the pointer width, as (64-bit host,
# 32-bit MCU) bytes of TFLM's C structures (tensorflow/lite/core/c/common.h
# and micro_allocator.h, with TF_LITE_STATIC_MEMORY as TFLM's library is
# built; measured with g++ x86-64 and arm-none-eabi-g++ on TFLM 90b983c2).
# The host interpreter is 64-bit, so its minimum holds the larger sizes.
# Only structures TFLM allocates once per tensor, operator, subgraph or
# graph input/output are counted; allocator objects and kernels' op data
# are left in, so the estimate stays on the safe side of those.
POINTER_BOOKKEEPING = {
    "eval_tensors": (24, 12),        # TfLiteEvalTensor, every tensor
    "nodes": (64, 32),               # NodeAndRegistration, every operator
    "subgraphs": (16, 8),            # SubgraphAllocations, every subgraph
    "io_tensors": (64 + 24, 32 + 12),  # TfLiteTensor + TfLiteAffineQuantization
}
# Alignment padding each counted allocation may add on the target.
_ALIGN_SLACK = 8


def target_arena_estimate(model, host_minimum=None):
    """Arena a 32-bit MCU needs by the host's measure: the exact host
    minimum (find_min_arena_size, measured unless given) less the
    pointer-width bookkeeping of POINTER_BOOKKEEPING.

    Returns a dict with ``host_minimum``, ``bookkeeping_saving`` (bytes
    removed, with the counts behind it) and ``estimate``.  Kernels may
    differ between the host wheel (reference kernels) and a firmware
    (CMSIS-NN asks for its own scratch buffers), so the estimate is not the
    target's exact need: ``tflm-caps profile`` measures that on the core."""
    data, name = read_model(model)
    info = check_model(data, name)
    if host_minimum is None:
        host_minimum = find_min_arena_size(data)
    io = [info.tensors[i] for i in (*info.inputs, *info.outputs)]
    counts = {"eval_tensors": len(info.tensors), "nodes": len(info.operators),
              "subgraphs": info.num_subgraphs,
              "io_tensors": sum(1 for t in io if t.quantization is not None)}
    if info.num_subgraphs != 1:
        # Only the first subgraph's tensors and operators are described here.
        return {"host_minimum": int(host_minimum), "bookkeeping_saving": 0, "counts": counts,
                "estimate": int(host_minimum)}
    saving = sum((POINTER_BOOKKEEPING[k][0] - POINTER_BOOKKEEPING[k][1]) * n
                 for k, n in counts.items())
    allocations = 3 + 2 * counts["io_tensors"]
    saving = max(0, saving - _ALIGN_SLACK * allocations)
    return {"host_minimum": int(host_minimum), "bookkeeping_saving": int(saving),
            "counts": counts, "estimate": int(host_minimum) - int(saving)}
