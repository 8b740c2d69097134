"""Keras 3 capsule layers (TensorFlow backend).

All layers are registered under the ``tflm_caps`` package name, so a model
saved as ``.keras`` loads back with plain ``keras.models.load_model`` once
``tflm_caps.layers`` has been imported.
"""
import math
import numbers

import keras
import tensorflow as tf

from tflm_caps.layers import capsule_math
from tflm_caps.ops_contract import MAX_ROUTINGS, MIN_ROUTINGS

_register = keras.saving.register_keras_serializable(package="tflm_caps")
InputSpec = keras.layers.InputSpec


def _positive_int(value, layer, arg):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{layer}: {arg} must be a positive integer, got {value!r}")
    return int(value)


def _conv_grid(input_shape, kernel_size, strides, padding):
    """(H', W') a convolution ("same" or "valid") makes of an NHWC
    ``input_shape``; None for an unknown size, 0 when the input is smaller
    than a valid kernel."""
    out = []
    for size, k, st in zip(tuple(input_shape)[1:3], kernel_size, strides):
        if size is None:
            out.append(None)
        elif padding == "same":
            out.append(-(-size // st))
        else:
            out.append((size - k) // st + 1 if size >= k else 0)
    return tuple(out)


def _pair(value, layer, arg):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{layer}: {arg} must be an int or a pair, got {value!r}")
        return tuple(_positive_int(v, layer, arg) for v in value)
    v = _positive_int(value, layer, arg)
    return (v, v)


@_register
class Squash(keras.layers.Layer):
    """Squash nonlinearity of capsule vectors: `|s|^2 / (1 + |s|^2) * s / |s|`.

    Shrinks each vector along `axis` to a length in [0, 1) without changing
    its direction; a zero vector maps to an exact zero (value and gradient).

    Args:
        axis: Integer, the axis holding the capsule dimension. Defaults to `-1`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        Arbitrary, e.g. `(batch_size, num_capsules, capsule_dim)`.

    Output shape:
        Same as the input.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import Squash
    >>> s = np.array([[[3.0, 4.0], [0.0, 0.0]]], "float32")
    >>> print(np.round(Squash()(s).numpy(), 4))
    [[[0.5769 0.7692]
      [0.     0.    ]]]
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, inputs):
        return capsule_math.squash(inputs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@_register
class PrimaryCaps(keras.layers.Layer):
    """Primary capsules: Conv2D, reshape to capsules, squash.

    The convolution (attribute `conv`) has `num_capsules * capsule_dim`
    filters.  Its NHWC output `(batch, H', W', num_capsules * capsule_dim)`
    is reshaped row-major: capsule `(y * W' + x) * num_capsules + k` holds
    conv channels `[k * capsule_dim, (k + 1) * capsule_dim)` at grid
    position `(y, x)`.  A builtin CONV_2D + RESHAPE reproduces this exactly.

    Args:
        num_capsules: Integer, capsules per grid position (capsule types).
        capsule_dim: Integer, dimension of each capsule.
        kernel_size: Integer or pair, the convolution window.
        strides: Integer or pair, the convolution strides. Defaults to `1`.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        activation: Activation applied to the convolution before the
            squash. Defaults to `None`.
        kernel_initializer: Initializer of the convolution kernel.
            Defaults to `"glorot_uniform"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)`.

    Output shape:
        3D tensor `(batch_size, H' * W' * num_capsules, capsule_dim)` where
        `(H', W') = grid_shape(input_shape)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import PrimaryCaps
    >>> x = np.random.rand(2, 20, 20, 16).astype("float32")
    >>> print(PrimaryCaps(8, 4, kernel_size=9, strides=2)(x).shape)
    (2, 288, 4)
    """

    def __init__(self, num_capsules, capsule_dim, kernel_size, strides=1,
                 padding="valid", activation=None, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        name = f"PrimaryCaps '{self.name}'"
        self.num_capsules = _positive_int(num_capsules, name, "num_capsules")
        self.capsule_dim = _positive_int(capsule_dim, name, "capsule_dim")
        self.kernel_size = _pair(kernel_size, name, "kernel_size")
        self.strides = _pair(strides, name, "strides")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"{name}: padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = keras.layers.Conv2D(
            self.num_capsules * self.capsule_dim, self.kernel_size, strides=self.strides,
            padding=self.padding, activation=self.activation,
            kernel_initializer=self.kernel_initializer, name="conv")
        self.input_spec = InputSpec(ndim=4)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"PrimaryCaps '{self.name}': expected an NHWC input "
                             f"[batch, height, width, channels], got shape {tuple(input_shape)}")
        grid = self.grid_shape(input_shape)
        if any(d is not None and d < 1 for d in grid):
            raise ValueError(f"PrimaryCaps '{self.name}': input {tuple(input_shape)} is too "
                             f"small for kernel {self.kernel_size} stride {self.strides} "
                             f"with '{self.padding}' padding")
        self.conv.build(tuple(input_shape))
        self.input_spec = InputSpec(ndim=4, axes={-1: input_shape[-1]})
        self.built = True

    def grid_shape(self, input_shape):
        """(H', W') of the capsule grid for an NHWC ``input_shape`` (may be < 1)."""
        return _conv_grid(input_shape, self.kernel_size, self.strides, self.padding)

    def call(self, inputs):
        x = self.conv(inputs)
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            raise ValueError(f"PrimaryCaps '{self.name}': spatial input size must be known")
        x = tf.reshape(x, [-1, h * w * self.num_capsules, self.capsule_dim])
        return capsule_math.squash(x)

    def compute_output_shape(self, input_shape):
        h, w = self.grid_shape(input_shape)
        return (input_shape[0], h * w * self.num_capsules, self.capsule_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "num_capsules": self.num_capsules,
            "capsule_dim": self.capsule_dim,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@_register
class CapsuleInitializer(keras.initializers.Initializer):
    """Normal initializer of the `ClassCaps` weight, sized for routing.

    Initially every coupling is `1 / N_out`, so `s_j = (1 / N_out) sum_i
    W_ij u_i`.  With weights of standard deviation `gain * N_out /
    sqrt(N_in * D_in * D_out)` and unit-length inputs, `|s_j|` starts near
    `gain`: the squash is then neither saturated nor in its flat region near
    0, where its derivative (about `2 |s|`) would starve the margin loss of
    gradient.

    Args:
        gain: Float, the initial length of the output capsules' input
            `s_j`. Defaults to `0.5`.
        seed: Integer or `None`, the random seed.

    Example:

    >>> from tflm_caps.layers import CapsuleInitializer
    >>> W = CapsuleInitializer(seed=1)((1152, 10, 16, 8))
    >>> print(W.shape)
    (1152, 10, 16, 8)
    """

    def __init__(self, gain=0.5, seed=None):
        self.gain = float(gain)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        if len(shape) != 4:
            raise ValueError(f"CapsuleInitializer: expected a 4-D weight "
                             f"[N_in, N_out, D_out, D_in], got {tuple(shape)}")
        n_in, n_out, d_out, d_in = shape
        std = self.gain * n_out / math.sqrt(n_in * d_in * d_out)
        return keras.random.normal(shape, stddev=std, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


@_register
class ClassCaps(keras.layers.Layer):
    """Class capsules with dynamic routing-by-agreement (Sabour et al. 2017).

    Each input capsule `u_i` predicts every output capsule through its own
    matrix, `u_hat_ij = W_ij @ u_i`, with the weight `W` of shape
    `(N_in, num_capsules, capsule_dim, D_in)` (no bias); `routings`
    iterations of `capsule_math.dynamic_routing` combine the predictions.
    Calling the layer with `return_intermediates=True` also returns the
    routing trace (logits, couplings, `s` and `v` of every iteration).

    Args:
        num_capsules: Integer, number of output capsules `N_out`.
        capsule_dim: Integer, dimension `D_out` of each output capsule.
        routings: Integer from 1 to 8 (`ops_contract.MAX_ROUTINGS`, the
            limit of the int8 operator), routing iterations. Defaults to `3`.
        kernel_initializer: Initializer of `W`. Defaults to
            `CapsuleInitializer()`.
        stop_gradient_routing: Boolean; when `True` (the default) the
            coupling coefficients act as constants in back-propagation.
            Forward values are the same either way.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        3D tensor `(batch_size, N_in, D_in)` with known `N_in` and `D_in`.

    Output shape:
        3D tensor `(batch_size, num_capsules, capsule_dim)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import ClassCaps
    >>> u = np.random.rand(2, 1152, 8).astype("float32")
    >>> print(ClassCaps(10, 16, routings=3)(u).shape)
    (2, 10, 16)
    """

    def __init__(self, num_capsules, capsule_dim, routings=3, kernel_initializer=None,
                 stop_gradient_routing=True, **kwargs):
        super().__init__(**kwargs)
        name = f"ClassCaps '{self.name}'"
        self.num_capsules = _positive_int(num_capsules, name, "num_capsules")
        self.capsule_dim = _positive_int(capsule_dim, name, "capsule_dim")
        if (isinstance(routings, bool) or not isinstance(routings, numbers.Integral)
                or not MIN_ROUTINGS <= routings <= MAX_ROUTINGS):
            # The int8 TFLMCaps_ClassCaps op runs at most MAX_ROUTINGS
            # iterations: refuse here, not at conversion time.
            raise ValueError(f"{name}: routings must be an integer from {MIN_ROUTINGS} to "
                             f"{MAX_ROUTINGS} (the limit of the int8 ClassCaps operator), "
                             f"got {routings!r}")
        self.routings = int(routings)
        self.stop_gradient_routing = bool(stop_gradient_routing)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer if kernel_initializer is not None else CapsuleInitializer())
        self.input_spec = InputSpec(ndim=3)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"ClassCaps '{self.name}': expected input capsules "
                             f"[batch, N_in, D_in] with known N_in and D_in, "
                             f"got shape {tuple(input_shape)}")
        self.input_num_capsules = int(input_shape[1])
        self.input_capsule_dim = int(input_shape[2])
        self.W = self.add_weight(
            name="W",
            shape=(self.input_num_capsules, self.num_capsules, self.capsule_dim,
                   self.input_capsule_dim),
            initializer=self.kernel_initializer, trainable=True)
        self.input_spec = InputSpec(
            ndim=3, axes={1: self.input_num_capsules, 2: self.input_capsule_dim})
        self.built = True

    def call(self, inputs, return_intermediates=False):
        u_hat = capsule_math.predictions(inputs, tf.cast(self.W, inputs.dtype))
        return capsule_math.dynamic_routing(u_hat, self.routings,
                                   return_intermediates=return_intermediates,
                                   stop_gradient=self.stop_gradient_routing)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_capsules, self.capsule_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "num_capsules": self.num_capsules,
            "capsule_dim": self.capsule_dim,
            "routings": self.routings,
            "stop_gradient_routing": self.stop_gradient_routing,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@_register
class Length(keras.layers.Layer):
    """Capsule lengths (Euclidean norms along the last axis).

    The length of a zero capsule is exactly 0, with a zero gradient.

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        Tensor `(batch_size, ..., capsule_dim)`, typically
        `(batch_size, num_capsules, capsule_dim)`.

    Output shape:
        The input shape without its last axis, e.g. `(batch_size, num_capsules)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import Length
    >>> v = np.array([[[3.0, 4.0], [0.0, 0.0]]], "float32")
    >>> print(Length()(v).numpy())
    [[5. 0.]]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = InputSpec(min_ndim=2)

    def call(self, inputs):
        return capsule_math.length(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@_register
class Mask(keras.layers.Layer):
    """Keep one capsule per sample, zero the others and flatten.

    Called as `Mask()([capsules, labels])` it keeps the labelled capsule;
    called as `Mask()(capsules)` (or with labels `None`) it keeps the
    longest one.  The decoder of Sabour et al. reads its output.

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `capsules`: 3D tensor `(batch_size, num_capsules, capsule_dim)`;
        `labels` (optional): one-hot `(batch_size, num_capsules)` or class
        ids `(batch_size,)` / `(batch_size, 1)`.

    Output shape:
        2D tensor `(batch_size, num_capsules * capsule_dim)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import Mask
    >>> caps = np.array([[[1.0, 1.0], [3.0, 4.0]]], "float32")
    >>> print(Mask()(caps).numpy())
    [[0. 0. 3. 4.]]
    >>> print(Mask()([caps, np.array([0])]).numpy())
    [[1. 1. 0. 0.]]
    """

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 1:
                capsules, labels = inputs[0], None
            elif len(inputs) == 2:
                capsules, labels = inputs
            else:
                raise ValueError(f"Mask '{self.name}': expected capsules or "
                                 f"[capsules, labels], got {len(inputs)} inputs")
        else:
            capsules, labels = inputs, None
        return capsule_math.one_hot_mask(capsules, labels)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
                input_shape[0], (list, tuple)):
            input_shape = input_shape[0]
        n, d = input_shape[-2], input_shape[-1]
        return (input_shape[0], None if n is None or d is None else n * d)


@_register
class Decoder(keras.layers.Layer):
    """Reconstruction decoder: Dense relu layers, then Dense sigmoid pixels.

    Maps the masked capsules to an image of `target_shape` with pixel
    values in (0, 1) (Sabour et al.: Dense 512, Dense 1024, Dense pixels).

    Args:
        target_shape: Tuple of integers, the image shape, e.g. `(28, 28, 1)`.
        hidden_units: Tuple of integers, units of the relu layers.
            Defaults to `(512, 1024)`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        2D tensor `(batch_size, features)`, e.g. the output of `Mask`.

    Output shape:
        `(batch_size, *target_shape)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import Decoder
    >>> x = np.random.rand(2, 160).astype("float32")
    >>> print(Decoder((28, 28, 1))(x).shape)
    (2, 28, 28, 1)
    """

    def __init__(self, target_shape, hidden_units=(512, 1024), **kwargs):
        super().__init__(**kwargs)
        name = f"Decoder '{self.name}'"
        self.target_shape = tuple(_positive_int(d, name, "target_shape") for d in target_shape)
        self.hidden_units = tuple(_positive_int(u, name, "hidden_units") for u in hidden_units)
        self.hidden = [keras.layers.Dense(u, activation="relu", name=f"dense{k + 1}")
                       for k, u in enumerate(self.hidden_units)]
        self.output_dense = keras.layers.Dense(math.prod(self.target_shape),
                                               activation="sigmoid", name="pixels")
        self.input_spec = InputSpec(ndim=2)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.input_spec = InputSpec(ndim=2, axes={-1: shape[-1]})
        for layer in self.hidden:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.output_dense.build(shape)
        self.built = True

    def call(self, inputs):
        x = inputs
        for layer in self.hidden:
            x = layer(x)
        x = self.output_dense(x)
        return tf.reshape(x, [-1, *self.target_shape])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.target_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape),
                "hidden_units": list(self.hidden_units)}
