"""Keras 3 capsule layers (TensorFlow backend).

All layers are registered under the ``tflm_caps`` package name, so a model
saved as ``.keras`` loads back with plain ``keras.models.load_model`` once
``tflm_caps.layers`` has been imported.
"""
import math
import numbers

import keras
import tensorflow as tf

from tflm_caps.layers import ops

_register = keras.saving.register_keras_serializable(package="tflm_caps")


def _positive_int(value, layer, arg):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{layer}: {arg} must be a positive integer, got {value!r}")
    return int(value)


def _pair(value, layer, arg):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{layer}: {arg} must be an int or a pair, got {value!r}")
        return tuple(_positive_int(v, layer, arg) for v in value)
    v = _positive_int(value, layer, arg)
    return (v, v)


@_register
class Squash(keras.layers.Layer):
    """squash(s) = |s|^2/(1+|s|^2) * s/|s| along ``axis`` (zero maps to zero)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, inputs):
        return ops.squash(inputs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@_register
class PrimaryCaps(keras.layers.Layer):
    """Conv2D -> reshape to capsules -> squash.

    The convolution has ``num_capsules * capsule_dim`` filters.  Its NHWC
    output ``[B, H', W', num_capsules*capsule_dim]`` is reshaped row-major to
    ``[B, H'*W'*num_capsules, capsule_dim]``: capsule ``(y*W' + x)*num_capsules
    + k`` holds conv channels ``[k*capsule_dim, (k+1)*capsule_dim)`` at grid
    position (y, x).  A builtin CONV_2D + RESHAPE reproduces this exactly.
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
        self.built = True

    def grid_shape(self, input_shape):
        """(H', W') of the capsule grid for an NHWC ``input_shape`` (may be < 1)."""
        out = []
        for size, k, st in zip(tuple(input_shape)[1:3], self.kernel_size, self.strides):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // st))
            else:
                out.append((size - k) // st + 1 if size >= k else 0)
        return tuple(out)

    def call(self, inputs):
        x = self.conv(inputs)
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            raise ValueError(f"PrimaryCaps '{self.name}': spatial input size must be known")
        x = tf.reshape(x, [-1, h * w * self.num_capsules, self.capsule_dim])
        return ops.squash(x)

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
    """Normal init for W ``[N_in, N_out, D_out, D_in]`` sized for routing.

    Initially every coupling is 1/N_out, so s_j = (1/N_out) sum_i W_ij u_i.
    With W entries of standard deviation ``gain * N_out / sqrt(N_in * D_in
    * D_out)`` and unit-length inputs, |s_j| starts near ``gain``: the squash
    is then neither saturated nor in its flat region near 0, where its
    derivative (about 2|s|) would starve the margin loss of gradient.
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

    Input u ``[B, N_in, D_in]``; weight ``W`` ``[N_in, N_out, D_out, D_in]``
    (no bias); output v ``[B, N_out, D_out]``.  See ``ops.dynamic_routing``.
    ``stop_gradient_routing`` (default True) treats the coupling
    coefficients as constants in back-propagation.
    """

    def __init__(self, num_capsules, capsule_dim, routings=3, kernel_initializer=None,
                 stop_gradient_routing=True, **kwargs):
        super().__init__(**kwargs)
        name = f"ClassCaps '{self.name}'"
        self.num_capsules = _positive_int(num_capsules, name, "num_capsules")
        self.capsule_dim = _positive_int(capsule_dim, name, "capsule_dim")
        if (isinstance(routings, bool) or not isinstance(routings, numbers.Integral)
                or routings < 1):
            raise ValueError(f"{name}: routings must be an integer >= 1, got {routings!r}")
        self.routings = int(routings)
        self.stop_gradient_routing = bool(stop_gradient_routing)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer if kernel_initializer is not None else CapsuleInitializer())

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
        self.built = True

    def call(self, inputs, return_intermediates=False):
        got = tuple(inputs.shape[1:])
        if len(got) != 2 or got != (self.input_num_capsules, self.input_capsule_dim):
            raise ValueError(f"ClassCaps '{self.name}': built for input capsules "
                             f"[batch, {self.input_num_capsules}, {self.input_capsule_dim}], "
                             f"got shape {tuple(inputs.shape)}")
        u_hat = ops.predictions(inputs, tf.cast(self.W, inputs.dtype))
        return ops.dynamic_routing(u_hat, self.routings,
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
    """Capsule lengths: ``[B, N, D]`` -> ``[B, N]`` (exactly 0 for zero capsules)."""

    def call(self, inputs):
        return ops.length(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@_register
class Mask(keras.layers.Layer):
    """Keep one capsule per sample and flatten: ``[B, N, D]`` -> ``[B, N*D]``.

    Called as ``Mask()([capsules, labels])`` it keeps the labelled capsule
    (labels one-hot ``[B, N]`` or class ids ``[B]``/``[B, 1]``); called as
    ``Mask()(capsules)`` (or with labels None) it keeps the longest capsule.
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
        return ops.one_hot_mask(capsules, labels)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
                input_shape[0], (list, tuple)):
            input_shape = input_shape[0]
        n, d = input_shape[-2], input_shape[-1]
        return (input_shape[0], None if n is None or d is None else n * d)


@_register
class Decoder(keras.layers.Layer):
    """Reconstruction decoder: Dense 512 relu, Dense 1024 relu, Dense sigmoid.

    Maps the masked capsules ``[B, N*D]`` to an image of ``target_shape``
    (e.g. ``(28, 28, 1)``) with pixel values in (0, 1).
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

    def build(self, input_shape):
        shape = tuple(input_shape)
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
