"""The passes that finish the int8 conversion of capsule custom ops
(installed as ``tflm_caps.converter_patches``): ``int8_custom_ops`` (capsule
ops and their weights), ``int4_weights`` (packed int4 filters of the
builtins TFLM runs with them), ``slim`` (bytes no kernel reads).

Each pass takes a ``ModelT`` (``tflm_caps.tflite.load``), rewrites it in
place and returns it; reading, writing and general graph editing live in
``tflm_caps.tflite``.
"""
