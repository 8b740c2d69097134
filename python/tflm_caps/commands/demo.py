"""``tflm-caps demo``: the main job end to end on the bundled MNIST digits.

train (or reuse WORKDIR/MODEL.keras; MODEL is costa2022-mnist, or
mazzia2021-mnist for Efficient-CapsNet with --model) -> convert to int8 with a
representative set from the training split -> run in the TFLM host
interpreter -> validate on the held-out split and measure top-1 agreement
on all bundled images -> report (JSON, Markdown, PNG) with the targets.
"""
import json
import os
import sys
import time

from tflm_caps.commands import options
from tflm_caps.commands.errors import CliError

MODEL_NAME = "costa2022-mnist"
# The zoo models the demo runs: one per capsule family.
MODELS = ("costa2022-mnist", "mazzia2021-mnist")
# Targets of the main job.
TARGET_AGREEMENT = 0.995        # top-1 agreement on all bundled images
TARGET_ACCURACY_DROP = 0.002    # int8 accuracy at most 0.2 points below float (held-out)
TARGET_SIZE_RATIO = 0.27        # int8 .tflite bytes / float .tflite bytes
CALIBRATION_SAMPLES = 200


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo", help="train, convert, run in TFLM and validate a CapsNet end to end "
                     "(costa2022-mnist or mazzia2021-mnist)",
        parents=[options.shared(json="the report", seed="the training", progress=True,
                                report="WORKDIR/report.json")],
        description="Train costa2022-mnist (or --model mazzia2021-mnist, Efficient-CapsNet) "
                    "on the bundled MNIST digits (or reuse WORKDIR/MODEL.keras), convert it "
                    "to a fully int8 .tflite "
                    "with calibration images from the training split, run it in the TFLM "
                    "host interpreter with the tflm-caps operators, validate it against "
                    "Keras on the held-out split and measure the top-1 agreement on all "
                    "bundled images.  Prints a summary (or the JSON report with --json) "
                    "and writes the report as JSON, Markdown and PNG.")
    parser.add_argument("--model", choices=MODELS, default=MODEL_NAME,
                        help=f"zoo model (default: {MODEL_NAME}; mazzia2021-mnist is "
                             "Efficient-CapsNet with self-attention routing)")
    parser.add_argument("--workdir", default="tflm-caps-demo", metavar="DIR",
                        help="where models and reports go (default: ./tflm-caps-demo)")
    parser.add_argument("--retrain", action="store_true",
                        help="train even if WORKDIR holds a trained model")
    parser.add_argument("--per-capsule", action="store_true",
                        help="one ClassCaps weight scale per output capsule")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a target is missed")
    parser.set_defaults(func=run)
    return parser


def _log(msg):
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _targets(report):
    drop = report["float_accuracy"] - report["int8_accuracy"]
    return [
        {"name": "top-1 agreement, all bundled images", "required": f">= {TARGET_AGREEMENT:.1%}",
         "measured": f"{report['all_images_agreement']:.2%}",
         "met": report["all_images_agreement"] >= TARGET_AGREEMENT},
        {"name": "int8 vs float accuracy (held-out)",
         "required": f"drop <= {100 * TARGET_ACCURACY_DROP:.1f} points",
         "measured": f"int8 - float = {-100 * drop:+.2f} points",
         "met": drop <= TARGET_ACCURACY_DROP + 1e-12},
        {"name": "int8 / float .tflite size", "required": f"<= {TARGET_SIZE_RATIO:.0%}",
         "measured": f"{report['int8_to_float_size']:.2%}",
         "met": report["int8_to_float_size"] <= TARGET_SIZE_RATIO},
    ]


def _trained_model(ds, keras_path, retrain, seed, progress, model_name=MODEL_NAME):
    """(inference model, training summary or None): WORKDIR's model unless
    there is none or --retrain, else ``model_name`` trained and saved there."""
    from tflm_caps.converter import load_keras_model

    if os.path.isfile(keras_path) and not retrain:
        _log(f"reusing trained model {keras_path}")
        model = load_keras_model(keras_path)
        if tuple(model.inputs[0].shape[1:]) != tuple(ds.input_shape):
            raise CliError(f"{keras_path} takes inputs of shape "
                           f"{tuple(model.inputs[0].shape[1:])}, not the bundled "
                           f"{tuple(ds.input_shape)}: delete it or pass --retrain")
        return model, None
    from tflm_caps import train
    _log(f"training {model_name} (seed {seed})")
    _, result = train.train(model_name, ds, seed=seed, progress=progress)
    result.inference_model.save(keras_path)
    training = result.as_dict()
    training.pop("history", None)
    return result.inference_model, training


def _all_images_agreement(report, tflite, model, ds, progress):
    """Top-1 agreement of int8 TFLM and float Keras on every bundled image:
    the held-out split from the validation report, the training split run here."""
    import numpy as np

    from tflm_caps.runtime import TFLMRunner

    int8_train = np.argmax(TFLMRunner(tflite).predict(ds.x_train, progress=progress), axis=-1)
    float_train = np.argmax(model.predict(ds.x_train, batch_size=256, verbose=0), axis=-1)
    float_test, int8_test, _ = report["_lengths"]
    same = int(np.sum(int8_train == float_train)) + \
        int(np.sum(np.argmax(int8_test, -1) == np.argmax(float_test, -1)))
    total = len(ds.x_train) + len(float_test)
    return {"all_images": int(total), "all_images_agreement": same / total,
            "all_images_disagreements": int(total - same)}


def run_demo(workdir, report_path=None, retrain=False, seed=0, per_capsule=False,
             progress=True, model_name=MODEL_NAME):
    """The demo as a function; returns (report dict, files written)."""
    from tflm_caps import data as caps_data
    from tflm_caps.converter import convert_detailed
    from tflm_caps.validation import validate, write_report

    t0 = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    if model_name not in MODELS:
        raise CliError(f"unknown demo model {model_name!r}; choose one of {', '.join(MODELS)}")
    files = {"keras": os.path.join(workdir, f"{model_name}.keras"),
             "int8_tflite": os.path.join(workdir, f"{model_name}.tflite"),
             "float_tflite": os.path.join(workdir, f"{model_name}_float.tflite")}

    ds = caps_data.load("bundled")
    _log(f"data: {ds}")
    model, training = _trained_model(ds, files["keras"], retrain, seed, progress, model_name)

    _log("converting to int8 (calibration on the training split)")
    conv = convert_detailed(model, ds.calibration_subset(CALIBRATION_SAMPLES, seed=seed),
                            num_samples=CALIBRATION_SAMPLES,
                            weight_granularity="per-capsule" if per_capsule else "per-tensor",
                            metadata="auto", progress=progress)
    for key, content in (("int8_tflite", conv.model), ("float_tflite", conv.float_model)):
        with open(files[key], "wb") as f:
            f.write(content)

    _log("validating on the held-out split (Keras float vs TFLM int8)")
    report = validate(model, files["int8_tflite"], ds, float_tflite=conv.float_model,
                      progress=progress)
    report["model"] = model_name
    _log("top-1 agreement on all bundled images (the training split; held-out done)")
    report.update(_all_images_agreement(report, conv.model, model, ds, progress))
    report["training"] = training
    report["conversion"] = {"calibration_samples": conv.summary.calibration_samples,
                            "weight_granularity": conv.summary.weight_granularity,
                            "seconds": round(conv.summary.conversion_seconds, 2)}
    report["files"] = files
    report["targets"] = _targets(report)
    report["targets_met"] = all(t["met"] for t in report["targets"])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    written = write_report(report, report_path or os.path.join(workdir, "report.json"),
                           title=f"tflm-caps demo: {model_name}")
    return report, written


def run(args):
    options.check_output_dir(args.workdir, "--workdir")
    os.makedirs(args.workdir, exist_ok=True)  # the demo's own output folder
    options.check_report_path(args.report)
    from tflm_caps.validation import markdown, to_json

    report, files = run_demo(args.workdir, args.report, retrain=args.retrain, seed=args.seed,
                             per_capsule=args.per_capsule, progress=options.show_progress(args),
                             model_name=args.model)
    if args.json:
        print(json.dumps(to_json(report), indent=2))
    else:
        print(markdown(report, f"tflm-caps demo: {args.model}"))
        print(f"wrote {files['json']}, {files['markdown']}, {files['png']}")
    for t in report["targets"]:
        if not t["met"]:
            print(f"TARGET MISSED: {t['name']}: required {t['required']}, measured "
                  f"{t['measured']}", file=sys.stderr)
    return 1 if args.strict and not report["targets_met"] else 0
