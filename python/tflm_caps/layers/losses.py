"""Losses for capsule networks (serializable Keras 3 losses)."""
import keras

from tflm_caps.layers import ops

_register = keras.saving.register_keras_serializable(package="tflm_caps")


@_register
class MarginLoss(keras.losses.Loss):
    """Margin loss on capsule lengths (Sabour et al. 2017), mean over the batch.

    y_true: one-hot ``[B, N]`` (recommended) or class ids ``[B]``/``[B, 1]``;
    y_pred: capsule lengths ``[B, N]``.
    """

    def __init__(self, m_plus=0.9, m_minus=0.1, lambda_=0.5, name="margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.m_plus = float(m_plus)
        self.m_minus = float(m_minus)
        self.lambda_ = float(lambda_)

    def call(self, y_true, y_pred):
        return ops.margin_loss(y_true, y_pred, self.m_plus, self.m_minus, self.lambda_)

    def get_config(self):
        return {**super().get_config(), "m_plus": self.m_plus, "m_minus": self.m_minus,
                "lambda_": self.lambda_}


@_register
class SumSquaredError(keras.losses.Loss):
    """Per-sample sum of squared pixel errors, mean over the batch.

    The reconstruction loss of Sabour et al. (weighted by 0.0005 in training).
    """

    def __init__(self, name="sum_squared_error", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return ops.sum_squared_error(y_true, y_pred)


def margin_loss(m_plus=0.9, m_minus=0.1, lambda_=0.5):
    """A ``MarginLoss`` instance with the given margins (for ``model.compile``)."""
    return MarginLoss(m_plus=m_plus, m_minus=m_minus, lambda_=lambda_)
