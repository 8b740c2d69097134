"""Skip a test when a compiler, emulator or build tool is missing, unless
the run must have them all.

``TFLM_CAPS_REQUIRE_TOOLCHAINS=1`` (set by scripts/test.sh, the README's
and CI's test command, right after scripts/install.sh installed the tools)
turns every such skip into a failure, so that CI cannot pass by silently
skipping the MCU, sanitizer and drop-in tests.
"""
import os
import shutil

import pytest

from tflm_caps.baremetal.targets import get_target

REQUIRE_ENV = "TFLM_CAPS_REQUIRE_TOOLCHAINS"


def toolchains_required():
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def require_tools(*tools):
    """Skip (or fail, when toolchains are required) unless every tool is on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    message = f"not installed: {', '.join(missing)} (scripts/install.sh installs the tools)"
    if toolchains_required():
        pytest.fail(f"{message}; {REQUIRE_ENV} is set, so this is a failure", pytrace=False)
    pytest.skip(message)


def require_target(target):
    """The cross compiler and QEMU of an emulated target."""
    require_tools(*get_target(target).tools)
