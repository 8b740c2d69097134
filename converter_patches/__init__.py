"""The passes that finish the int8 conversion of capsule custom ops
(installed as ``tflm_caps.converter_patches``).

Each pass takes a ``ModelT`` (``tflm_caps.tflite.load``), rewrites it in
place and returns it; reading, writing and general graph editing live in
``tflm_caps.tflite``.
"""
