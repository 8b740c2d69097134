"""Flatbuffer rewrites that finish what the TF converter cannot do for
capsule custom ops (installed as ``tflm_caps.converter_patches``)."""
