"""Bad models for the capsule operators: every case is a clear TFLMError
naming the op, the tensor or option and what was expected, never a crash.

All cases are loaded in one subprocess (a native crash fails the test
instead of killing pytest); the parent checks each message."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tflm_caps.reference import int8 as ref, quant as q

from support.model_builder import (TensorSpec, class_caps_model, class_caps_options,
                                   length_model, random_class_caps, single_op_model,
                                   squash_model)


def _cases():
    w_q, quant = random_class_caps(5, 16, 4, 3, 4)
    opts = class_caps_options(quant)
    x = TensorSpec("x", (1, 4, 8), "int8", scale=0.05, zero_point=1)
    v = TensorSpec("v", (1, 4, 8), "int8", scale=1 / 128, zero_point=0)
    u = TensorSpec("u", (1, 16, 4), "int8", scale=1 / 128, zero_point=0)
    w = TensorSpec("W", (16, 4, 3, 4), "int8", scale=list(quant.weight_scales), zero_point=0,
                   quantized_dimension=1, data=w_q)
    vc = TensorSpec("v", (1, 4, 3), "int8", scale=1 / 128, zero_point=0)

    # Squash gain tables for dim 8: the right one for scale 0.05, zero point
    # 0; the same size for zero point -1 and for another scale.
    table = ref.squash_table(8, q.squash_params(0.05, 0))
    table_zp = ref.squash_table(8, q.squash_params(0.05, -1))
    table_scale = ref.squash_table(8, q.squash_params(0.06, 0))
    assert table_zp.size == table.size == table_scale.size

    def without(key):
        return {k: val for k, val in opts.items() if k != key}

    cases = {
        "squash_version": (squash_model((1, 4, 8), 0.05, 0, options={"version": 3}),
                           ["TFLMCaps_Squash", "options version 3", "reads versions 1 to 2"]),
        "squash_no_options": (single_op_model("TFLMCaps_Squash", [x], [v], b""),
                              ["TFLMCaps_Squash", "custom options are missing", "version"]),
        "squash_garbage_options": (single_op_model("TFLMCaps_Squash", [x], [v],
                                                   b"\x07\x00\x99\x02"),
                                   ["TFLMCaps_Squash", "not a valid FlexBuffer map"]),
        "squash_no_version": (squash_model((1, 4, 8), 0.05, 0, options={"other": 1}),
                              ["TFLMCaps_Squash", "option 'version' is missing"]),
        "squash_float_input": (single_op_model(
            "TFLMCaps_Squash", [TensorSpec("x", (1, 4, 8), "float32")], [v], {"version": 1}),
            ["TFLMCaps_Squash", "input 0 (x) must be int8, got float32"]),
        "squash_rank": (single_op_model(
            "TFLMCaps_Squash", [TensorSpec("x", (4, 8), "int8", scale=0.1, zero_point=0)],
            [TensorSpec("v", (4, 8), "int8", scale=1 / 128, zero_point=0)], {"version": 1}),
            ["TFLMCaps_Squash", "input 0 (x) must have rank 3, got rank 2"]),
        "squash_out_scale": (single_op_model(
            "TFLMCaps_Squash", [x], [TensorSpec("v", (1, 4, 8), "int8", scale=0.01,
                                                zero_point=0)], {"version": 1}),
            ["TFLMCaps_Squash", "output 0 (v)", "fixed quantization scale 0.0078125"]),
        "squash_out_shape": (single_op_model(
            "TFLMCaps_Squash", [x], [TensorSpec("v", (1, 4, 7), "int8", scale=1 / 128,
                                                zero_point=0)], {"version": 1}),
            ["TFLMCaps_Squash", "output 0 (v) must have shape [1, 4, 8], got [1, 4, 7]"]),
        "squash_per_channel_input": (single_op_model(
            "TFLMCaps_Squash", [TensorSpec("x", (1, 2, 8), "int8", scale=[0.1, 0.2],
                                           zero_point=[0, 0], quantized_dimension=1)],
            [TensorSpec("v", (1, 2, 8), "int8", scale=1 / 128, zero_point=0)], {"version": 1}),
            ["TFLMCaps_Squash", "must be quantized per tensor (1 scale), got 2 scales"]),
        "squash_unquantized": (single_op_model(
            "TFLMCaps_Squash", [TensorSpec("x", (1, 4, 8), "int8")], [v], {"version": 1}),
            ["TFLMCaps_Squash", "input 0 (x) must have affine"]),
        "squash_two_inputs": (single_op_model("TFLMCaps_Squash", [x, x], [v], {"version": 1}),
                              ["TFLMCaps_Squash", "expected 1 input(s) and 1 output(s), got 2"]),
        "squash_table_missing": (squash_model((1, 4, 8), 0.05, 0, table=None),
                                 ["TFLMCaps_Squash", "expected 2 input(s)", "got 1"]),
        "squash_table_type": (squash_model((1, 4, 8), 0.05, 0, table=table.astype(np.float32)),
                              ["TFLMCaps_Squash", "input 1 (gain table) must be int32, got "
                               "float32"]),
        "squash_table_size": (squash_model((1, 4, 8), 0.05, 0, table=table[:-1]),
                              ["TFLMCaps_Squash", f"input 1 (gain table) must have shape "
                               f"[{table.size}], got [{table.size - 1}]"]),
        "squash_table_other_zero_point": (
            squash_model((1, 4, 8), 0.05, 0, table=table_zp),
            ["TFLMCaps_Squash", "input 1 (gain table) was not written for this op",
             "capsule dim 8, input zero point 0", "convert the model again"]),
        "squash_table_other_scale": (
            squash_model((1, 4, 8), 0.05, 0, table=table_scale),
            ["TFLMCaps_Squash", "input 1 (gain table) was not written for this op"]),
        "squash_table_bad_magic": (
            squash_model((1, 4, 8), 0.05, 0,
                         table=np.concatenate([[0], table[1:]]).astype(np.int32)),
            ["TFLMCaps_Squash", "input 1 (gain table) was not written for this op"]),
        "squash_table_not_constant": (single_op_model(
            "TFLMCaps_Squash", [x, TensorSpec("gain_table", table.shape, "int32")], [v],
            {"version": 2}),
            ["TFLMCaps_Squash", "input 1 (gain table) must be a constant tensor"]),
        "length_out_zero_point": (single_op_model(
            "TFLMCaps_Length", [x], [TensorSpec("l", (1, 4), "int8", scale=1 / 256,
                                                zero_point=0)], {"version": 1}),
            ["TFLMCaps_Length", "output 0 (length)", "zero point -128", "zero point 0"]),
        "length_version": (length_model((1, 4, 8), 0.05, 0, options={"version": 0}),
                           ["TFLMCaps_Length", "options version 0"]),
        "caps_missing_s_scales": (class_caps_model(1, w_q, quant, options=without("s_scales")),
                                  ["TFLMCaps_ClassCaps", "option 's_scales' is missing"]),
        "caps_missing_b_scales": (class_caps_model(1, w_q, quant, options=without("b_scales")),
                                  ["TFLMCaps_ClassCaps", "option 'b_scales' is missing"]),
        "caps_missing_u_hat_scale": (
            class_caps_model(1, w_q, quant, options=without("u_hat_scale")),
            ["TFLMCaps_ClassCaps", "option 'u_hat_scale' is missing"]),
        "caps_missing_num_routing": (
            class_caps_model(1, w_q, quant, options=without("num_routing")),
            ["TFLMCaps_ClassCaps", "option 'num_routing' is missing"]),
        "caps_short_s_scales": (class_caps_model(1, w_q, quant,
                                                 options={**opts, "s_scales": [0.1, 0.2]}),
                                ["TFLMCaps_ClassCaps", "'s_scales' must hold 3 scales, got 2"]),
        "caps_negative_scale": (class_caps_model(1, w_q, quant,
                                                 options={**opts, "u_hat_scale": -0.5}),
                                ["TFLMCaps_ClassCaps", "'u_hat_scale' must be a positive"]),
        "caps_zero_s_scale": (class_caps_model(1, w_q, quant,
                                               options={**opts, "s_scales": [0.1, 0.0, 0.2]}),
                              ["TFLMCaps_ClassCaps", "'s_scales'[1] must be a positive"]),
        "caps_routings_range": (class_caps_model(1, w_q, quant,
                                                 options={**opts, "num_routing": 9}),
                                ["TFLMCaps_ClassCaps", "'num_routing' = 9 is outside [1, 8]"]),
        "caps_scale_wrong_type": (class_caps_model(1, w_q, quant,
                                                   options={**opts, "u_hat_scale": "big"}),
                                  ["TFLMCaps_ClassCaps", "'u_hat_scale' has the wrong type"]),
        "caps_version": (class_caps_model(1, w_q, quant, options={**opts, "version": 7}),
                         ["TFLMCaps_ClassCaps", "options version 7"]),
        "caps_weights_not_constant": (single_op_model(
            "TFLMCaps_ClassCaps",
            [u, TensorSpec("W", (16, 4, 3, 4), "int8", scale=0.01, zero_point=0)], [vc], opts),
            ["TFLMCaps_ClassCaps", "input 1 (W) must be a constant tensor"]),
        "caps_weights_asymmetric": (single_op_model(
            "TFLMCaps_ClassCaps",
            [u, TensorSpec("W", (16, 4, 3, 4), "int8", scale=0.01, zero_point=3, data=w_q)],
            [vc], opts),
            ["TFLMCaps_ClassCaps", "input 1 (W) must be symmetric", "zero point 3"]),
        "caps_weights_shape": (single_op_model(
            "TFLMCaps_ClassCaps",
            [TensorSpec("u", (1, 16, 5), "int8", scale=1 / 128, zero_point=0), w], [vc], opts),
            ["TFLMCaps_ClassCaps", "input 1 (W)", "must have shape [16, 4, 3, 5], got "
             "[16, 4, 3, 4]"]),
        "caps_output_shape": (single_op_model(
            "TFLMCaps_ClassCaps", [u, w],
            [TensorSpec("v", (1, 3, 4), "int8", scale=1 / 128, zero_point=0)], opts),
            ["TFLMCaps_ClassCaps", "output 0 (v)", "[1, 4, 3], got [1, 3, 4]"]),
        "caps_weight_scale_count": (single_op_model(
            "TFLMCaps_ClassCaps",
            [u, TensorSpec("W", (16, 4, 3, 4), "int8", scale=[0.01, 0.02, 0.03],
                           zero_point=0, quantized_dimension=2, data=w_q)], [vc], opts),
            ["TFLMCaps_ClassCaps", "input 1 (W) must have 1 or N_out = 4 scales, got 3"]),
        "caps_missing_weights_input": (single_op_model("TFLMCaps_ClassCaps", [u], [vc], opts),
                                       ["TFLMCaps_ClassCaps", "expected 2 input(s)"]),
        "caps_weights_int16": (single_op_model(
            "TFLMCaps_ClassCaps",
            [u, TensorSpec("W", (16, 4, 3, 4), "int16", scale=0.01, zero_point=0, data=w_q)],
            [vc], opts),
            ["TFLMCaps_ClassCaps", "input 1 (W) must be int8 or int4", "got int16"]),
        "caps_int4_weights_odd_block": (single_op_model(
            "TFLMCaps_ClassCaps",
            [TensorSpec("u", (1, 16, 3), "int8", scale=1 / 128, zero_point=0),
             TensorSpec("W", (16, 3, 3, 3), "int4", scale=0.1, zero_point=0,
                        data=np.zeros((16, 3, 3, 3), np.int8))],
            [TensorSpec("v", (1, 3, 3), "int8", scale=1 / 128, zero_point=0)], opts),
            ["TFLMCaps_ClassCaps", "int4 input 1 (W) needs N_out*D_out*D_in even",
             "3*3*3", "store W as int8"]),
    }
    return cases


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_models")
    cases = _cases()
    for name, (model, _) in cases.items():
        (folder / f"{name}.tflite").write_bytes(model)
    code = textwrap.dedent("""
        import json, os, sys
        from tflm_caps.runtime import TFLMRunner, TFLMError
        folder = sys.argv[1]
        out = {}
        for fn in sorted(os.listdir(folder)):
            try:
                TFLMRunner(os.path.join(folder, fn))
                out[fn[:-7]] = ["loaded", ""]
            except Exception as exc:
                out[fn[:-7]] = [type(exc).__name__, str(exc)]
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"a bad model crashed the interpreter:\n{proc.stderr[-3000:]}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: (got[name], expected) for name, (_, expected) in cases.items()}


@pytest.mark.parametrize("case", sorted(_cases()))
def test_bad_model_is_a_clear_error(outcomes, case):
    (kind, message), expected = outcomes[case]
    assert kind == "TFLMError", f"{case}: expected TFLMError, got {kind}: {message}"
    for fragment in expected:
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"


def test_each_error_reaches_python_once(outcomes):
    """The op's message appears in the exception exactly once (not duplicated
    by the captured stderr copy) and TFLM's own node line is kept."""
    (_, message), _ = outcomes["squash_version"]
    assert message.count("options version 3") == 1
    assert "failed to prepare" in message


def test_good_model_still_loads_after_errors():
    """Errors leave no state behind: the same process then runs a good model."""
    from tflm_caps.runtime import TFLMError, TFLMRunner

    with pytest.raises(TFLMError):
        TFLMRunner(squash_model((1, 2, 2), 0.1, 0, options={"version": 3}))
    y = TFLMRunner(squash_model((1, 2, 2), 0.1, 0)).predict(np.zeros((1, 2, 2), np.int8))
    assert not y.any()
