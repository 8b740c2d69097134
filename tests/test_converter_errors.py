"""Bad models, data and options give clear errors naming what is wrong."""
import numpy as np
import pytest

from tflm_caps.converter import ConversionError, convert


@pytest.fixture(scope="module")
def tiny():
    from tflm_caps import models
    return models.build("tiny")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)


def _caps_model(extra_layer=None, with_length=True, routings=2):
    import keras

    from tflm_caps.layers import ClassCaps, Length, PrimaryCaps

    image = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(8, 5, strides=2, activation="relu", name="conv1")(image)
    x = PrimaryCaps(8, 4, 5, strides=2, name="primary_caps")(x)
    if extra_layer is not None:
        x = extra_layer(x)
    v = ClassCaps(10, 4, routings=routings, name="class_caps")(x)
    out = Length(name="length")(v) if with_length else v
    return keras.Model(image, out, name="custom")


def test_unsupported_layer_is_named(images):
    import keras

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    model = _caps_model(Doubler(name="my_doubler"))
    with pytest.raises(ConversionError, match=r"my_doubler.*Doubler.*cannot be converted"):
        convert(model, images)


def test_routings_beyond_the_kernels_are_refused(images):
    with pytest.raises(ConversionError, match=r"'class_caps' \(ClassCaps\): routings=9, the int8 "
                                              r"kernels run 1 to 8"):
        convert(_caps_model(routings=9), images)


def test_model_without_length_output(images):
    with pytest.raises(ConversionError, match="Length"):
        convert(_caps_model(with_length=False), images)


def test_subclassed_model_rejected(images):
    import keras

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ConversionError, match="functional or Sequential"):
        convert(Sub(), images)


def test_not_a_model(images):
    with pytest.raises(ConversionError, match="keras.Model"):
        convert(object(), images)
    with pytest.raises(FileNotFoundError, match="no-such-model.keras"):
        convert("no-such-model.keras", images)


@pytest.mark.parametrize("data, message", [
    (np.zeros((0, 28, 28, 1), np.float32), "empty"),
    (lambda: iter([]), "empty"),
    ([], "empty"),
    (np.zeros((4, 32, 32, 1), np.float32), r"shape \(4, 32, 32, 1\).*expected \(28, 28, 1\)"),
    (np.zeros((4, 28, 28), np.float32), r"expected \(28, 28, 1\)"),
    ([np.zeros((28, 28, 1)), np.zeros((28, 28, 3))], "sample 1 has shape"),
    ([[np.zeros((28, 28, 1)), np.zeros((28, 28, 1))]], "holds 2 arrays"),
    (np.full((4, 28, 28, 1), np.nan, np.float32), "NaN"),
    (np.array([["a"]]), "dtype"),
    (None, "required"),
    (42, "iterable"),
])
def test_bad_representative_dataset(tiny, data, message):
    with pytest.raises(ConversionError, match=message):
        convert(tiny, data, num_samples=4)


@pytest.mark.parametrize("kwargs, message", [
    ({"weight_granularity": "per-channel"}, "weight_granularity"),
    ({"io_dtype": "uint8"}, "io_dtype"),
    ({"num_samples": 0}, "num_samples"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 16}, "batch_size=16"),
    ({"store_predictions": "yes"}, "store_predictions"),
    ({"metadata": 123}, "metadata"),
])
def test_bad_options(tiny, images, kwargs, message):
    with pytest.raises(ConversionError, match=message):
        convert(tiny, images, **kwargs)


def test_unknown_keyword_argument(tiny, images):
    with pytest.raises(TypeError, match="routings"):
        convert(tiny, images, routings=3)


def _with_weights(model, fn):
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    layer = clone.get_layer("class_caps")
    layer.W.assign(fn(layer.W.numpy()))
    return clone


def test_zero_weight_range(tiny, images):
    model = _with_weights(tiny, np.zeros_like)
    with pytest.raises(ConversionError, match=r"'class_caps'.*W is all zero"):
        convert(model, images, num_samples=4)


def test_zero_weight_range_of_one_capsule(tiny, images):
    def zero_capsule_3(w):
        w = w.copy()
        w[:, 3] = 0
        return w

    model = _with_weights(tiny, zero_capsule_3)
    with pytest.raises(ConversionError, match=r"output capsule\(s\) \[3\]"):
        convert(model, images, num_samples=4, weight_granularity="per-capsule")
    # Per tensor, one all-zero capsule is fine.
    assert convert(model, images, num_samples=4, metadata=None)[4:8] == b"TFL3"


def test_zero_activation_range(tiny):
    with pytest.raises(ConversionError, match=r"zero range.*4 calibration samples"):
        convert(tiny, np.zeros((4, 28, 28, 1), np.float32), num_samples=4)
