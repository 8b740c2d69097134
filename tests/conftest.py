"""Shared session fixtures: the bundled data and trained models.

Training happens at most once per test session (session scope) and only
when a test asks for it.  Fixtures hand out shared objects: do not mutate
their arrays or weights; copy first (``keras.models.clone_model`` +
``set_weights``, ``np.copy``).

- ``bundled_data``: ``tflm_caps.data.Dataset`` of the bundled MNIST split.
- ``trained_tiny``: (inference model, Dataset): ``tiny`` with its default
  recipe (a few seconds; held-out accuracy checked >= 0.90 in test_train).
- ``trained_tiny_path``: that model saved as ``.keras``.
- ``trained_costa_mnist``: (inference model, Dataset): ``costa2022-mnist``
  trained by the ``tflm-caps train`` code path with its default recipe
  (held-out accuracy checked >= 0.95 in test_train).
- ``trained_costa_mnist_path``: the ``.keras`` file that command saved.
- ``*_run`` fixtures: the underlying ``TrainRun`` (model, result, report, path).

Test-only helpers live in ``tests/support`` (imported as ``support``);
``support.toolchains`` skips a test whose compiler or emulator is missing,
or fails it when ``TFLM_CAPS_REQUIRE_TOOLCHAINS=1`` (scripts/test.sh).
"""
import argparse
import dataclasses
import os
import sys

import pytest

# TensorFlow's C++ INFO lines only clutter captured output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


@dataclasses.dataclass
class TrainRun:
    model: object          # keras model as trained
    inference: object      # image -> lengths model (shared weights)
    result: object         # tflm_caps.train.TrainResult
    report: dict           # the CLI's --json report (empty when not via the CLI)
    path: str              # saved .keras (the inference model)


def train_cli_args(argv):
    """Parse ``tflm-caps train`` arguments with the real sub-command parser."""
    from tflm_caps.commands import train as train_command
    parser = argparse.ArgumentParser(prog="tflm-caps")
    train_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


@pytest.fixture
def run_cli():
    """``tflm-caps ARGV`` in process; returns the exit status, also for a
    usage error (argparse exits with status 2)."""
    from tflm_caps import cli

    def run(argv):
        try:
            return cli.main(argv)
        except SystemExit as exc:
            return exc.code
    return run


def pytest_report_header(config):
    from support import toolchains
    state = "required (missing ones fail)" if toolchains.toolchains_required() else \
        "optional (missing ones skip)"
    return f"toolchains and emulators: {state}, {toolchains.REQUIRE_ENV}"


@pytest.fixture(scope="session")
def bundled_data():
    from tflm_caps import data
    return data.load("bundled")


@pytest.fixture(scope="session")
def trained_tiny_run(bundled_data, tmp_path_factory):
    from tflm_caps import train
    model, result = train.train("tiny", bundled_data, seed=0, progress=False)
    path = str(tmp_path_factory.mktemp("trained_tiny") / "tiny.keras")
    result.inference_model.save(path)
    return TrainRun(model, result.inference_model, result, {}, path)


@pytest.fixture(scope="session")
def trained_tiny(trained_tiny_run, bundled_data):
    return trained_tiny_run.inference, bundled_data


@pytest.fixture(scope="session")
def trained_tiny_path(trained_tiny_run):
    return trained_tiny_run.path


@pytest.fixture(scope="session")
def trained_costa_mnist_run(bundled_data, tmp_path_factory):
    from tflm_caps.commands import train as train_command
    path = str(tmp_path_factory.mktemp("trained_costa_mnist") / "costa2022-mnist.keras")
    args = train_cli_args(["--model", "costa2022-mnist", "--data", "bundled", "--seed", "0",
                           "--train-eval-samples", "1000", "--out", path, "--no-progress",
                           "--json"])
    model, result, report = train_command.execute(args)
    print(f"\n[fixture] costa2022-mnist trained: {report}", file=sys.stderr)
    return TrainRun(model, result.inference_model, result, report, path)


@pytest.fixture(scope="session")
def trained_costa_mnist(trained_costa_mnist_run, bundled_data):
    return trained_costa_mnist_run.inference, bundled_data


@pytest.fixture(scope="session")
def trained_costa_mnist_path(trained_costa_mnist_run):
    return trained_costa_mnist_run.path
