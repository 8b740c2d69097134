"""The operator contract is written once per language and both agree.

Python: ``tflm_caps.ops_contract``.  C: the constants of
``tflm_caps_ops/tflm/caps_ops.h`` and the limit macros of
``include/tflm_caps/caps_nn_types.h``, read from the headers' text.  The
glue sources and the package must use those constants rather than their own
copies of the values.
"""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

from support.c_sources import read_constexprs, read_header_defines
from tflm_caps import ops_contract as C

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "tflm_caps_ops"


@pytest.fixture(scope="module")
def macros():
    return read_header_defines((OPS / "include" / "tflm_caps" / "caps_nn_types.h").read_text())


@pytest.fixture(scope="module")
def constants(macros):
    """{name: value} of the constexpr constants of caps_ops.h, evaluated."""
    return {name: _evaluate(text, macros)
            for name, text in read_constexprs((OPS / "tflm" / "caps_ops.h").read_text()).items()}


def _evaluate(text, macros):
    """Value of a constant's initializer: a string literal, or integer/float
    arithmetic on literals and caps_nn_types.h macros."""
    if text.startswith('"'):
        return ast.literal_eval(text)
    expr = re.sub(r"\b[A-Z][A-Z0-9_]+\b", lambda m: f"({macros[m.group(0)]})", text)
    expr = re.sub(r"\b(\d+\.\d*|\d*\.\d+)f\b", r"\1", expr)
    assert re.fullmatch(r"[\d\s.+\-*/()<>]+", expr), f"cannot evaluate {text!r}"
    return eval(expr, {"__builtins__": {}})  # noqa: S307 - digits and operators only


def _snake(camel):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def test_op_names(constants):
    assert (constants["kSquashOpName"], constants["kClassCapsOpName"],
            constants["kLengthOpName"], constants["kEfficientSquashOpName"],
            constants["kSelfAttentionCapsOpName"]) == (
        C.SQUASH, C.CLASS_CAPS, C.LENGTH, C.EFFICIENT_SQUASH, C.SELF_ATTENTION_CAPS)
    c_names = {v for k, v in constants.items() if k.endswith("OpName")}
    assert c_names == set(C.CUSTOM_OPS) and constants["kNumCapsOps"] == len(C.CUSTOM_OPS)
    assert all(name.startswith(C.OP_PREFIX) for name in C.CUSTOM_OPS)
    assert set(C.OUTPUT_QUANT) == set(C.OPTION_KEYS) == set(C.CUSTOM_OPS)
    header = (OPS / "tflm" / "caps_ops.h").read_text()
    assert header.count("resolver.AddCustom(") == len(C.CUSTOM_OPS)


def test_options_version_and_keys(constants):
    assert constants["kOptionsVersion"] == C.OPTIONS_VERSION
    assert constants["kMinOptionsVersion"] == C.MIN_OPTIONS_VERSION
    assert constants["kSquashTableVersion"] == C.SQUASH_TABLE_VERSION
    assert C.MIN_OPTIONS_VERSION < C.SQUASH_TABLE_VERSION <= C.OPTIONS_VERSION
    c_keys = {_snake(name[len("kOption"):]): value for name, value in constants.items()
              if name.startswith("kOption") and name != "kOptionsVersion"}
    py_keys = {name[len("OPT_"):]: getattr(C, name) for name in dir(C) if name.startswith("OPT_")}
    assert c_keys == py_keys
    assert set(py_keys.values()) == set().union(*C.OPTION_KEYS.values())
    assert set(C.CALIBRATED_KEYS) <= set().union(*C.OPTION_KEYS.values())


def test_fixed_output_quantization(constants, macros):
    squash = (constants["kSquashOutputScale"], constants["kSquashOutputZeroPoint"])
    length = (constants["kLengthOutputScale"], constants["kLengthOutputZeroPoint"])
    assert squash == C.OUTPUT_QUANT[C.SQUASH] == C.OUTPUT_QUANT[C.CLASS_CAPS]
    assert length == C.OUTPUT_QUANT[C.LENGTH]
    assert squash == C.OUTPUT_QUANT[C.EFFICIENT_SQUASH] == C.OUTPUT_QUANT[C.SELF_ATTENTION_CAPS]
    assert (constants["kAttentionBiasScale"], constants["kAttentionBiasZeroPoint"]) == (
        C.ATTENTION_BIAS_SCALE, C.ATTENTION_BIAS_ZERO_POINT)
    assert 2.0 ** macros["CAPS_NN_ATTENTION_BIAS_SCALE_LOG2"] == C.ATTENTION_BIAS_SCALE
    # The kernels' power-of-two form, and exact in float32 as TFLite stores scales.
    assert 2.0 ** macros["CAPS_NN_SQUASH_OUT_SCALE_LOG2"] == C.SQUASH_OUT_SCALE
    assert 2.0 ** macros["CAPS_NN_LENGTH_OUT_SCALE_LOG2"] == C.LENGTH_OUT_SCALE
    assert macros["CAPS_NN_LENGTH_OUT_ZERO_POINT"] == C.LENGTH_OUT_ZERO_POINT
    for scale, _ in C.OUTPUT_QUANT.values():
        assert float(np.float32(scale)) == scale


def test_limits(constants, macros):
    assert constants["kMinRoutings"] == C.MIN_ROUTINGS == 1
    assert macros["CAPS_NN_MAX_ROUTINGS"] == C.MAX_ROUTINGS
    assert macros["CAPS_NN_MAX_CAPS_DIM"] == C.MAX_CAPS_DIM
    assert macros["CAPS_NN_MAX_DIM_IN"] == C.MAX_DIM_IN
    assert macros["CAPS_NN_MAX_N_IN"] == C.MAX_N_IN
    assert macros["CAPS_NN_MAX_N_OUT"] == C.MAX_N_OUT
    assert macros["CAPS_NN_MAX_ATTENTION_DIM_OUT"] == C.MAX_ATTENTION_DIM_OUT
    assert macros["CAPS_NN_MAX_ATTENTION_BIAS"] == C.MAX_ATTENTION_BIAS
    assert constants["kInt4WeightBlockMultiple"] == macros["CAPS_NN_S4_BLOCK_MULTIPLE"] == \
        C.INT4_W_BLOCK_MULTIPLE == 2
    assert C.CLASS_CAPS_WEIGHT_BITS == (8, 4)


def test_squash_table_layout(macros):
    assert int(str(macros["CAPS_NN_SQUASH_TABLE_MAGIC"]), 0) == C.SQUASH_TABLE_MAGIC
    assert macros["CAPS_NN_SQUASH_TABLE_HEADER_WORDS"] == C.SQUASH_TABLE_HEADER_WORDS


def _string_literals(text):
    return set(re.findall(r'"((?:[^"\\\n]|\\.)*)"', text))


def test_glue_uses_the_header_constants():
    """No op name, option key or fixed scale written again in the glue sources."""
    own = set(C.CUSTOM_OPS) | set().union(*C.OPTION_KEYS.values())
    for path in sorted((OPS / "tflm").glob("*.cc")):
        text = path.read_text()
        assert not own & _string_literals(text), path.name
        assert not re.search(r"1\.0f?\s*/\s*(128|256)", text), path.name


def test_package_uses_the_python_contract():
    """Op names appear as literals only in ops_contract.py."""
    names = set(C.CUSTOM_OPS)
    package = ROOT / "python" / "tflm_caps"
    sources = sorted(package.rglob("*.py")) + sorted((ROOT / "converter_patches").glob("*.py"))
    assert len(sources) > 10
    for path in sources:
        if path.name == "ops_contract.py":
            continue
        assert not names & _string_literals(path.read_text()), path
