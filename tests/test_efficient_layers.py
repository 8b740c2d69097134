"""Efficient-CapsNet layers and zoo entry against independent numpy equations."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflm_caps import cli, layers, models
from tflm_caps.layers import capsule_math

RNG = np.random.default_rng(2021)


# ---------------------------------------------------------------- numpy references

def np_efficient_squash(s):
    """(1 - 1/exp(|s|)) * s/|s| in float64, written as in the paper (zero -> zero)."""
    s = np.asarray(s, np.float64)
    n = np.linalg.norm(s, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (1.0 - 1.0 / np.exp(n)) * s / n
    return np.where(n > 0, out, 0.0)


def np_self_attention(u, W, b):
    """Votes, agreement, softmax over output capsules, bias, weighted sum, squash;
    one sample and one pair at a time.  W [N_in, N_out, D_out, D_in], b [N_in, N_out]."""
    u = np.asarray(u, np.float64)
    W = np.asarray(W, np.float64)
    B, n_in, _ = u.shape
    _, n_out, d_out, _ = W.shape
    v = np.zeros((B, n_out, d_out))
    for bi in range(B):
        votes = np.array([[W[i, j] @ u[bi, i] for j in range(n_out)] for i in range(n_in)])
        A = np.zeros((n_in, n_out))
        for i in range(n_in):
            for j in range(n_out):
                A[i, j] = votes[i, j] @ sum(votes[k, j] for k in range(n_in)) / np.sqrt(d_out)
        c = np.zeros_like(A)
        for i in range(n_in):
            e = np.exp(A[i] - A[i].max())
            c[i] = e / e.sum()
        c = c + b
        for j in range(n_out):
            v[bi, j] = np_efficient_squash(sum(c[i, j] * votes[i, j] for i in range(n_in)))
    return v


def np_depthwise_valid(x, k, bias):
    """Depthwise convolution, multiplier 1, 'valid', stride 1: x [B,H,W,C], k [kh,kw,C]."""
    B, H, Wd, C = x.shape
    kh, kw, _ = k.shape
    out = np.zeros((B, H - kh + 1, Wd - kw + 1, C))
    for y in range(out.shape[1]):
        for xx in range(out.shape[2]):
            out[:, y, xx, :] = np.einsum("bhwc,hwc->bc", x[:, y:y + kh, xx:xx + kw, :], k) + bias
    return out


# ---------------------------------------------------------------- squash

def test_efficient_squash_matches_formula_over_magnitudes():
    for scale in (1e-4, 1e-2, 0.3, 1.0, 5.0, 50.0):
        s = (RNG.standard_normal((64, 8)) * scale).astype(np.float32)
        got = layers.EfficientSquash()(s).numpy()
        np.testing.assert_allclose(got, np_efficient_squash(s), rtol=2e-6, atol=1e-12)
        assert np.all(np.linalg.norm(got, axis=-1) <= 1.0 + 1e-6)  # 1 - e^-50 is 1 in float32


def test_efficient_squash_other_axis_and_function():
    s = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    got = layers.EfficientSquash(axis=1)(s).numpy()
    want = np.moveaxis(np_efficient_squash(np.moveaxis(s, 1, -1)), -1, 1)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    np.testing.assert_allclose(layers.efficient_squash(s).numpy(), np_efficient_squash(s),
                               rtol=2e-6)


def test_efficient_squash_zero_vector_exact_zero_and_identity_gradient():
    s = tf.constant([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    with tf.GradientTape() as tape:
        tape.watch(s)
        v = capsule_math.efficient_squash(s)
        first = v[0]
    jac = tape.jacobian(first, s).numpy()
    assert np.all(v.numpy()[0] == 0.0) and np.all(np.isfinite(jac))
    np.testing.assert_array_equal(jac[:, 0, :], np.eye(3))  # d squash / ds at 0 = identity
    np.testing.assert_array_equal(jac[:, 1, :], 0.0)


def test_efficient_squash_gradient_matches_finite_differences():
    s = RNG.standard_normal((4, 6)).astype(np.float64)
    x = tf.constant(s)
    theory, numeric = tf.test.compute_gradient(lambda t: capsule_math.efficient_squash(t), [x])
    np.testing.assert_allclose(theory[0], numeric[0], atol=1e-6)


# ---------------------------------------------------------------- self-attention routing

@pytest.mark.parametrize("n_in,d_in,n_out,d_out", [(16, 8, 10, 16), (5, 3, 4, 2), (1, 1, 1, 1)])
def test_self_attention_caps_matches_numpy(n_in, d_in, n_out, d_out):
    layer = layers.SelfAttentionCaps(n_out, d_out)
    u = np_efficient_squash(RNG.standard_normal((3, n_in, d_in))).astype(np.float32)
    layer.build(u.shape)
    layer.W.assign(RNG.normal(0, 0.5, layer.W.shape).astype(np.float32))
    layer.b.assign(RNG.normal(0, 0.3, layer.b.shape).astype(np.float32))
    got = layer(u).numpy()
    want = np_self_attention(u, layer.W.numpy(), layer.b.numpy())
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_self_attention_intermediates_and_softmax_axis():
    layer = layers.SelfAttentionCaps(4, 3)
    u = RNG.standard_normal((2, 6, 5)).astype(np.float32)
    v, trace = layer(u, return_intermediates=True)
    u_hat = np.einsum("ijdk,bik->bijd", layer.W.numpy(), u)
    A = np.einsum("bijd,bjd->bij", u_hat, u_hat.sum(axis=1)) / np.sqrt(3)
    np.testing.assert_allclose(trace["A"].numpy(), A, rtol=1e-4, atol=1e-5)
    # softmax over the output capsules: every input capsule's couplings sum to 1 (b = 0)
    np.testing.assert_allclose(trace["c"].numpy().sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(trace["s"].numpy(),
                               np.einsum("bij,bijd->bjd", trace["c"].numpy(), u_hat),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v.numpy(), np_efficient_squash(trace["s"].numpy()), rtol=1e-5)


def test_self_attention_zero_input_no_nan_and_gradients():
    layer = layers.SelfAttentionCaps(3, 4)
    u = tf.zeros((2, 5, 6))
    with tf.GradientTape() as tape:
        v = layer(u)
        loss = tf.reduce_sum(capsule_math.length(v))
    grads = tape.gradient(loss, [layer.W, layer.b])
    assert np.all(v.numpy() == 0.0)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_self_attention_errors_and_input_spec():
    with pytest.raises(ValueError, match="num_capsules"):
        layers.SelfAttentionCaps(0, 4)
    with pytest.raises(ValueError, match="capsule_dim"):
        layers.SelfAttentionCaps(3, 2.5)
    layer = layers.SelfAttentionCaps(3, 4, name="att")
    layer(np.zeros((1, 5, 6), np.float32))
    assert layer.input_spec.axes == {1: 5, 2: 6}
    with pytest.raises(ValueError, match="'att' is incompatible"):
        layer(np.zeros((1, 5, 7), np.float32))
    with pytest.raises(ValueError, match="'att2' is incompatible.*ndim=3"):
        layers.SelfAttentionCaps(3, 4, name="att2")(np.zeros((1, 5), np.float32))


# ---------------------------------------------------------------- primary capsules

def test_depthwise_primary_caps_channel_ordering_and_squash():
    layer = layers.DepthwisePrimaryCaps(4, 3)
    x = RNG.standard_normal((2, 5, 6, 8)).astype(np.float32)
    layer.build(x.shape)
    layer.conv.bias.assign(RNG.normal(0, 0.1, 8).astype(np.float32))
    got = layer(x).numpy()
    conv = np_depthwise_valid(x, layer.conv.kernel.numpy()[..., 0], layer.conv.bias.numpy())
    assert conv.shape == (2, 3, 4, 8) and got.shape == (2, 3 * 4 * 2, 4)
    for y in range(3):
        for xx in range(4):
            for k in range(2):
                cap = (y * 4 + xx) * 2 + k
                np.testing.assert_allclose(got[:, cap], np_efficient_squash(
                    conv[:, y, xx, 4 * k:4 * k + 4]), rtol=1e-5, atol=1e-6)


def test_depthwise_primary_caps_options_and_errors():
    layer = layers.DepthwisePrimaryCaps(6, (3, 2), strides=2, depth_multiplier=3,
                                        padding="same", name="p")
    out = layer(np.zeros((1, 7, 7, 4), np.float32))
    assert out.shape == (1, 4 * 4 * 4 * 3 // 6, 6)
    assert layer.compute_output_shape((None, 7, 7, 4)) == (None, 32, 6)
    with pytest.raises(ValueError, match="equal strides"):
        layers.DepthwisePrimaryCaps(4, 3, strides=(2, 1))
    with pytest.raises(ValueError, match="multiple of capsule_dim 5"):
        layers.DepthwisePrimaryCaps(5, 3)(np.zeros((1, 5, 5, 8), np.float32))
    with pytest.raises(ValueError, match="too small"):
        layers.DepthwisePrimaryCaps(4, 9)(np.zeros((1, 5, 5, 8), np.float32))
    with pytest.raises(ValueError, match="padding"):
        layers.DepthwisePrimaryCaps(4, 3, padding="causal")
    with pytest.raises(ValueError, match="'p' is incompatible.*axis -1"):
        layer(np.zeros((1, 7, 7, 5), np.float32))


# ---------------------------------------------------------------- models, saving

def _small_efficient_capsnet():
    image = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(image)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = layers.DepthwisePrimaryCaps(4, 5, strides=2, name="primary_caps")(x)
    v = layers.SelfAttentionCaps(3, 4, name="class_caps")(x)
    return keras.Model(image, layers.Length(name="length")(v))


def test_any_batch_size_and_unknown_batch():
    model = _small_efficient_capsnet()
    for batch in (1, 7):
        x = RNG.random((batch, 12, 12, 1)).astype(np.float32)
        out = model(x).numpy()
        assert out.shape == (batch, 3)
        one = np.concatenate([model(x[k:k + 1]).numpy() for k in range(batch)])
        np.testing.assert_allclose(out, one, rtol=1e-5, atol=1e-6)  # samples independent
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, 12, 12, 1], tf.float32)])
    assert fn(np.zeros((5, 12, 12, 1), np.float32)).shape == (5, 3)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_keras_save_load_round_trip(tmp_path):
    model = _small_efficient_capsnet()
    for w in model.weights:
        w.assign(w.numpy() + RNG.normal(0, 0.05, w.shape).astype(np.float32))
    x = RNG.random((4, 12, 12, 1)).astype(np.float32)
    before = model.predict(x, verbose=0)
    path = tmp_path / "efficient.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    assert isinstance(loaded.get_layer("class_caps"), layers.SelfAttentionCaps)
    assert isinstance(loaded.get_layer("primary_caps"), layers.DepthwisePrimaryCaps)
    assert "Lambda" not in {type(l).__name__ for l in loaded.layers}


def test_layer_configs_round_trip():
    for layer in (layers.EfficientSquash(axis=1),
                  layers.DepthwisePrimaryCaps(8, (9, 7), strides=(2, 2), depth_multiplier=2,
                                              activation="relu"),
                  layers.SelfAttentionCaps(10, 16, kernel_initializer="glorot_normal",
                                           bias_initializer="ones")):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        assert keras.saving.get_registered_name(type(layer)).startswith("tflm_caps>")


def test_docstring_examples_run():
    import doctest

    from tflm_caps.layers import efficient

    keras.utils.set_random_seed(0)
    result = doctest.testmod(efficient, globs={}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted >= 3 * 3
    for name in ("EfficientSquash", "DepthwisePrimaryCaps", "SelfAttentionCaps"):
        doc = getattr(layers, name).__doc__
        for section in ("Args:", "Input shape:", "Output shape:", "Example:"):
            assert f"\n    {section}\n" in doc, (name, section)


# ---------------------------------------------------------------- zoo

def test_mazzia_zoo_parameter_count_and_architecture():
    model = models.build("mazzia2021-mnist")
    # Re-derived from the public code: convs 832 + 18,496 + 36,928 + 73,856, depthwise
    # 9*9*128 + 128 = 10,496, capsules W 16*10*16*8 = 20,480 + b 160 -> 161,248;
    # BatchNorm 2*(32+64+64+128) = 576 trainable + 576 moving statistics.
    assert models.count_trainable_params(model) == 161_824
    assert models.ZOO["mazzia2021-mnist"]["published_params"] == 161_824
    assert models.count_inference_params(model) == model.count_params() == 162_400
    by_layer = {l.name: l.count_params() for l in model.layers}
    assert [by_layer[f"conv{k}"] for k in (1, 2, 3, 4)] == [832, 18_496, 36_928, 73_856]
    assert by_layer["primary_caps"] == 10_496 and by_layer["class_caps"] == 20_640
    assert sum(by_layer[f"bn{k}"] for k in (1, 2, 3, 4)) == 2 * 576
    assert [tuple(model.get_layer(f"conv{k}").output.shape[1:]) for k in (1, 2, 3, 4)] == [
        (24, 24, 32), (22, 22, 64), (20, 20, 64), (9, 9, 128)]
    assert model.get_layer("conv4").strides == (2, 2)
    assert all(model.get_layer(f"conv{k}").activation is keras.activations.relu
               for k in (1, 2, 3, 4))
    pc = model.get_layer("primary_caps")
    assert pc.output.shape == (None, 16, 8) and pc.conv.kernel.shape == (9, 9, 128, 1)
    cc = model.get_layer("class_caps")
    assert isinstance(cc, layers.SelfAttentionCaps)
    assert tuple(cc.W.shape) == (16, 10, 16, 8) and tuple(cc.b.shape) == (16, 10)
    assert model.output_shape == (None, 10)
    assert models.feature_shapes("mazzia2021-mnist")[-1] == (1, 1)
    assert models.describe("mazzia2021-mnist")["num_input_capsules"] == 16
    assert models.describe("mazzia2021-mnist")["routing"] == "self-attention"


def test_mazzia_training_model_and_cli_zoo(capsys):
    train = models.build("mazzia2021-mnist", decoder=True)
    assert train.output_names == ["length", "reconstruction"]
    assert models.count_trainable_params(train) == 161_824
    assert cli.main(["zoo", "--json", "--model", "mazzia2021-mnist"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["params"], row["trainable_params"], row["published_params"]) == (
        162_400, 161_824, 161_824)
    assert row["routing"] == "self-attention"
    assert cli.main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "mazzia2021-mnist" in out and "161,824" in out and "self-attention" in out


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_cli_trains_mazzia(tmp_path, capsys, bundled_data):
    """`tflm-caps train --model mazzia2021-mnist` end to end (one epoch on a
    400-image Keras-npz subset of the bundled digits, to keep it short)."""
    part = bundled_data.subset(train=400, test=200, seed=0)
    npz = tmp_path / "mnist.npz"
    np.savez(npz, x_train=(part.x_train[..., 0] * 255).round().astype(np.uint8),
             y_train=part.y_train, x_test=(part.x_test[..., 0] * 255).round().astype(np.uint8),
             y_test=part.y_test)
    out = tmp_path / "mazzia.keras"
    assert cli.main(["train", "--model", "mazzia2021-mnist", "--data", f"mnist-npz:{npz}",
                     "--epochs", "1", "--train-eval-samples", "0", "--out", str(out),
                     "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "mazzia2021-mnist" and report["params"] == 162_400
    assert report["learning_rate"] == 2e-3 and report["test_images"] == 200
    loaded = keras.models.load_model(out)
    scores = loaded.predict(part.x_test, verbose=0)
    assert np.mean(scores.argmax(1) == part.y_test) == pytest.approx(report["test_accuracy"],
                                                                     abs=1e-9)
    assert report["test_accuracy"] > 0.2  # one short epoch already learns (chance: 0.1)
