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
    assert any(c["check"].endswith(">= 2x fewer than portable") for c in report["checks"])
    # the same layer with packed int4 weights, and its cost against int8
    s4 = by[("m7-cortex_m", layer + " int4", "class_caps_store_s4")]
    assert s4["macs"] == opt["macs"] and s4["instructions"] > 0
    ratios = {(r["config"], r["kernel"]): r["ratio"] for r in report["int4_ratios"]
              if r["layer"] == layer}
    assert ratios[("m7-cortex_m", "class_caps_store")] == \
        pytest.approx(s4["instructions"] / opt["instructions"], abs=1e-3)


def test_bench_rejects_unknown_config(capsys):
    assert cli.main(["bench", "--configs", "m9-nothing"]) == 2
    assert "unknown configuration" in capsys.readouterr().err
