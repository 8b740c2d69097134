#!/usr/bin/env python3
"""How much SQNR would the class-capsule layer gain with 16-bit routing
intermediates?  A numpy study (no kernel implements them).

On the real primary-capsule activations of a trained model (calibration:
1,000 training images; evaluation: the held-out images), the layer is run
four ways against the float layer on the unquantized activations and
weights:

- ``int8 kernel``: the integer reference (``reference.int8.class_caps_s8``),
  what the C kernels compute;
- ``sim N-bit``: the float routing with the kernel's quantization points
  simulated (quantize-dequantize): u on its int8 grid, W on its int8 (or
  int4) grid, the predictions u_hat, the sums s of every iteration and the
  logits b after every update symmetric N-bit with max-abs scales
  calibrated like the converter's, the couplings in Q15 and the
  intermediate v_r on 1/128 (N = 8) or 1/32768 (N = 16); the layer output
  v on 1/128 as the contract says, or (``v 16-bit``) on 1/32768.

The 8-bit simulation reproduces the kernel's SQNR within a fraction of a
dB, which is what makes the 16-bit one a fair estimate.

    python3 benchmarks/routing_precision.py MODEL.keras [--weight-bits 4] [--json out.json]
"""
import argparse
import json
import sys

import numpy as np


def sqnr_db(ref, test):
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((ref - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref ** 2)) / noise)


def _fq(x, scale, bits):
    """Quantize-dequantize, symmetric, round half away from zero, saturating."""
    qmax = (1 << (bits - 1)) - 1
    q = np.asarray(x, np.float64) / scale
    q = np.clip(np.sign(q) * np.floor(np.abs(q) + 0.5), -qmax - 1, qmax)
    return q * scale


def simulate(u, w, routings, scales, bits, v_bits):
    """Float routing with the quantization points of the module doc; u and w
    already on their grids.  scales: {'u_hat', 's': [R], 'b': [R-1]} (max abs)."""
    from tflm_caps.reference import float_ref

    qmax = (1 << (bits - 1)) - 1
    v_step = 2.0 ** -7 if bits == 8 else 2.0 ** -15
    u_hat = _fq(float_ref.predictions(u, w), scales["u_hat"] / qmax, bits)
    b = np.zeros(u_hat.shape[:-1])
    v = None
    for r in range(routings):
        c = np.round(float_ref.softmax(b, axis=-1) * 32768) / 32768  # Q15 couplings
        s = _fq(np.einsum("...ij,...ijd->...jd", c, u_hat), scales["s"][r] / qmax, bits)
        v = float_ref.squash(s)
        if r < routings - 1:
            v_mid = np.clip(np.round(v / v_step), -1 / v_step, 1 / v_step - 1) * v_step
            b = _fq(b + np.einsum("...ijd,...jd->...ij", u_hat, v_mid), scales["b"][r] / qmax,
                    bits)
    out_step = 2.0 ** -7 if v_bits == 8 else 2.0 ** -15
    return np.clip(np.round(v / out_step), -1 / out_step, 1 / out_step - 1) * out_step


def study(u_cal, u_test, W, routings, weight_bits=8, per_capsule=True):
    from tflm_caps.reference import float_ref
    from tflm_caps.reference import int8 as ref
    from tflm_caps.reference import quant as q

    quant = q.calibrate_class_caps(u_cal, W, routings, 1.0 / 128, 0, per_capsule=per_capsule,
                                   weight_bits=weight_bits)
    ws = np.asarray(quant.weight_scales)
    Wq = q.quantize_weights(W, ws, weight_bits)
    Wd = Wq * (ws.reshape(1, -1, 1, 1) if ws.size > 1 else ws[0])
    uq = q.quantize(u_test, 1.0 / 128)
    ud = uq.astype(np.float64) / 128
    v_float = float_ref.class_caps_float(u_test, W, routings, return_intermediates=False)
    params = q.class_caps_params(q.ClassCapsDims.from_shapes(u_test.shape, W.shape), quant)
    v_int = ref.class_caps_s8(uq, Wq, params).astype(np.float64) / 128
    # max-abs scales of the intermediates, as the converter calibrates them
    ucal = q.quantize(u_cal, 1.0 / 128).astype(np.float64) / 128
    _, inter = float_ref.class_caps_float(ucal, Wd, routings, return_intermediates=True)
    scales = {"u_hat": float(np.abs(inter["u_hat"]).max()),
              "s": [float(np.abs(s).max()) for s in inter["s"]],
              "b": [float(np.abs(b).max()) for b in inter["b"]]}
    rows = {"int8 kernel": v_int,
            "sim 8-bit": simulate(ud, Wd, routings, scales, 8, 8),
            "sim 16-bit, v 8-bit (contract)": simulate(ud, Wd, routings, scales, 16, 8),
            "sim 16-bit, v 16-bit": simulate(ud, Wd, routings, scales, 16, 16)}
    len_float = float_ref.length(v_float)
    out = {}
    for name, v in rows.items():
        out[name] = {"sqnr_v_db": sqnr_db(v_float, v),
                     "sqnr_lengths_db": sqnr_db(len_float, float_ref.length(v)),
                     "same_longest": float(np.mean(float_ref.length(v).argmax(1)
                                                   == len_float.argmax(1)))}
    out["output rounding floor (float v on 1/128)"] = {
        "sqnr_v_db": sqnr_db(v_float, np.round(v_float * 128) / 128)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="trained Keras model with primary_caps / class_caps")
    parser.add_argument("--weight-bits", type=int, choices=(8, 4), default=8)
    parser.add_argument("--per-tensor", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    import keras

    from tflm_caps import data
    from tflm_caps.converter import load_keras_model

    model = load_keras_model(args.model)
    ds = data.load("bundled")
    primary = keras.Model(model.inputs, model.get_layer("primary_caps").output)
    layer = model.get_layer("class_caps")
    pick = np.random.default_rng(0).choice(len(ds.x_train), size=1000, replace=False)
    u_cal = np.asarray(primary.predict(ds.x_train[pick], verbose=0, batch_size=256), np.float64)
    u_test = np.asarray(primary.predict(ds.x_test, verbose=0, batch_size=256), np.float64)
    res = study(u_cal, u_test, np.asarray(layer.W.numpy(), np.float64), int(layer.routings),
                args.weight_bits, not args.per_tensor)
    for name, m in res.items():
        extra = "".join(f", {k} {v:.4f}" if k == "same_longest" else f", {k} {v:.2f}"
                        for k, v in m.items() if k != "sqnr_v_db")
        print(f"{name:<42} SQNR v {m['sqnr_v_db']:.2f} dB{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
