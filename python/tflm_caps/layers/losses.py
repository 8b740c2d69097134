"""Losses for capsule networks, in the Keras pattern: a ``keras.losses.Loss``
class (``MarginLoss``, ``SumSquaredError``) and the per-sample function it
wraps (``margin_loss``, ``sum_squared_error``), all registered serializable."""
import keras
import tensorflow as tf

from tflm_caps.layers import capsule_math

_register = keras.saving.register_keras_serializable(package="tflm_caps")


@_register
def margin_loss(y_true, y_pred, m_plus=0.9, m_minus=0.1, lambda_=0.5):
    """Margin loss of capsule lengths (Sabour et al. 2017), one value per sample.

    Formula:

    ```python
    loss = sum(y_true * relu(m_plus - y_pred) ** 2
               + lambda_ * (1 - y_true) * relu(y_pred - m_minus) ** 2, axis=-1)
    ```

    Args:
        y_true: One-hot labels `(batch_size, num_classes)` or class ids
            `(batch_size,)` / `(batch_size, 1)`.
        y_pred: Capsule lengths `(batch_size, num_classes)`.
        m_plus: Length the capsule of the true class should reach.
        m_minus: Length the other capsules should stay below.
        lambda_: Weight of the absent-class term.

    Returns:
        Margin loss values with shape `(batch_size,)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import margin_loss
    >>> lengths = np.array([[0.2, 0.95, 0.05], [0.9, 0.3, 0.1]], "float32")
    >>> print(np.round(margin_loss(np.array([1, 0]), lengths).numpy(), 4))
    [0.005 0.02 ]
    """
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.convert_to_tensor(y_true)
    num = y_pred.shape[-1]
    if capsule_math.is_integer_labels(y_true, num):
        y_true = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), depth=num,
                            dtype=y_pred.dtype)
    else:
        y_true = tf.cast(y_true, y_pred.dtype)
    present = y_true * tf.square(tf.nn.relu(m_plus - y_pred))
    absent = lambda_ * (1.0 - y_true) * tf.square(tf.nn.relu(y_pred - m_minus))
    return tf.reduce_sum(present + absent, axis=-1)


@_register
def sum_squared_error(y_true, y_pred):
    """Sum of squared differences over all non-batch axes, one value per sample.

    Args:
        y_true: Target images `(batch_size, ...)`.
        y_pred: Reconstructed images of the same shape.

    Returns:
        Values with shape `(batch_size,)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import sum_squared_error
    >>> print(sum_squared_error(np.ones((2, 2, 2)), np.zeros((2, 2, 2))).numpy())
    [4. 4.]
    """
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.cast(tf.convert_to_tensor(y_true), y_pred.dtype)
    diff = tf.reshape(y_true - y_pred, [tf.shape(y_pred)[0], -1])
    return tf.reduce_sum(tf.square(diff), axis=-1)


@_register
class MarginLoss(keras.losses.Loss):
    """Margin loss on capsule lengths (Sabour et al. 2017), mean over the batch.

    Per sample it is `margin_loss(y_true, y_pred, m_plus, m_minus, lambda_)`:

    ```python
    loss = sum(y_true * relu(m_plus - y_pred) ** 2
               + lambda_ * (1 - y_true) * relu(y_pred - m_minus) ** 2, axis=-1)
    ```

    Args:
        m_plus: Length the capsule of the true class should reach.
            Defaults to `0.9`.
        m_minus: Length the other capsules should stay below. Defaults to `0.1`.
        lambda_: Weight of the absent-class term. Defaults to `0.5`.
        name: Name of the loss instance.
        **kwargs: `keras.losses.Loss` arguments (`reduction`, `dtype`).

    `y_true` is one-hot `(batch_size, num_classes)` (recommended) or class
    ids `(batch_size,)` / `(batch_size, 1)`; `y_pred` holds the capsule
    lengths `(batch_size, num_classes)`.

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import MarginLoss
    >>> y_true = np.array([[0, 1, 0], [1, 0, 0]], "float32")
    >>> y_pred = np.array([[0.2, 0.95, 0.05], [0.9, 0.3, 0.1]], "float32")
    >>> print(round(float(MarginLoss()(y_true, y_pred)), 4))
    0.0125
    """

    def __init__(self, m_plus=0.9, m_minus=0.1, lambda_=0.5, name="margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.m_plus = float(m_plus)
        self.m_minus = float(m_minus)
        self.lambda_ = float(lambda_)

    def call(self, y_true, y_pred):
        return margin_loss(y_true, y_pred, self.m_plus, self.m_minus, self.lambda_)

    def get_config(self):
        return {**super().get_config(), "m_plus": self.m_plus, "m_minus": self.m_minus,
                "lambda_": self.lambda_}


@_register
class SumSquaredError(keras.losses.Loss):
    """Per-sample sum of squared pixel errors, mean over the batch.

    The reconstruction loss of Sabour et al. (weighted by 0.0005 in
    training); per sample it is `sum_squared_error(y_true, y_pred)`.

    Args:
        name: Name of the loss instance.
        **kwargs: `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Example:

    >>> import numpy as np
    >>> from tflm_caps.layers import SumSquaredError
    >>> x = np.zeros((2, 4, 4, 1), "float32")
    >>> print(float(SumSquaredError()(x, x + 0.5)))
    4.0
    """

    def __init__(self, name="sum_squared_error", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return sum_squared_error(y_true, y_pred)
