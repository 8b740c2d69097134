"""``tflm-caps export``: .tflite -> C array, header with arena size, main.cc."""
import json

from tflm_caps.commands import options
from tflm_caps.commands.errors import CliError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "export", help="write a .tflite as firmware sources (C array, header, main.cc)",
        parents=[options.shared(json="the arena size, model summary and files written")],
        description="Write MODEL.tflite as an aligned C array, a header with the tensor arena "
                    "size (the host TFLM interpreter's minimum adjusted to a 32-bit MCU, plus a "
                    "small margin) and the "
                    "model's I/O quantization, and a minimal TFLM main.cc that registers the "
                    "tflm-caps operators and runs one inference. See docs/firmware.md.")
    p.add_argument("model", help="int8 .tflite produced by `tflm-caps convert`")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--name", help="C identifier prefix (default: the model file's stem)")
    p.add_argument("--strip-metadata", action="store_true",
                   help="drop tflite-support metadata (saves flash; TFLM ignores it)")
    p.add_argument("--arena-size", type=options.positive_int,
                   help="use this arena size in bytes instead of the measured size plus a "
                        "margin (no margin added; below the measured minimum it is refused)")
    p.add_argument("--allow-small-arena", action="store_true",
                   help="write an --arena-size below the measured minimum anyway")
    p.add_argument("--no-overwrite", action="store_true", help="fail if output files exist")
    p.set_defaults(func=run)
    return p


def _print_summary(result):
    s = result.summary
    print(f"model     {result.model_bytes} bytes"
          + (f" -> {result.stripped_bytes} bytes without metadata"
             if result.stripped_bytes != result.model_bytes else ""))
    print(f"ops       builtin: {', '.join(s.builtin_ops) or '-'}; custom: "
          f"{', '.join(s.custom_ops) or '-'}")
    if result.arena_source == "measured":
        print(f"arena     {result.arena_size} bytes (host minimum {result.arena_measured} "
              f"- 32-bit bookkeeping {result.arena_32bit_saving} + margin "
              f"{result.arena_margin}, rounded to 16)")
    else:
        print(f"arena     {result.arena_size} bytes (given; measured minimum "
              f"{result.arena_measured})")
    for role, path in result.files.items():
        print(f"{role:<9} {path}")


def run(args):
    if args.allow_small_arena and args.arena_size is None:
        raise CliError("--allow-small-arena needs --arena-size")
    options.check_output_dir(args.out, "--out")
    from tflm_caps.export import export_model

    try:
        result = export_model(args.model, args.out, name=args.name, strip=args.strip_metadata,
                              arena_size=args.arena_size, overwrite=not args.no_overwrite,
                              allow_small_arena=args.allow_small_arena)
    except ValueError as exc:
        # export_model does no numeric work: each ValueError it raises is a
        # check of the file it was given (not a flatbuffer, foreign custom
        # operators, no input/output, files in the way).
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_summary(result)
    return 0
