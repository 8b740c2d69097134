"""Arena probe worker: ``python -m tflm_caps.runtime._arena_worker MODEL [--preserve]``.

Reads one arena size per line on stdin and answers ``ok`` or ``fail`` on
stdout after creating a TFLM interpreter with that arena and running one
inference on zero inputs.  It runs in its own process because the wheel
can crash on tiny arenas; the parent (arena.py) restarts it when it dies.
A line ``report`` prints the wheel's own allocation figure for the last
successful size.
"""
import os
import re
import sys
import tempfile


def main(argv):
    path = argv[0]
    preserve = "--preserve" in argv[1:]
    # Native messages (fd 2) go to a file so they cannot interleave with replies.
    log = tempfile.TemporaryFile()
    os.dup2(log.fileno(), 2)
    out = os.fdopen(os.dup(1), "w", buffering=1)

    import numpy as np
    from tflite_micro import runtime as tflm

    from tflm_caps.runtime import _library
    from tflm_caps.tflite.reader import check_model

    _library.load_library()
    with open(path, "rb") as f:
        data = f.read()
    info = check_model(data)
    registerers = [_library.REGISTERER] + [a[len("--registerer="):] for a in argv[1:]
                                          if a.startswith("--registerer=")]
    config = (tflm.InterpreterConfig.kPreserveAllTensors if preserve
              else tflm.InterpreterConfig.kAllocationRecording)
    last_ok = None
    for line in sys.stdin:
        line = line.strip()
        if line == "report":
            recorded = -1
            if last_ok is not None:
                os.ftruncate(log.fileno(), 0)
                os.lseek(log.fileno(), 0, os.SEEK_SET)
                last_ok.print_allocations()
                os.lseek(log.fileno(), 0, os.SEEK_SET)
                text = os.read(log.fileno(), 1 << 20).decode(errors="replace")
                m = re.search(r"Arena allocation total (\d+) bytes", text)
                recorded = int(m.group(1)) if m else -1
            out.write(f"recorded {recorded}\n")
            continue
        size = int(line)
        try:
            interp = tflm.Interpreter.from_bytes(data, custom_op_registerers=registerers,
                                                 arena_size=size, intrepreter_config=config)
            for k, t in enumerate(info.input_tensors()):
                interp.set_input(np.zeros(t.shape, t.dtype), k)
            interp.invoke()
        except RuntimeError:
            out.write("fail\n")
            continue
        last_ok = interp
        out.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
