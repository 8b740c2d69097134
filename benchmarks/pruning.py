"""Capsule pruning of costa2022-mnist on the bundled data: accuracy and cost
against the fraction of primary capsule types removed.

    python3 benchmarks/pruning.py --json out/pruning.json --png docs/pruning.png

1. Train costa2022-mnist as ``tflm-caps demo`` does (recipe, seed 0), or
   reuse ``--model``.
2. For every fraction f of ``--fractions`` run ``tflm_caps.prune`` with
   ``keep_types = 1 - f`` and the same schedule (``--steps`` x
   ``--finetune-epochs``).  f = 0 is the baseline: the unpruned model put
   through the same fine-tuning, i.e. trained for the same total number of
   epochs.  ``--keep-channels`` also prunes conv1's channels in the f > 0
   runs; the f = 0 baseline stays unpruned.
3. Convert every model to int8 (200 calibration images of the training
   split), run the held-out split in the TFLM host interpreter, check its
   raw int8 outputs bit for bit against the numpy reference kernels
   (tf.lite with tflm_caps.converter.kernels), and measure top-1 agreement
   with its own Keras model, int8 model bytes and the exact minimum arena.
4. With ``--mcu``, run ``tflm-caps bench MODEL.tflite`` on every converted
   model (``tflm_caps.baremetal.bench_model``; the capsule ops get the
   model's activations of the first held-out image): instructions of each
   capsule op on emulated Cortex-M7 (cortex_m backend) and Cortex-M55
   (helium), MACs of each convolution read from the .tflite.
5. Print Markdown tables, write JSON and the PNG plot.

``--from-json OUT.json --tflite-dir DIR --mcu`` redoes steps 4 and 5 (and
the arena) on the rows and the kept .tflite models of an earlier run,
without training.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

MODEL = "costa2022-mnist"
CALIBRATION_SAMPLES = 200
TARGETS = {0.5: 0.005, 0.75: 0.015}   # allowed held-out accuracy drop vs the baseline
TARGET_AGREEMENT = 0.995


def _log(msg):
    print(f"[pruning] {msg}", file=sys.stderr, flush=True)


def measure(model, ds, progress, tflite_path=None):
    """Convert, run in TFLM, compare with the numpy reference and with Keras.

    ``tflite_path``: also write the converted int8 model there."""
    from tflm_caps.converter import convert_detailed
    from tflm_caps.converter.kernels import run_model
    from tflm_caps.pruning import model_cost
    from tflm_caps.reference import quant as q
    from tflm_caps.runtime import TFLMRunner, find_min_arena_size

    conv = convert_detailed(model, ds.calibration_subset(CALIBRATION_SAMPLES, seed=0),
                            num_samples=CALIBRATION_SAMPLES, metadata="auto",
                            progress=progress)
    if tflite_path:
        with open(tflite_path, "wb") as fh:
            fh.write(conv.model)
    runner = TFLMRunner(conv.model)
    scale, zp = runner.info.input_tensors()[0].quantization
    raw_tflm = runner.predict(q.quantize(ds.x_test, scale, zp), dequantize=False)
    _, raw_ref = run_model(conv.model, ds.x_test, progress=progress)
    raw_ref = np.asarray(raw_ref).reshape(raw_tflm.shape)
    out_scale, out_zp = runner.info.output_tensors()[0].quantization
    int8_pred = np.argmax(q.dequantize(raw_tflm, out_scale, out_zp), axis=-1)
    float_pred = np.argmax(model.predict(ds.x_test, batch_size=256, verbose=0), axis=-1)
    c = model_cost(model)
    return {
        "capsule_types": c["capsule_types"], "input_capsules": c["input_capsules"],
        "params": c["params"], "macs": c["macs"], "est_int8_bytes": c["int8_bytes"],
        "conv_macs": {r["name"]: r["macs"] for r in c["layers"]
                      if r["kind"] in ("Conv2D", "PrimaryCaps")},
        "float_accuracy": float(np.mean(float_pred == ds.y_test)),
        "int8_accuracy": float(np.mean(int8_pred == ds.y_test)),
        "agreement": float(np.mean(float_pred == int8_pred)),
        "bit_exact_outputs": int(np.sum(np.all(raw_tflm == raw_ref, axis=-1))),
        "outputs": int(len(raw_tflm)),
        "int8_tflite_bytes": len(conv.model),
        "float_tflite_bytes": len(conv.float_model),
        "arena_bytes": int(find_min_arena_size(conv.model)),
        "_tflite": conv.model,
    }


MCU_CONFIGS = ("m7-cortex_m", "m55-helium")


def mcu_bench(tflite_bytes, image, progress):
    """Per-op instructions and convolution MACs of a converted model
    (``tflm-caps bench MODEL.tflite --input-data bundled``)."""
    from tflm_caps.baremetal import bench_model

    rep = bench_model.run(tflite_bytes, configs=MCU_CONFIGS, image=image, arena=False,
                          progress=progress)
    ops = {o["op"].replace("TFLMCaps_", ""): o["instructions"] for o in rep["capsule_ops"]}
    return {"capsule_instructions": ops,
            "capsule_total": rep["totals"]["capsule_instructions"],
            "tflite_conv_macs": [layer["macs"] for layer in rep["layers"]
                                 if layer["op"] == "CONV_2D"],
            "builtin_macs": rep["totals"]["builtin_macs"],
            "emulated_ops": rep["totals"]["emulated_ops"],
            "instructions_per_tick": rep["instructions_per_tick"]}


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = np.array([100 * r["fraction_pruned"] for r in rows])
    mcu = all("mcu" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if mcu else 2, figsize=(16 if mcu else 11, 4.2))
    ax1, ax2 = axes[0], axes[-1]
    ax1.plot(f, [100 * r["float_accuracy"] for r in rows], "o-", label="Keras float")
    ax1.plot(f, [100 * r["int8_accuracy"] for r in rows], "s--", label="TFLM int8")
    base = rows[0]["float_accuracy"]
    ax1.axhline(100 * base, color="grey", lw=0.8, ls=":")
    if rows[0]["fraction_pruned"] == 0:
        ax1.plot([100 * f for f in TARGETS], [100 * (base - d) for d in TARGETS.values()], "v",
                 color="tab:red", label="required (vs unpruned)")
    ax1.set_xlabel("primary capsule types removed (%)")
    ax1.set_ylabel("held-out accuracy (%)")
    ax1.set_title("costa2022-mnist, bundled MNIST (1,000 held-out)")
    ax1.legend(fontsize=8)
    if mcu:
        ax = axes[1]
        for config, label, style in (("m7-cortex_m", "ClassCaps, Cortex-M7 instructions", "s-"),
                                     ("m55-helium", "ClassCaps, Cortex-M55 (Helium) instr.",
                                      "^-")):
            ax.plot(f, [r["mcu"]["capsule_instructions"]["ClassCaps"][config] / 1e6
                        for r in rows], style, label=label)
        ax.plot(f, [r["mcu"]["tflite_conv_macs"][-1] / 1e6 for r in rows], "d--",
                label="primary-capsule conv MACs")
        ax.plot(f, [r["mcu"]["tflite_conv_macs"][0] / 1e6 for r in rows], "o--",
                label="conv1 MACs")
        ax.set_xlabel("primary capsule types removed (%)")
        ax.set_ylabel("millions")
        ax.set_ylim(bottom=0)
        ax.set_title("compute: emulated instructions (QEMU), MACs")
        ax.legend(fontsize=8)
    for key, label in (("macs", "MACs"), ("int8_tflite_bytes", "int8 .tflite bytes"),
                       ("arena_bytes", "tensor arena")):
        ax2.plot(f, [r[key] / rows[0][key] for r in rows], "o-", label=label)
    if mcu:
        vals = [r["mcu"]["capsule_total"]["m7-cortex_m"] for r in rows]
        ax2.plot(f, [v / vals[0] for v in vals], "s--", label="capsule ops, M7 instructions")
    ax2.set_xlabel("primary capsule types removed (%)")
    ax2.set_ylabel("relative to unpruned")
    ax2.set_ylim(0, 1.05)
    ax2.set_title("cost relative to the unpruned model")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows):
    lines = ["| types removed | types | conv1 ch. | input caps | params | MACs | conv1 MACs | "
             "primary conv MACs | int8 .tflite B | arena B | float acc | int8 acc | "
             "agreement | bit-exact |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
             "---: | ---: | ---: |"]
    for r in rows:
        cm = r["conv_macs"]
        lines.append(
            f"| {100 * r['fraction_pruned']:.1f}% | {r['capsule_types']} | "
            f"{r.get('conv1_channels', 16)} | "
            f"{r['input_capsules']:,} | {r['params']:,} | {r['macs']:,} | "
            f"{cm.get('conv1', 0):,} | {cm.get('primary_caps', 0):,} | "
            f"{r['int8_tflite_bytes']:,} | {r['arena_bytes']:,} | "
            f"{100 * r['float_accuracy']:.2f}% | {100 * r['int8_accuracy']:.2f}% | "
            f"{100 * r['agreement']:.2f}% | {r['bit_exact_outputs']}/{r['outputs']} |")
    return "\n".join(lines)


def markdown_mcu(rows):
    """The cost table of docs/pruning.md: emulated instructions of the
    class capsules, MACs of each convolution (from the .tflite), bytes,
    arena and accuracy."""
    lines = ["| types removed | ClassCaps M7 | ClassCaps M55 | all capsule ops M7 | "
             "all capsule ops M55 | conv1 MACs | primary conv MACs | int8 .tflite B | "
             "arena B | float acc | int8 acc |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        m = r["mcu"]
        cc = m["capsule_instructions"]["ClassCaps"]
        convs = m["tflite_conv_macs"]
        lines.append(
            f"| {100 * r['fraction_pruned']:.1f}% | {cc['m7-cortex_m']:,} | "
            f"{cc['m55-helium']:,} | {m['capsule_total']['m7-cortex_m']:,} | "
            f"{m['capsule_total']['m55-helium']:,} | {convs[0]:,} | {convs[-1]:,} | "
            f"{r['int8_tflite_bytes']:,} | {r['arena_bytes']:,} | "
            f"{100 * r['float_accuracy']:.2f}% | {100 * r['int8_accuracy']:.2f}% |")
    return "\n".join(lines)


def remeasure(args, progress):
    """Steps 4 and 5 on the rows and .tflite models of an earlier run."""
    from tflm_caps import data
    from tflm_caps.runtime import find_min_arena_size

    with open(args.from_json) as fh:
        report = json.load(fh)
    ds = data.load("bundled")
    for r in report["rows"]:
        if "tflite" not in r:
            raise SystemExit(f"{args.from_json}: row {r['fraction_pruned']} has no kept .tflite "
                             "(run with --tflite-dir)")
        with open(os.path.join(args.tflite_dir, r["tflite"]), "rb") as fh:
            model = fh.read()
        _log(f"{100 * r['fraction_pruned']:.1f}%: emulating the capsule ops of {r['tflite']}")
        r["mcu"] = mcu_bench(model, ds.x_test[:1], progress)
        r["arena_bytes"] = int(find_min_arena_size(model))  # with the kernels of this build
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="trained costa2022-mnist .keras (default: train it)")
    ap.add_argument("--fractions", type=float, nargs="+",
                    default=[0.0, 0.25, 0.5, 0.625, 0.75, 0.875])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--keep-channels", type=float, default=None, metavar="F",
                    help="also keep this fraction of the channels of conv1 (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="save the pruned .keras models here")
    ap.add_argument("--tflite-dir", default=None,
                    help="save the converted int8 .tflite models here")
    ap.add_argument("--mcu", action="store_true",
                    help="also emulate each model's capsule ops on Cortex-M7 and M55")
    ap.add_argument("--from-json", metavar="OUT.json",
                    help="reuse the rows and --tflite-dir models of an earlier run (no "
                         "training); with --mcu")
    ap.add_argument("--json", help="write the rows as JSON")
    ap.add_argument("--png", help="write the plot")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    progress = not args.no_progress
    if args.from_json:
        if not args.tflite_dir:
            ap.error("--from-json needs --tflite-dir")
        report = remeasure(args, progress)
        return finish(report, args)

    import keras

    import tflm_caps.layers  # noqa: F401
    from tflm_caps import data, prune, train

    t0 = time.perf_counter()
    ds = data.load("bundled")
    if args.model:
        model = keras.models.load_model(args.model, compile=False)
        trained = None
    else:
        _log(f"training {MODEL} (demo recipe, seed {args.seed})")
        _, res = train.train(MODEL, ds, seed=args.seed, progress=progress, verbose=False)
        model = res.inference_model
        trained = {"epochs": res.epochs, "test_accuracy": res.test_accuracy}
    original_acc = train.accuracy(model, ds.x_test, ds.y_test)

    rows = []
    for f in sorted(set(args.fractions)):
        _log(f"{100 * f:.1f}% of the capsule types removed: pruning + fine-tuning")
        result = prune(model, ds, keep_types=1.0 - f if f > 0 else 1.0,
                       keep_channels=args.keep_channels if f > 0 else None, steps=args.steps,
                       finetune_epochs=args.finetune_epochs, seed=args.seed,
                       progress=progress)
        suffix = f"-ch{round(100 * args.keep_channels)}" if args.keep_channels and f else ""
        stem = f"{MODEL}-pruned{round(100 * f)}{suffix}"
        if args.workdir:
            os.makedirs(args.workdir, exist_ok=True)
            result.model.save(os.path.join(args.workdir, stem + ".keras"))
        tflite_path = None
        if args.tflite_dir:
            os.makedirs(args.tflite_dir, exist_ok=True)
            tflite_path = os.path.join(args.tflite_dir, stem + ".tflite")
        _log("converting, running in TFLM, checking against the numpy reference")
        row = {"fraction_pruned": f, "kept_types": result.kept["types"],
               "conv1_channels": len(result.kept["conv1"]),
               "validation_accuracy": result.after["validation_accuracy"],
               **measure(result.model, ds, progress, tflite_path)}
        if tflite_path:
            row["tflite"] = os.path.basename(tflite_path)
        if args.mcu:
            _log("emulating the capsule ops on Cortex-M7 and M55")
            row["mcu"] = mcu_bench(row.pop("_tflite"), ds.x_test[:1], progress)
        row.pop("_tflite", None)
        rows.append(row)
        _log(json.dumps({k: v for k, v in row.items() if k != "kept_types"}))

    base = rows[0]
    checks = []
    for f, drop in TARGETS.items():
        row = next((r for r in rows if abs(r["fraction_pruned"] - f) < 1e-9), None)
        if row is None or base["fraction_pruned"] != 0:
            continue  # accuracy targets need the unpruned baseline (fraction 0)
        checks.append({"fraction_pruned": f, "allowed_drop_points": 100 * drop,
                       "drop_points": 100 * (base["float_accuracy"] - row["float_accuracy"]),
                       "met": row["float_accuracy"] >= base["float_accuracy"] - drop - 1e-12})
    for r in rows:
        checks.append({"fraction_pruned": r["fraction_pruned"], "agreement": r["agreement"],
                       "bit_exact": r["bit_exact_outputs"] == r["outputs"],
                       "met": r["agreement"] >= TARGET_AGREEMENT
                       and r["bit_exact_outputs"] == r["outputs"]})
    report = {"model": MODEL, "data": ds.name, "trained": trained,
              "original_test_accuracy": original_acc,
              "schedule": {"steps": args.steps, "finetune_epochs": args.finetune_epochs,
                           "seed": args.seed, "keep_channels": args.keep_channels},
              "rows": rows, "checks": checks, "all_met": all(c["met"] for c in checks),
              "seconds": round(time.perf_counter() - t0, 1)}
    return finish(report, args)


def finish(report, args):
    rows = report["rows"]
    print(markdown(rows))
    if all("mcu" in r for r in rows):
        print()
        print(markdown_mcu(rows))
    for c in report["checks"]:
        print(json.dumps(c))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")
    if args.png:
        plot(rows, args.png)
    return 0 if report["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
