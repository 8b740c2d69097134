"""Bare-metal images of the kernels on emulated microcontrollers.

Builds the C kernels with a small bare-metal harness (startup, linker
script, semihosting, instruction counters: ``harness/``) for QEMU system
boards and runs them with deterministic instruction counting:

- ``targets``: the emulated cores (compiler flags, memory map, board, clock);
- ``build``: kernel and harness sources, compile and link (also a command
  line: ``python -m tflm_caps.baremetal.build --help``);
- ``qemu``: run an image, parse the ``TAG key=value`` records it prints;
- ``vectors``: the CAPV kernel-call format (vector files for host drivers,
  a C header for the bare-metal driver) and the reference's outputs;
- ``cases``: kernel cases on the published CapsNet shapes;
- ``bench``: instruction counts behind ``tflm-caps bench``;
- ``bench_model``: a converted model's own capsule ops, MACs, bytes, arena
  (``tflm-caps bench MODEL.tflite``);
- ``profile``: per-function instruction profile of an image.

Needs the cross toolchains and QEMU that scripts/install.sh installs.
"""


class McuError(RuntimeError):
    """Build or emulation failure, with the tool's output attached."""
