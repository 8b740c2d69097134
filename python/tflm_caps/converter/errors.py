"""Errors raised by the converter."""


class ConversionError(ValueError):
    """The model, the data or an option cannot be converted; the message names
    the layer/argument and what was expected."""
