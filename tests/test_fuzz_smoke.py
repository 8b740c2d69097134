"""The native fuzz harnesses (tests/fuzz, docs/fuzzing.md) in CI.

- every committed corpus input (seeds and reproducers of fixed findings)
  replays clean under gcc's AddressSanitizer + UBSan, without libFuzzer;
- each libFuzzer harness (clang, ASan + UBSan) fuzzes from its committed
  corpus for a short fixed budget and finds nothing.

clang missing: the libFuzzer tests skip, unless TFLM_CAPS_REQUIRE_TOOLCHAINS=1
asks for every toolchain, then they fail.
"""
import importlib.util
import os
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
# seconds of fuzzing per harness: the three together stay under two
# minutes of CPU
SMOKE_SECONDS = 30


def _load_fuzz_module():
    spec = importlib.util.spec_from_file_location("tflm_caps_fuzz", FUZZ_DIR / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz_module()


def _missing(message):
    """Skip, or fail when TFLM_CAPS_REQUIRE_TOOLCHAINS=1 asks for every toolchain."""
    if os.environ.get("TFLM_CAPS_REQUIRE_TOOLCHAINS") == "1":
        pytest.fail(message + " (TFLM_CAPS_REQUIRE_TOOLCHAINS=1)")
    pytest.skip(message)


def _build(name, mode, build_dir):
    try:
        return fuzz.build(name, mode, build_dir)
    except fuzz.ToolchainMissing as exc:
        _missing(str(exc))


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-build")


def test_every_harness_has_a_corpus_with_seeds():
    for name in fuzz.HARNESSES:
        files = sorted(p.name for p in (fuzz.CORPUS / name).iterdir())
        assert any(f.startswith("seed-") for f in files), name
        assert all(f.startswith(("seed-", "regress-")) for f in files), \
            f"{name}: corpus files must be seed-* or regress-*: {files}"


@pytest.mark.parametrize("name", fuzz.HARNESSES)
def test_committed_corpus_replays_clean_under_gcc_sanitizers(name, build_dir):
    _build(name, "replay", build_dir)
    res = fuzz.replay(name, [fuzz.CORPUS / name], build_dir)
    count = len(list((fuzz.CORPUS / name).iterdir()))
    assert res.returncode == 0, res.stdout + res.stderr[-6000:]
    assert "runtime error" not in res.stderr and "Sanitizer" not in res.stderr, \
        res.stderr[-6000:]
    assert f"replayed {count} inputs" in res.stdout


@pytest.mark.parametrize("name", fuzz.HARNESSES)
def test_libfuzzer_harness_finds_nothing_in_a_short_run(name, build_dir, tmp_path):
    exe = _build(name, "fuzz", build_dir)
    result = fuzz.run(name, exe, tmp_path, seconds=SMOKE_SECONDS, seed=1)
    print(result.summary())
    assert result.findings == 0, f"{result.summary()}\n{result.log[-8000:]}"
    # it really fuzzed: the corpus replayed and new inputs ran
    assert result.inputs >= 1000, result.summary()
