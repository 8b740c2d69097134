"""Keras 3 layers of Efficient-CapsNet (Mazzia, Salvetti, Chiaberge 2021).

The second capsule family of the project: primary capsules from a
depthwise convolution, the exponential squash and fully connected capsules
with single-pass self-attention routing.  Registered under the
``tflm_caps`` package name like every layer of ``tflm_caps.layers``.
"""
import keras
import tensorflow as tf

from tflm_caps.layers import capsule_math
from tflm_caps.layers.capsules import InputSpec, _conv_grid, _pair, _positive_int, _register


@_register
class EfficientSquash(keras.layers.Layer):
    """Efficient-CapsNet squash: `(1 - exp(-|s|)) * s / |s|`.

    Like `Squash` it keeps the direction of each vector along `axis` and
    maps its length into [0, 1), but grows faster for short vectors (slope 1
    at 0 instead of 0).  A zero vector maps to an exact zero, with the
    identity as gradient (the true derivative at 0).

    Args:
        axis: Integer, the axis holding the capsule dimension. Defaults to `-1`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        Arbitrary, e.g. `(batch_size, num_capsules, capsule_dim)`.

    Output shape:
        Same as the input.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import EfficientSquash
    >>> s = np.array([[[3.0, 4.0], [0.0, 0.0]]], "float32")
    >>> print(np.round(EfficientSquash()(s).numpy(), 4))
    [[[0.596  0.7946]
      [0.     0.    ]]]
    >>> v = EfficientSquash()(np.array([[0.0, 1.0]], "float32"))
    >>> print(round(float(np.linalg.norm(v)), 4))  # 1 - 1/e
    0.6321
    >>> print(EfficientSquash(axis=1).get_config()["axis"])
    1
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, inputs):
        return capsule_math.efficient_squash(inputs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@_register
class DepthwisePrimaryCaps(keras.layers.Layer):
    """Primary capsules from a depthwise convolution (Efficient-CapsNet).

    A `DepthwiseConv2D` (attribute `conv`, no activation by default) filters
    each input channel on its own; its NHWC output `(batch, H', W', C')`
    with `C' = channels * depth_multiplier` is reshaped row-major into
    capsules of `capsule_dim` values, so capsule `(y * W' + x) * (C' /
    capsule_dim) + k` holds channels `[k * capsule_dim, (k + 1) *
    capsule_dim)` at grid position `(y, x)`, then squashed with
    `EfficientSquash`.  Builtin DEPTHWISE_CONV_2D + RESHAPE reproduce it.

    Efficient-CapsNet on MNIST: a 9x9 depthwise convolution over a 9x9x128
    feature map, 16 capsules of 8 values.

    Args:
        capsule_dim: Integer, dimension of each capsule; must divide
            `channels * depth_multiplier`.
        kernel_size: Integer or pair, the convolution window.
        strides: Integer or pair of equal integers (TensorFlow's depthwise
            convolution), the convolution strides. Defaults to `1`.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        depth_multiplier: Integer, output channels per input channel.
            Defaults to `1`.
        activation: Activation applied before the squash. Defaults to `None`.
        depthwise_initializer: Initializer of the depthwise kernel.
            Defaults to `"glorot_uniform"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)`.

    Output shape:
        3D tensor `(batch_size, H' * W' * channels * depth_multiplier /
        capsule_dim, capsule_dim)` where `(H', W') = grid_shape(input_shape)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import DepthwisePrimaryCaps
    >>> x = np.random.rand(2, 9, 9, 128).astype("float32")
    >>> print(DepthwisePrimaryCaps(8, kernel_size=9)(x).shape)
    (2, 16, 8)
    >>> print(DepthwisePrimaryCaps(4, kernel_size=3, strides=2)(x).shape)
    (2, 512, 4)
    >>> caps = DepthwisePrimaryCaps(8, 9)(x).numpy()
    >>> print(bool(np.all(np.linalg.norm(caps, axis=-1) < 1.0)))
    True
    """

    def __init__(self, capsule_dim, kernel_size, strides=1, padding="valid",
                 depth_multiplier=1, activation=None, depthwise_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        name = f"DepthwisePrimaryCaps '{self.name}'"
        self.capsule_dim = _positive_int(capsule_dim, name, "capsule_dim")
        self.kernel_size = _pair(kernel_size, name, "kernel_size")
        self.strides = _pair(strides, name, "strides")
        if self.strides[0] != self.strides[1]:
            raise ValueError(f"{name}: TensorFlow's depthwise convolution needs equal strides "
                             f"in both dimensions, got {self.strides}")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"{name}: padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding
        self.depth_multiplier = _positive_int(depth_multiplier, name, "depth_multiplier")
        self.activation = keras.activations.get(activation)
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer)
        self.conv = keras.layers.DepthwiseConv2D(
            self.kernel_size, strides=self.strides, padding=self.padding,
            depth_multiplier=self.depth_multiplier, activation=self.activation,
            depthwise_initializer=self.depthwise_initializer, name="conv")
        self.input_spec = InputSpec(ndim=4)

    def build(self, input_shape):
        name = f"DepthwisePrimaryCaps '{self.name}'"
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"{name}: expected an NHWC input [batch, height, width, channels] "
                             f"with known channels, got shape {tuple(input_shape)}")
        grid = self.grid_shape(input_shape)
        if any(d is not None and d < 1 for d in grid):
            raise ValueError(f"{name}: input {tuple(input_shape)} is too small for kernel "
                             f"{self.kernel_size} stride {self.strides} with "
                             f"'{self.padding}' padding")
        channels = int(input_shape[-1]) * self.depth_multiplier
        if channels % self.capsule_dim:
            raise ValueError(f"{name}: channels * depth_multiplier = {channels} is not a "
                             f"multiple of capsule_dim {self.capsule_dim}")
        self.conv.build(tuple(input_shape))
        self.input_spec = InputSpec(ndim=4, axes={-1: input_shape[-1]})
        self.built = True

    def grid_shape(self, input_shape):
        """(H', W') of the capsule grid for an NHWC ``input_shape`` (may be < 1)."""
        return _conv_grid(input_shape, self.kernel_size, self.strides, self.padding)

    def capsules_per_position(self, input_shape):
        """Capsules at each grid position: channels * depth_multiplier / capsule_dim."""
        return int(input_shape[-1]) * self.depth_multiplier // self.capsule_dim

    def call(self, inputs):
        x = self.conv(inputs)
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        if h is None or w is None:
            raise ValueError(f"DepthwisePrimaryCaps '{self.name}': spatial input size must "
                             "be known")
        x = tf.reshape(x, [-1, h * w * c // self.capsule_dim, self.capsule_dim])
        return capsule_math.efficient_squash(x)

    def compute_output_shape(self, input_shape):
        h, w = self.grid_shape(input_shape)
        n = None if h is None or w is None else h * w * self.capsules_per_position(input_shape)
        return (input_shape[0], n, self.capsule_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "capsule_dim": self.capsule_dim,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "depth_multiplier": self.depth_multiplier,
            "activation": keras.activations.serialize(self.activation),
            "depthwise_initializer": keras.initializers.serialize(self.depthwise_initializer),
        }


@_register
class SelfAttentionCaps(keras.layers.Layer):
    """Fully connected capsules with self-attention routing (Efficient-CapsNet).

    Each input capsule `u_i` votes for every output capsule through its own
    matrix, `u_hat_ij = W_ij @ u_i` (weight `W` of shape `(N_in,
    num_capsules, capsule_dim, D_in)`, the layout of `ClassCaps`).  One
    pass of `capsule_math.self_attention_routing` then weighs the votes:
    the agreement of a vote with the sum of all votes for the same output
    capsule, `A_ij = u_hat_ij . sum_k u_hat_kj / sqrt(capsule_dim)`, gives
    couplings `softmax_j(A_ij) + b_ij` (learned bias `b`, shape `(N_in,
    num_capsules)`, added after the softmax), `s_j = sum_i c_ij u_hat_ij`
    and `v_j = efficient_squash(s_j)`.  Calling the layer with
    `return_intermediates=True` also returns `A`, `c` and `s`.

    Args:
        num_capsules: Integer, number of output capsules `N_out`.
        capsule_dim: Integer, dimension `D_out` of each output capsule.
        kernel_initializer: Initializer of `W`. Defaults to `"he_normal"`.
        bias_initializer: Initializer of `b`. Defaults to `"zeros"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        3D tensor `(batch_size, N_in, D_in)` with known `N_in` and `D_in`.

    Output shape:
        3D tensor `(batch_size, num_capsules, capsule_dim)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import SelfAttentionCaps
    >>> u = np.random.rand(2, 16, 8).astype("float32")
    >>> layer = SelfAttentionCaps(10, 16)
    >>> print(layer(u).shape)
    (2, 10, 16)
    >>> print(tuple(layer.W.shape), tuple(layer.b.shape), layer.count_params())
    (16, 10, 16, 8) (16, 10) 20640
    >>> v, trace = layer(u, return_intermediates=True)
    >>> print(np.allclose(trace["c"].numpy().sum(axis=-1), 1.0))  # b = 0: a softmax
    True
    """

    def __init__(self, num_capsules, capsule_dim, kernel_initializer="he_normal",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        name = f"SelfAttentionCaps '{self.name}'"
        self.num_capsules = _positive_int(num_capsules, name, "num_capsules")
        self.capsule_dim = _positive_int(capsule_dim, name, "capsule_dim")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = InputSpec(ndim=3)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"SelfAttentionCaps '{self.name}': expected input capsules "
                             f"[batch, N_in, D_in] with known N_in and D_in, "
                             f"got shape {tuple(input_shape)}")
        self.input_num_capsules = int(input_shape[1])
        self.input_capsule_dim = int(input_shape[2])
        self.W = self.add_weight(
            name="W",
            shape=(self.input_num_capsules, self.num_capsules, self.capsule_dim,
                   self.input_capsule_dim),
            initializer=self.kernel_initializer, trainable=True)
        self.b = self.add_weight(name="b", shape=(self.input_num_capsules, self.num_capsules),
                                 initializer=self.bias_initializer, trainable=True)
        self.input_spec = InputSpec(
            ndim=3, axes={1: self.input_num_capsules, 2: self.input_capsule_dim})
        self.built = True

    def call(self, inputs, return_intermediates=False):
        u_hat = capsule_math.predictions(inputs, tf.cast(self.W, inputs.dtype))
        return capsule_math.self_attention_routing(u_hat, tf.cast(self.b, inputs.dtype),
                                                   return_intermediates=return_intermediates)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_capsules, self.capsule_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "num_capsules": self.num_capsules,
            "capsule_dim": self.capsule_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
