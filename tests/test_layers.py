"""Capsule layers against independent numpy implementations of the equations."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tflm_caps import layers
from tflm_caps.layers import capsule_math

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- numpy references

def np_squash(s):
    """The textbook form |s|^2/(1+|s|^2) * s/|s| in float64 (zero -> zero)."""
    s = np.asarray(s, np.float64)
    n = np.linalg.norm(s, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (n ** 2 / (1 + n ** 2)) * s / n
    return np.where(n > 0, out, 0.0)


def np_predictions(u, W):
    """u_hat[b, i, j] = W[i, j] @ u[b, i], one matrix-vector product at a time."""
    B, n_in, _ = u.shape
    _, n_out, d_out, _ = W.shape
    u_hat = np.zeros((B, n_in, n_out, d_out))
    for b in range(B):
        for i in range(n_in):
            for j in range(n_out):
                u_hat[b, i, j] = W[i, j].astype(np.float64) @ u[b, i].astype(np.float64)
    return u_hat


def np_routing(u_hat, routings):
    """Explicit loop over samples, capsules and iterations (Sabour et al. 2017)."""
    u_hat = np.asarray(u_hat, np.float64)
    B, n_in, n_out, d_out = u_hat.shape
    v_all = np.zeros((B, n_out, d_out))
    trace = []
    for bi in range(B):
        logits = np.zeros((n_in, n_out))
        for r in range(routings):
            c = np.zeros_like(logits)
            for i in range(n_in):
                e = np.exp(logits[i] - logits[i].max())
                c[i] = e / e.sum()
            v = np.zeros((n_out, d_out))
            for j in range(n_out):
                s_j = sum(c[i, j] * u_hat[bi, i, j] for i in range(n_in))
                v[j] = np_squash(s_j)
            if bi == 0:
                trace.append({"b": logits.copy(), "c": c.copy(), "v": v.copy()})
            if r < routings - 1:
                for i in range(n_in):
                    for j in range(n_out):
                        logits[i, j] += u_hat[bi, i, j] @ v[j]
        v_all[bi] = v
    return v_all, trace


def np_margin_loss(onehot, lengths, m_plus=0.9, m_minus=0.1, lam=0.5):
    per = np.zeros(len(lengths))
    for b in range(len(lengths)):
        for k in range(lengths.shape[1]):
            if onehot[b, k]:
                per[b] += max(0.0, m_plus - lengths[b, k]) ** 2
            else:
                per[b] += lam * max(0.0, lengths[b, k] - m_minus) ** 2
    return per


def random_capsules(shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- squash / length

def test_squash_matches_exact_formula_over_magnitudes():
    # Norms from 1e-4 to 1e4: both the flat region and saturation.
    s = random_capsules((64, 12, 8)) * np.logspace(-4, 4, 64, dtype=np.float32)[:, None, None]
    got = capsule_math.squash(s).numpy()
    want = np_squash(s)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)
    # Lengths stay in [0, 1) up to float32 rounding near saturation.
    assert np.all(np.linalg.norm(got, axis=-1) <= 1.0 + 1e-6)


def test_squash_layer_other_axis():
    s = random_capsules((3, 5, 7))
    got = layers.Squash(axis=1)(s).numpy()
    want = np.moveaxis(np_squash(np.moveaxis(s, 1, -1)), -1, 1)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert layers.Squash.from_config(layers.Squash(axis=1).get_config()).axis == 1


def test_squash_and_length_zero_vector_exact_zero_and_zero_gradient():
    s = tf.Variable(np.zeros((2, 3, 4), np.float32))
    with tf.GradientTape(persistent=True) as tape:
        v = capsule_math.squash(s)
        n = capsule_math.length(s)
        loss_v = tf.reduce_sum(v * 3.0)
        loss_n = tf.reduce_sum(n)
    assert np.array_equal(v.numpy(), np.zeros((2, 3, 4)))
    assert np.array_equal(n.numpy(), np.zeros((2, 3)))
    g_v = tape.gradient(loss_v, s).numpy()
    g_n = tape.gradient(loss_n, s).numpy()
    assert np.all(np.isfinite(g_v)) and np.array_equal(g_v, np.zeros_like(g_v))
    assert np.all(np.isfinite(g_n)) and np.array_equal(g_n, np.zeros_like(g_n))


def test_squash_gradient_matches_finite_differences():
    s = tf.constant(random_capsules((1, 1, 5)).astype(np.float64))
    theta, numeric = tf.test.compute_gradient(lambda x: capsule_math.squash(x), [s])
    np.testing.assert_allclose(theta[0], numeric[0], rtol=1e-5, atol=1e-7)


def test_length_matches_numpy_norm():
    v = random_capsules((4, 10, 16), 0.3)
    np.testing.assert_allclose(layers.Length()(v).numpy(), np.linalg.norm(v, axis=-1),
                               rtol=1e-6)


# ---------------------------------------------------------------- predictions / routing

def test_predictions_match_per_pair_matrix_products():
    u = random_capsules((3, 6, 4))
    W = random_capsules((6, 5, 3, 4))
    np.testing.assert_allclose(capsule_math.predictions(u, W).numpy(), np_predictions(u, W),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("routings", [1, 2, 3])
def test_dynamic_routing_matches_numpy_loop(routings):
    u_hat = random_capsules((4, 20, 5, 6), 0.2)
    v, trace = capsule_math.dynamic_routing(u_hat, routings, return_intermediates=True)
    want, want_trace = np_routing(u_hat, routings)
    np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-6)
    assert len(trace["c"]) == routings
    for r in range(routings):
        np.testing.assert_allclose(trace["b"][r].numpy()[0], want_trace[r]["b"], atol=1e-5)
        np.testing.assert_allclose(trace["c"][r].numpy()[0], want_trace[r]["c"], atol=1e-6)
        np.testing.assert_allclose(trace["v"][r].numpy()[0], want_trace[r]["v"], atol=1e-6)
    if routings == 1:
        # Uniform couplings 1/N_out: s_j = sum_i u_hat_ij / N_out.
        np.testing.assert_allclose(v.numpy(), np_squash(u_hat.sum(axis=1) / 5.0), atol=1e-6)


def test_routing_changes_couplings_toward_agreement():
    # Input capsules 0-9 agree on output capsule 0; routing must raise c_i0 for them.
    u_hat = random_capsules((1, 20, 3, 4), 0.05)
    u_hat[0, :10, 0] = np.array([0.5, 0.5, 0.0, 0.0], np.float32)
    _, trace = capsule_math.dynamic_routing(u_hat, 3, return_intermediates=True)
    c0, c2 = trace["c"][0].numpy()[0], trace["c"][2].numpy()[0]
    np.testing.assert_allclose(c0, 1.0 / 3.0, atol=1e-7)
    assert np.all(c2[:10, 0] > 0.5)


@pytest.mark.parametrize("routings", [1, 3])
def test_class_caps_layer_matches_numpy(routings):
    layer = layers.ClassCaps(5, 6, routings=routings)
    u = np_squash(random_capsules((3, 24, 4))).astype(np.float32)
    got = layer(u).numpy()
    W = layer.W.numpy()
    assert W.shape == (24, 5, 6, 4) and layer.W.path.endswith("W")
    want, _ = np_routing(np_predictions(u, W), routings)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_class_caps_rejects_bad_routings(bad):
    with pytest.raises(ValueError, match="routings"):
        layers.ClassCaps(10, 16, routings=bad)


@pytest.mark.parametrize("bad", [0, -2])
def test_dynamic_routing_rejects_bad_routings(bad):
    with pytest.raises(ValueError, match="routings must be >= 1"):
        capsule_math.dynamic_routing(np.zeros((1, 2, 2, 2), np.float32), bad)


def test_class_caps_rejects_bad_input_shape():
    with pytest.raises(ValueError, match="ClassCaps 'cc'.*N_in"):
        layers.ClassCaps(10, 16, name="cc").build((None, 1152))
    layer = layers.ClassCaps(10, 16, name="cc2")
    layer(np.zeros((1, 6, 4), np.float32))
    # Keras' InputSpec check, set by build like Dense does.
    with pytest.raises(ValueError, match=r"'cc2' is incompatible.*axis 2 .* value 4"):
        layer(np.zeros((1, 6, 8), np.float32))
    with pytest.raises(ValueError, match=r"'cc2' is incompatible.*expected ndim=3"):
        layer(np.zeros((6, 4), np.float32))


def test_class_caps_stop_gradient_same_forward_different_backward():
    u = tf.constant(np_squash(random_capsules((2, 16, 4))).astype(np.float32))
    outs, grads = [], []
    for stop in (True, False):
        keras.utils.set_random_seed(7)
        layer = layers.ClassCaps(4, 5, routings=3, stop_gradient_routing=stop)
        layer.build(u.shape)
        with tf.GradientTape() as tape:
            v = layer(u)
            loss = tf.reduce_sum(capsule_math.length(v) * tf.constant([1.0, -1.0, 2.0, 0.5]))
        outs.append(v.numpy())
        grads.append(tape.gradient(loss, layer.W).numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert not np.allclose(grads[0], grads[1])


def test_class_caps_zero_input_no_nan():
    layer = layers.ClassCaps(3, 4, routings=3)
    u = tf.Variable(np.zeros((2, 8, 4), np.float32))
    with tf.GradientTape() as tape:
        v = layer(u)
        loss = tf.reduce_sum(capsule_math.length(v))
    g_u, g_w = tape.gradient(loss, [u, layer.W])
    assert np.array_equal(v.numpy(), np.zeros((2, 3, 4)))
    assert np.all(np.isfinite(g_u.numpy())) and np.all(np.isfinite(g_w.numpy()))


# ---------------------------------------------------------------- primary caps

def test_primary_caps_channel_ordering_and_squash():
    layer = layers.PrimaryCaps(3, 4, kernel_size=3, strides=2, name="pc")
    x = RNG.random((2, 9, 9, 5)).astype(np.float32)
    got = layer(x).numpy()
    conv = layer.conv(x).numpy()  # [2, 4, 4, 12]
    assert isinstance(layer.conv, keras.layers.Conv2D) and conv.shape == (2, 4, 4, 12)
    assert got.shape == (2, 4 * 4 * 3, 4)
    want = np.zeros((2, 48, 4))
    for y in range(4):
        for xx in range(4):
            for k in range(3):
                want[:, (y * 4 + xx) * 3 + k] = np_squash(conv[:, y, xx, k * 4:(k + 1) * 4])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert layer.num_capsules == 3 and layer.capsule_dim == 4
    assert layer.compute_output_shape((None, 9, 9, 5)) == (None, 48, 4)


def test_primary_caps_errors():
    with pytest.raises(ValueError, match="num_capsules"):
        layers.PrimaryCaps(0, 4, 3)
    with pytest.raises(ValueError, match="padding"):
        layers.PrimaryCaps(2, 4, 3, padding="causal")
    with pytest.raises(ValueError, match="PrimaryCaps 'p'.*too small"):
        layers.PrimaryCaps(2, 4, 9, name="p").build((None, 5, 5, 1))
    with pytest.raises(ValueError, match="NHWC"):
        layers.PrimaryCaps(2, 4, 3, name="p").build((None, 5, 5))


# ---------------------------------------------------------------- mask / decoder

def test_mask_by_label_onehot_and_int():
    caps = random_capsules((4, 5, 3))
    labels = np.array([2, 0, 4, 4])
    want = np.zeros_like(caps)
    want[np.arange(4), labels] = caps[np.arange(4), labels]
    want = want.reshape(4, 15)
    onehot = np.eye(5, dtype=np.float32)[labels]
    for lab in (onehot, labels, labels.reshape(4, 1), labels.astype(np.float32)):
        np.testing.assert_array_equal(layers.Mask()([caps, lab]).numpy(), want)


def test_mask_by_longest_capsule():
    caps = random_capsules((6, 5, 3))
    longest = np.linalg.norm(caps, axis=-1).argmax(axis=1)
    want = np.zeros_like(caps)
    want[np.arange(6), longest] = caps[np.arange(6), longest]
    for got in (layers.Mask()(caps), layers.Mask()([caps, None]), layers.Mask()([caps])):
        np.testing.assert_array_equal(got.numpy(), want.reshape(6, 15))


def test_decoder_shape_range_and_config():
    dec = layers.Decoder((8, 8, 1), name="dec")
    out = dec(random_capsules((3, 40))).numpy()
    assert out.shape == (3, 8, 8, 1) and np.all((out > 0) & (out < 1))
    assert [d.units for d in dec.hidden] == [512, 1024] and dec.output_dense.units == 64
    clone = layers.Decoder.from_config(dec.get_config())
    assert clone.target_shape == (8, 8, 1) and clone.hidden_units == (512, 1024)


# ---------------------------------------------------------------- losses

def test_margin_loss_matches_numpy_onehot_and_int():
    lengths = RNG.random((16, 10)).astype(np.float32)
    labels = RNG.integers(0, 10, 16)
    onehot = np.eye(10, dtype=np.float32)[labels]
    want = np_margin_loss(onehot, lengths)
    loss = layers.MarginLoss()
    for y in (onehot, labels, labels.reshape(-1, 1)):
        np.testing.assert_allclose(layers.margin_loss(y, lengths).numpy(), want, rtol=1e-5)
        np.testing.assert_allclose(float(loss(y, lengths)), want.mean(), rtol=1e-5)
    custom = layers.MarginLoss(m_plus=0.8, m_minus=0.2, lambda_=0.25)
    want_custom = np_margin_loss(onehot, lengths, 0.8, 0.2, 0.25)
    np.testing.assert_allclose(float(custom(onehot, lengths)), want_custom.mean(), rtol=1e-5)
    np.testing.assert_allclose(layers.margin_loss(onehot, lengths, 0.8, 0.2, 0.25).numpy(),
                               want_custom, rtol=1e-5)
    restored = layers.MarginLoss.from_config(custom.get_config())
    assert (restored.m_plus, restored.m_minus, restored.lambda_) == (0.8, 0.2, 0.25)


def test_sum_squared_error():
    a, b = RNG.random((5, 4, 4, 1)), RNG.random((5, 4, 4, 1))
    per_sample = ((a - b) ** 2).reshape(5, -1).sum(axis=1)
    b = b.astype(np.float32)
    np.testing.assert_allclose(layers.sum_squared_error(a, b).numpy(), per_sample, rtol=1e-5)
    np.testing.assert_allclose(float(layers.SumSquaredError()(a, b)), per_sample.mean(),
                               rtol=1e-5)


@pytest.mark.parametrize("loss, margins", [
    (layers.margin_loss, (0.9, 0.1, 0.5)),
    (layers.MarginLoss(m_plus=0.8, m_minus=0.2, lambda_=0.25), (0.8, 0.2, 0.25))])
def test_compiled_margin_loss_survives_keras_save_load(tmp_path, loss, margins):
    model = keras.Sequential([keras.Input((4, 3)), layers.Length()])
    model.compile(loss=loss)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # the loss is found by registration
    caps = RNG.random((6, 4, 3)).astype(np.float32)
    onehot = np.eye(4, dtype=np.float32)[RNG.integers(0, 4, 6)]
    lengths = np.linalg.norm(caps, axis=-1)
    want = np_margin_loss(onehot, lengths, *margins).mean()
    np.testing.assert_allclose(loaded.evaluate(caps, onehot, verbose=0), want, rtol=1e-5)
    for fn in (layers.margin_loss, layers.sum_squared_error):
        assert keras.saving.get_registered_name(fn) == f"tflm_caps>{fn.__name__}"


# ---------------------------------------------------------------- models: batch, save/load

def _small_capsnet(decoder):
    image = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(image)
    x = layers.PrimaryCaps(4, 4, 3, strides=2, name="primary_caps")(x)
    v = layers.ClassCaps(3, 5, routings=3, name="class_caps")(x)
    lengths = layers.Length(name="length")(v)
    if not decoder:
        return keras.Model(image, lengths)
    label = keras.Input((3,), name="label")
    recon = layers.Decoder((12, 12, 1), hidden_units=(16, 32),
                           name="reconstruction")(layers.Mask(name="mask")([v, label]))
    return keras.Model([image, label], [lengths, recon])


def test_unknown_batch_size():
    model = _small_capsnet(decoder=False)
    assert model.input_shape[0] is None
    for batch in (1, 7):
        x = RNG.random((batch, 12, 12, 1)).astype(np.float32)
        out = model(x).numpy()
        assert out.shape == (batch, 3)
        np.testing.assert_allclose(model.predict(x, batch_size=batch, verbose=0), out,
                                   rtol=1e-6)
    # tf.function with an unknown batch dimension traces once and serves both sizes.
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, 12, 12, 1], tf.float32)])
    assert fn(np.zeros((7, 12, 12, 1), np.float32)).shape == (7, 3)


# Keras' own variable saving trips a numpy 2 deprecation warning; not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("decoder", [False, True])
def test_keras_save_load_round_trip(tmp_path, decoder):
    model = _small_capsnet(decoder)
    for w in model.weights:  # non-trivial values (biases start at 0)
        w.assign(w.numpy() + RNG.normal(0, 0.05, w.shape).astype(np.float32))
    x = RNG.random((5, 12, 12, 1)).astype(np.float32)
    inputs = [x, np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0]]] if decoder else x
    before = model.predict(inputs, verbose=0)
    path = tmp_path / "caps.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: found by registration
    after = loaded.predict(inputs, verbose=0)
    for a, b in zip(before if decoder else [before], after if decoder else [after]):
        np.testing.assert_array_equal(a, b)
    cc = loaded.get_layer("class_caps")
    assert isinstance(cc, layers.ClassCaps) and cc.routings == 3
    assert isinstance(loaded.get_layer("primary_caps"), layers.PrimaryCaps)


def test_layer_configs_round_trip():
    for layer in (layers.PrimaryCaps(4, 8, (3, 5), strides=(1, 2), activation="relu"),
                  layers.ClassCaps(10, 16, routings=1, stop_gradient_routing=False),
                  layers.Length(), layers.Mask(), layers.Squash()):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        assert keras.saving.get_registered_name(type(layer)).startswith("tflm_caps>")


def test_no_lambda_layers_in_models():
    for decoder in (False, True):
        kinds = {type(l).__name__ for l in _small_capsnet(decoder).layers}
        assert "Lambda" not in kinds


# ---------------------------------------------------------------- Keras conventions

LAYER_CLASSES = ("Squash", "PrimaryCaps", "ClassCaps", "Length", "Mask", "Decoder")


@pytest.mark.parametrize("module", ["capsules", "losses"])
def test_docstring_examples_run(module):
    """Every example in the layer and loss docstrings runs and prints what it shows."""
    import doctest
    import importlib

    mod = importlib.import_module(f"tflm_caps.layers.{module}")
    keras.utils.set_random_seed(0)
    result = doctest.testmod(mod, globs={}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    documented = [name for name, obj in vars(mod).items()
                  if getattr(obj, "__module__", None) == mod.__name__ and not name.startswith("_")
                  and callable(obj)]
    assert all(">>> " in getattr(mod, name).__doc__ for name in documented), documented
    assert result.attempted >= 3 * len(documented)


@pytest.mark.parametrize("name", LAYER_CLASSES)
def test_layer_docstrings_follow_keras(name):
    doc = getattr(layers, name).__doc__
    for section in ("Args:", "Input shape:", "Output shape:", "Example:"):
        assert f"\n    {section}\n" in doc, (name, section)


def test_input_specs():
    pc = layers.PrimaryCaps(2, 4, 3, name="p")
    assert pc.input_spec.ndim == 4
    pc(np.zeros((1, 7, 7, 3), np.float32))
    assert pc.input_spec.axes == {-1: 3}
    with pytest.raises(ValueError, match="'p' is incompatible.*axis -1 .* value 3"):
        pc(np.zeros((1, 7, 7, 2), np.float32))
    with pytest.raises(ValueError, match="'len' is incompatible.*min_ndim=2"):
        layers.Length(name="len")(np.zeros((4,), np.float32))
    dec = layers.Decoder((4, 4, 1), hidden_units=(8,), name="dec")
    dec(np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="'dec' is incompatible.*axis -1 .* value 6"):
        dec(np.zeros((2, 5), np.float32))
