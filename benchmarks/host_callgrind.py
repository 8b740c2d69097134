#!/usr/bin/env python3
"""Instruction counts of the portable kernels on the host, under callgrind.

A script run from a source checkout with tflm-caps installed: builds the
checkout's tests/c/kernel_vectors_main.c with the portable kernels of
tflm_caps_ops/ (-O2), runs one kernel call per configuration under
``valgrind --tool=callgrind --toggle-collect=<kernel>`` (so only that
kernel's inclusive instructions are counted) and reports instructions, MACs
and instructions per MAC for class-capsule layers of published sizes, in
both prediction modes.  The installed package encodes the calls, computes
the MACs and reports the scratch sizes.

usage: python3 benchmarks/host_callgrind.py [--json OUT.json] [--quick]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from tflm_caps import native
from tflm_caps.baremetal import vectors as V
from tflm_caps.reference import float_ref
from tflm_caps.reference import quant as q

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (N_in, D_in, N_out, D_out, routings)
LAYERS = {
    "costa2022-mnist": (1024, 4, 10, 6, 3),
    "sabour2017-mnist": (1152, 8, 10, 16, 3),
}
QUICK_LAYERS = {"tiny": (128, 4, 10, 4, 3)}


def build_driver(workdir, cc="gcc", opt="-O2"):
    """Compile the vector driver with the portable kernels; returns the executable."""
    import glob
    srcs = sorted(glob.glob(os.path.join(ROOT, "tflm_caps_ops", "src", "common", "*.c")))
    srcs += sorted(glob.glob(os.path.join(ROOT, "tflm_caps_ops", "src", "portable", "*.c")))
    exe = os.path.join(workdir, "kernel_vectors")
    cmd = [cc, "-std=c99", opt, "-g", "-Wall", "-Wextra", "-I",
           os.path.join(ROOT, "tflm_caps_ops", "include"), "-I",
           os.path.join(ROOT, "python", "tflm_caps", "baremetal", "harness", "common"),
           os.path.join(ROOT, "tests", "c", "kernel_vectors_main.c"), *srcs, "-o", exe]
    subprocess.run(cmd, check=True)
    return exe


def layer_case(dims, seed=0):
    """A calibrated layer on squashed-capsule-like inputs whose predictions agree."""
    n_in, dim_in, n_out, dim_out, routings = dims
    rng = np.random.default_rng(seed)
    u = float_ref.squash(rng.normal(size=(2, n_in, dim_in)))
    W = rng.normal(size=(n_in, n_out, dim_out, dim_in)) / np.sqrt(dim_in)
    W[:, 0] += 0.3 / dim_in
    quant = q.calibrate_class_caps(u, W, routings, 1.0 / 128, 0)
    params = q.class_caps_params((n_in, dim_in, n_out, dim_out), quant)
    return q.quantize(u[0], 1.0 / 128), q.quantize_weights(W, quant.weight_scales), params


def callgrind_ir(exe, cases, function, workdir):
    """Inclusive instructions executed inside ``function`` for the given cases."""
    vin = os.path.join(workdir, "in.bin")
    vout = os.path.join(workdir, "out.bin")
    cg = os.path.join(workdir, "callgrind.out")
    V.write_vectors(vin, cases)
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                    f"--toggle-collect={function}", exe, vin, vout],
                   check=True, capture_output=True)
    for calls in V.read_outputs(vout, cases):
        if any(status != 0 for status, _ in calls):
            raise RuntimeError(f"{function}: kernel returned an error status")
    text = open(cg).read()
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not match:
        raise RuntimeError(f"no instruction total in {cg}")
    return int(match.group(1))


def measure(exe, name, dims, workdir, progress):
    n_in, dim_in, n_out, dim_out, routings = dims
    u, W, params = layer_case(dims)
    pred_macs = n_in * n_out * dim_out * dim_in
    route_macs = (2 * routings - 1) * n_in * n_out * dim_out
    rows = []
    runs = [
        ("predictions", "caps_predictions_s8", [("class_caps", u, W, params, V.F_PREDICTIONS)],
         pred_macs),
        ("dynamic_routing", "caps_dynamic_routing_s8",
         [("class_caps", u, W, params, V.F_PREDICTIONS | V.F_ROUTING)], route_macs),
        ("class_caps store", "caps_class_caps_s8", [("class_caps", u, W, params, V.F_STORE)],
         pred_macs + route_macs),
        ("class_caps recompute", "caps_class_caps_s8",
         [("class_caps", u, W, params, V.F_RECOMPUTE)], routings * pred_macs + route_macs),
        # a squash case runs twice (with the gain table, then without)
        ("squash table+none", "caps_squash_s8",
         [("squash", u, q.squash_params(1.0 / 64, 0))], 2 * n_in * dim_in),
        ("length (output caps)", "caps_length_s8",
         [("length", np.zeros((n_out, dim_out), np.int8) + 37, q.length_params(1.0 / 128, 0))],
         n_out * dim_out),
    ]
    dims_t = (n_in, dim_in, n_out, dim_out)
    scratch = {"store": native.class_caps_buffer_size(dims_t, True),
               "recompute": native.class_caps_buffer_size(dims_t, False)}
    for label, function, cases, macs in runs:
        ir = callgrind_ir(exe, cases, function, workdir)
        rows.append({"layer": name, "kernel": label, "function": function,
                     "instructions": ir, "macs": macs, "instructions_per_mac": ir / macs,
                     "scratch_bytes": scratch.get(label.split()[-1]) if "class_caps" in label
                     else None})
        progress.update(1)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="only a tiny layer (smoke run)")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        print("host_callgrind: valgrind is not installed", file=sys.stderr)
        return 2
    from tqdm import tqdm

    layers = QUICK_LAYERS if args.quick else LAYERS
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        exe = build_driver(workdir)
        with tqdm(total=6 * len(layers), desc="callgrind", file=sys.stderr) as progress:
            for name, dims in layers.items():
                rows += measure(exe, name, dims, workdir, progress)
    header = f"{'layer':18} {'kernel':22} {'instructions':>13} {'MACs':>11} {'instr/MAC':>9} {'scratch B':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        scratch = "" if r["scratch_bytes"] is None else str(r["scratch_bytes"])
        print(f"{r['layer']:18} {r['kernel']:22} {r['instructions']:>13,} {r['macs']:>11,} "
              f"{r['instructions_per_mac']:>9.2f} {scratch:>10}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tool": "valgrind callgrind (x86-64 instructions)", "compiler": "gcc -O2",
                       "layers": {k: dict(zip(("n_in", "dim_in", "n_out", "dim_out", "routings"), v))
                                  for k, v in layers.items()},
                       "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
