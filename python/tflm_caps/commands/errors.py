"""Which failures of a sub-command are the user's: one line, exit code 2.

``CliError`` is what the commands raise for an argument or a combination of
arguments they refuse.  The other user errors are the project's own classes
for a bad input (data source, Keras model, .tflite file, metadata, arena
size, a model TFLM refuses) and a path on the command line that is missing
or not writable; their messages name the file or argument and what was
expected.  Anything else, a plain ``ValueError`` from deep inside included,
is a bug and keeps its traceback.
"""

# A path named on the command line that is missing, in the way or not writable.
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError)


class CliError(Exception):
    """A command-line argument the command refuses: printed without a traceback."""


def user_error_types():
    """The exception classes reported as user errors.

    Imported when an error is being reported, not before: ``--help`` stays
    light, and a class whose module was never loaded cannot have been raised.
    """
    from tflm_caps.converter.errors import ConversionError
    from tflm_caps.converter.options import OptionsError
    from tflm_caps.data import DataError
    from tflm_caps.metadata import MetadataError
    from tflm_caps.pruning.structure import PruningError
    from tflm_caps.runtime import ArenaTooSmallError, ModelFormatError, TFLMError

    return (CliError, *PATH_ERRORS, ConversionError, OptionsError, DataError, MetadataError,
            ModelFormatError, ArenaTooSmallError, TFLMError, PruningError)
