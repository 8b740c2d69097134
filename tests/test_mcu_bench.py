"""Smoke test of the instruction-count benchmark (`tflm-caps bench`): it
runs, checks bit-exactness on the way, and reports the documented fields.
The numbers themselves are reported, not asserted as timings."""
import json
import sys
from pathlib import Path

import pytest

from tflm_caps import cli

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "firmware"))
import mcu_build  # noqa: E402


@pytest.fixture(autouse=True)
def _source_root(monkeypatch):
    # The benchmark builds from the checkout, wherever the package is installed.
    monkeypatch.setenv("TFLM_CAPS_SOURCE_ROOT", str(REPO))

pytestmark = pytest.mark.emulated


def test_bench_quick_json(capsys):
    missing = mcu_build.missing_tools("cortex-m7")
    if missing:
        pytest.skip(f"toolchain/emulator not installed ({', '.join(missing)})")
    rc = cli.main(["bench", "--quick", "--no-progress", "--json", "-",
                   "--configs", "m7-portable", "m7-cortex_m"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    for r in rows:
        for key in ("target", "backend", "kernel", "shape", "macs", "instructions"):
            assert key in r
    by = {(r["config"], r["layer"], r["kernel"]): r for r in rows}
    layer = "costa2022-mnist"
    port = by[("m7-portable", layer, "class_caps_store")]
    opt = by[("m7-cortex_m", layer, "class_caps_store")]
    assert port["macs"] == opt["macs"] == 1024 * 10 * 6 * 4 + 1024 * 10 * 6 * 5
    assert 0 < opt["instructions"] < port["instructions"]
    assert any(c["check"].endswith(">= 2x fewer than m7-portable") for c in report["checks"])


def test_bench_rejects_unknown_config(capsys):
    assert cli.main(["bench", "--configs", "m9-nothing"]) == 2
    assert "unknown configuration" in capsys.readouterr().err


def test_bench_m55_helium_and_calibration(capsys):
    """M55 rows: the helium backend against the scalar Cortex-M backend on
    the same board, and the SysTick rate measured against a counted loop."""
    missing = mcu_build.missing_tools("cortex-m55")
    if missing:
        pytest.skip(f"toolchain/emulator not installed ({', '.join(missing)})")
    rc = cli.main(["bench", "--quick", "--no-progress", "--json", "-",
                   "--configs", "m55-cortex_m", "m55-helium"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["instructions_per_tick"] == {"cortex-m55": 31.25}
    by = {(r["config"], r["layer"], r["kernel"]): r for r in report["rows"]}
    for layer, kernel in (("costa2022-mnist", "class_caps_store"), ("squash 1024x4", "squash")):
        scalar = by[("m55-cortex_m", layer, kernel)]
        helium = by[("m55-helium", layer, kernel)]
        assert helium["backend"] == "helium" and helium["target"] == "cortex-m55"
        assert 0 < helium["instructions"] < scalar["instructions"]
    assert any(c["check"].startswith("m55-helium squash 1024x4") for c in report["checks"])
