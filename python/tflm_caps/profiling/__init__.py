"""On-target profile of a converted model with the user's TFLM tree.

``profile(model, tflm_root, target)`` builds TFLM's library with CMSIS-NN
and the tflm-caps operators for the target (cached), links the exported
model with a profiling main, runs it on the matching QEMU board and
returns instructions per operator and per inference, the minimum arena on
the target, flash sizes and bit-exactness against the host TFLM runner.
Importing this package is light (no TensorFlow, no TFLM).
"""
from tflm_caps.profiling.api import OpProfile, ProfileResult, check_arguments, profile
from tflm_caps.profiling.build import BuildError
from tflm_caps.profiling.cache import cache_root
from tflm_caps.profiling.emulator import EmulatorError
from tflm_caps.profiling.firmware import FirmwareError
from tflm_caps.profiling.sources import SourcesNotFoundError
from tflm_caps.profiling.targets import TARGETS
from tflm_caps.profiling.tree import TreeError

__all__ = ["profile", "ProfileResult", "OpProfile", "check_arguments", "cache_root", "TARGETS",
           "TreeError", "BuildError", "FirmwareError", "EmulatorError", "SourcesNotFoundError"]
