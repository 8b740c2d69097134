"""The CLI's shared conventions: ``--json`` and ``--verbose`` in every
sub-command, one line for a user error, a traceback for a bug."""
import argparse
import importlib
import subprocess
import sys

import pytest

from tflm_caps import cli
from tflm_caps.commands import options
from tflm_caps.commands.errors import CliError, user_error_types

CONVENTIONAL = list(cli.COMMANDS)


def _sub_parser(name):
    parser = argparse.ArgumentParser(prog="tflm-caps")
    return importlib.import_module(f"tflm_caps.commands.{name}").add_parser(
        parser.add_subparsers())


@pytest.mark.parametrize("name", CONVENTIONAL)
def test_json_and_verbose_are_flags_everywhere(name):
    actions = _sub_parser(name)._option_string_actions
    for flag in ("--json", "--verbose"):
        action = actions[flag]
        assert action.nargs == 0 and action.const is True and action.default is False, flag
    for flag, default in (("--data", "bundled"), ("--seed", 0), ("--no-progress", False)):
        if flag in actions:  # the shared definition, not a per-command copy
            assert actions[flag].default == default


def test_report_is_the_file_option():
    for name in ("validate", "demo"):
        assert _sub_parser(name)._option_string_actions["--report"].nargs is None


def test_argument_types():
    assert options.positive_int("3") == 3 and options.non_negative_int("0") == 0
    assert options.positive_float("0.5") == 0.5 and options.fraction("1") == 1.0
    for func, text in ((options.positive_int, "0"), (options.non_negative_int, "-1"),
                       (options.positive_float, "0"), (options.positive_float, "nan"),
                       (options.fraction, "1.5")):
        with pytest.raises(argparse.ArgumentTypeError):
            func(text)
    args = argparse.Namespace(json=True, no_progress=False)
    assert options.show_progress(args) is False
    assert options.show_progress(argparse.Namespace(json=False, no_progress=False)) is True


def test_user_error_types_are_the_projects_classes():
    from tflm_caps.converter import ConversionError
    from tflm_caps.data import DataError
    from tflm_caps.runtime import ArenaTooSmallError, ModelFormatError, TFLMError

    types = user_error_types()
    for cls in (CliError, ConversionError, DataError, ModelFormatError, ArenaTooSmallError,
                TFLMError, FileNotFoundError):
        assert cls in types
    assert ValueError not in types and RuntimeError not in types


def _raising(exc):
    def run(args):
        raise exc
    return run


@pytest.mark.parametrize("exc", [CliError("bad --thing"), FileNotFoundError("no such file: x")])
def test_user_error_is_one_line(monkeypatch, capsys, exc):
    from tflm_caps.commands import zoo
    monkeypatch.setattr(zoo, "run", _raising(exc))
    assert cli.main(["zoo"]) == 2
    err = capsys.readouterr().err
    assert err == f"tflm-caps zoo: error: {exc}\n"


def test_data_error_is_a_user_error(tmp_path, capsys):
    assert cli.main(["train", "--model", "tiny", "--out", str(tmp_path / "m.keras"),
                     "--data", f"idx:{tmp_path}/none"]) == 2
    assert "tflm-caps train: error:" in capsys.readouterr().err


def test_verbose_adds_the_traceback(monkeypatch, capsys):
    from tflm_caps.commands import zoo
    monkeypatch.setattr(zoo, "run", _raising(CliError("bad --thing")))
    assert cli.main(["zoo", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("tflm-caps zoo: error: bad --thing\n")


@pytest.mark.parametrize("exc", [ValueError("operands could not be broadcast"),
                                 KeyError("missing"), RuntimeError("internal")])
def test_a_bug_keeps_its_traceback(monkeypatch, exc):
    from tflm_caps.commands import zoo
    monkeypatch.setattr(zoo, "run", _raising(exc))
    with pytest.raises(type(exc)):
        cli.main(["zoo"])


def test_module_entry_point_reports_user_errors():
    """`python -m tflm_caps.cli` raises the same CliError class the commands use."""
    proc = subprocess.run([sys.executable, "-m", "tflm_caps.cli", "zoo", "--model", "bogus"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("tflm-caps zoo: error: unknown model(s) bogus")
    assert proc.stdout == ""
