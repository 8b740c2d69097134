"""Packed int4 weights in TFLM: TFLMCaps_ClassCaps with an INT4 W equals
the numpy reference bit for bit."""
import numpy as np
import pytest

from support.model_builder import class_caps_model
from tflm_caps import reference as ref
from tflm_caps.reference import quant as q
from tflm_caps.runtime import TFLMRunner


def _int4_problem(seed, n_in, d_in, n_out, d_out, routings, per_capsule):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5 / np.sqrt(d_in), (n_in, n_out, d_out, d_in))
    w[:, 0] *= 3.0
    u = rng.normal(0, 0.4, (12, n_in, d_in))
    u = u / (1 + np.linalg.norm(u, axis=-1, keepdims=True))
    quant = q.calibrate_class_caps(u[:8], w, routings, 1 / 128, 0, per_capsule=per_capsule,
                                   weight_bits=4)
    w_q = q.quantize_weights(w, quant.weight_scales, bits=4)
    return q.quantize(u, 1 / 128), w_q, quant


INT4_CASES = [  # (n_in, d_in, n_out, d_out, routings, per_capsule, store, batch)
    (64, 4, 10, 6, 3, True, True, 1),
    (64, 4, 10, 6, 3, False, False, 2),
    (40, 8, 10, 16, 3, True, True, 1),
    (21, 3, 4, 2, 2, True, False, 1),
]


@pytest.mark.parametrize("n_in,d_in,n_out,d_out,routings,per_capsule,store,batch", INT4_CASES)
def test_class_caps_int4_weights_bit_exact(n_in, d_in, n_out, d_out, routings, per_capsule,
                                           store, batch):
    u_q, w_q, quant = _int4_problem(n_in + d_out, n_in, d_in, n_out, d_out, routings,
                                    per_capsule)
    params = q.class_caps_params(q.ClassCapsDims(n_in, d_in, n_out, d_out), quant)
    model = class_caps_model(batch, w_q, quant, store_predictions=store, weight_dtype="int4")
    runner = TFLMRunner(model)
    w_info = runner.info.tensors[runner.info.operators[0].inputs[1]]
    assert w_info.type_name == "int4" and len(w_info.data) == w_q.size // 2
    np.testing.assert_array_equal(q.unpack_int4(w_info.data, w_q.shape), w_q)
    y = runner.predict(u_q, dequantize=False)
    expected = ref.class_caps_s4(u_q, q.pack_int4(w_q), w_q.shape, params)
    np.testing.assert_array_equal(y, expected)
    assert np.abs(expected.astype(int)).max() > 10
