"""The Efficient-CapsNet operators in TFLM (one-op models, AddCapsOps): bit for
bit the numpy int8 reference, and every bad model a clear TFLMError."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from support.model_builder import (TensorSpec, efficient_squash_model, self_attention_model,
                                   self_attention_options, self_attention_tensors,
                                   single_op_model)
from tflm_caps import ops_contract as C
from tflm_caps.reference import float_ref
from tflm_caps.reference import int8 as ref
from tflm_caps.reference import quant as q
from tflm_caps.runtime import TFLMRunner

SQUASH_CASES = [  # (model batch, N, D, scale, zero point)
    (1, 16, 8, 0.02, 0),
    (2, 5, 16, 1.7, 100),
    (3, 1, 1, 1e-4, -128),
    (1, 3, 300, 0.005, 12),
]


@pytest.mark.parametrize("batch,n,d,scale,zp", SQUASH_CASES)
def test_efficient_squash_bit_exact(batch, n, d, scale, zp):
    rng = np.random.default_rng(n * d + 1)
    x = rng.integers(-128, 128, (4 * batch, n, d)).astype(np.int8)
    x[0, 0], x[-1, 0] = -128, zp  # an extreme capsule and one at the zero point
    y = TFLMRunner(efficient_squash_model((batch, n, d), scale, zp)).predict(
        x, dequantize=False)
    np.testing.assert_array_equal(y, ref.efficient_squash_s8(x, q.efficient_squash_params(
        scale, zp)))
    assert not y[-1, 0].any()


def _problem(seed, n_in, d_in, n_out, d_out, per_capsule, bias_std=0.2):
    rng = np.random.default_rng(seed)
    u = float_ref.efficient_squash(rng.normal(size=(24, n_in, d_in)) * 2.0)
    w = rng.normal(size=(n_in, n_out, d_out, d_in)) / np.sqrt(d_in)
    w[:, 0] *= 3.0  # per-capsule scales differ
    b = rng.normal(0, bias_std, (n_in, n_out))
    quant = q.calibrate_self_attention(u, w, b, 1 / 128, 0, per_capsule=per_capsule)
    return (q.quantize(u, 1 / 128), q.quantize_weights(w, quant.weight_scales),
            q.quantize_attention_bias(b), quant)


@pytest.mark.parametrize("batch,n_in,d_in,n_out,d_out,per_capsule,bias_std", [
    (1, 16, 8, 10, 16, False, 0.2),    # Efficient-CapsNet MNIST
    (3, 16, 8, 10, 16, True, 0.2),
    (2, 300, 4, 5, 128, True, 3.0),    # acc shift p = 1, D_out at its limit, bias q = 2
    (1, 1, 1, 1, 1, False, 0.0),
])
def test_self_attention_bit_exact(batch, n_in, d_in, n_out, d_out, per_capsule, bias_std):
    u, w_q, b_q, quant = _problem(n_in + d_out, n_in, d_in, n_out, d_out, per_capsule,
                                  bias_std)
    runner = TFLMRunner(self_attention_model(batch, w_q, b_q, quant))
    y = runner.predict(u, dequantize=False)
    dims = q.ClassCapsDims(n_in, d_in, n_out, d_out)
    expected = ref.self_attention_s8(u, w_q, b_q, q.self_attention_params(dims, quant, b_q))
    assert y.dtype == np.int8 and y.shape == (24, n_out, d_out)
    np.testing.assert_array_equal(y, expected)


# ----------------------------------------------------------------------------
# Bad models: clear errors (loaded in a subprocess, so a crash fails the test)
# ----------------------------------------------------------------------------

def _cases():
    _, w_q, b_q, quant = _problem(7, 16, 8, 10, 16, True)
    u, w, b, v = self_attention_tensors(1, w_q, b_q, quant)
    opts = self_attention_options(quant)
    op = C.SELF_ATTENTION_CAPS

    def bias(**changes):
        spec = dict(name="b", shape=(16, 10), dtype="int32", scale=C.ATTENTION_BIAS_SCALE,
                    zero_point=0, data=b_q)
        spec.update(changes)
        return TensorSpec(**spec)

    big = b_q.copy()
    big[3, 4] = C.MAX_ATTENTION_BIAS + 1
    w_wide = TensorSpec("W", (16, 10, 129, 8), "int8", scale=0.01, zero_point=0,
                        data=np.zeros((16, 10, 129, 8)))
    v_wide = TensorSpec("v", (1, 10, 129), "int8", scale=1 / 128, zero_point=0)
    x = TensorSpec("x", (1, 4, 8), "int8", scale=0.05, zero_point=1)
    return {
        "attention_no_s_scale": (single_op_model(op, [u, w, b], [v], {
            k: val for k, val in opts.items() if k != C.OPT_S_SCALE}),
            [op, "option 's_scale' is missing"]),
        "attention_version": (single_op_model(op, [u, w, b], [v],
                                              {**opts, "version": C.OPTIONS_VERSION + 1}),
                              [op, f"options version {C.OPTIONS_VERSION + 1}"]),
        "attention_bad_scale": (single_op_model(op, [u, w, b], [v], {
            **opts, C.OPT_U_HAT_SCALE: -1.0}), [op, "'u_hat_scale' must be a positive"]),
        "attention_two_inputs": (single_op_model(op, [u, w], [v], opts),
                                 [op, "expected 3 input(s) and 1 output(s), got 2"]),
        "attention_float_bias": (single_op_model(op, [u, w, bias(dtype="float32", scale=None,
                                                                 data=b_q * 2.0 ** -15)],
                                                 [v], opts),
                                 [op, "input 2 (bias) must be int32, got float32"]),
        "attention_bias_scale": (single_op_model(op, [u, w, bias(scale=0.001)], [v], opts),
                                 [op, "input 2 (bias)", "fixed quantization scale 3.05"]),
        "attention_bias_shape": (single_op_model(op, [u, w, bias(shape=(10, 16),
                                                                 data=b_q.T)], [v], opts),
                                 [op, "input 2 (bias) [N_in, N_out] must have shape [16, 10]"]),
        "attention_bias_not_constant": (single_op_model(op, [u, w, bias(data=None)], [v], opts),
                                        [op, "input 2 (bias) must be a constant"]),
        "attention_bias_range": (single_op_model(op, [u, w, bias(data=big)], [v], opts),
                                 [op, "input 2 (bias) value 16777217", "|b| <= 512"]),
        "attention_dim_out": (single_op_model(op, [u, w_wide, bias()], [v_wide], opts),
                              [op, "D_out=129", "D_out <= 128"]),
        "attention_w_not_constant": (single_op_model(op, [u, TensorSpec(
            "W", (16, 10, 16, 8), "int8", scale=0.01, zero_point=0), b], [v], opts),
            [op, "input 1 (W) must be a constant"]),
        "attention_out_scale": (single_op_model(op, [u, w, b], [TensorSpec(
            "v", (1, 10, 16), "int8", scale=0.01, zero_point=0)], opts),
            [op, "output 0 (v)", "fixed quantization scale 0.0078125"]),
        "efficient_squash_version": (efficient_squash_model((1, 4, 8), 0.05, 0,
                                                            options={"version": 5}),
                                     [C.EFFICIENT_SQUASH, "options version 5"]),
        "efficient_squash_out_zero_point": (single_op_model(C.EFFICIENT_SQUASH, [x], [
            TensorSpec("v", (1, 4, 8), "int8", scale=1 / 128, zero_point=3)], {"version": 1}),
            [C.EFFICIENT_SQUASH, "output 0 (v)", "zero point 0"]),
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_efficient_models")
    cases = _cases()
    for name, (model, _) in cases.items():
        (folder / f"{name}.tflite").write_bytes(model)
    code = textwrap.dedent("""
        import json, os, sys
        from tflm_caps.runtime import TFLMRunner
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
