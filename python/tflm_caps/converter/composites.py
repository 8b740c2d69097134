"""Capsule math as fusable composite tf.functions.

Each function carries an ``experimental_implements`` NameAttrList with
``tfl_fusable_op: true``; with ``allow_custom_ops`` the TF converter replaces
every call by one TFLite CUSTOM op whose name is the NameAttrList name and
whose inputs are the function arguments (a constant argument, such as the
routing weights, becomes a constant input).  The bodies use the same float
math as the Keras layers (``tflm_caps.layers.capsule_math``): they define what the
float ``.tflite`` means and let the export be checked against Keras.
"""
import tensorflow as tf

from tflm_caps.layers import capsule_math
from tflm_caps import ops_contract as C


def implements(name, **int_attrs):
    """NameAttrList text proto marking a function as fusable into CUSTOM op ``name``."""
    parts = [f'name: "{name}"', 'attr {key: "tfl_fusable_op" value {b: true}}']
    for key, value in sorted(int_attrs.items()):
        parts.append(f'attr {{key: "{key}" value {{i: {int(value)}}}}}')
    return " ".join(parts)


def squash_fn():
    # Only tensors are arguments: each argument becomes an op input.
    def body(x):
        return capsule_math.squash(x)
    return tf.function(body, autograph=False, experimental_implements=implements(C.SQUASH))


def length_fn():
    def body(v):
        return capsule_math.length(v)
    return tf.function(body, autograph=False, experimental_implements=implements(C.LENGTH))


def class_caps_fn(num_routing, store_predictions=True):
    """u [B, N_in, D_in], W [N_in, N_out, D_out, D_in] -> v [B, N_out, D_out]."""
    def body(u, w):
        return capsule_math.dynamic_routing(capsule_math.predictions(u, w), num_routing)
    return tf.function(body, autograph=False, experimental_implements=implements(
        C.CLASS_CAPS, **{C.OPT_NUM_ROUTING: num_routing,
                         C.OPT_STORE_PREDICTIONS: int(bool(store_predictions))}))


def efficient_squash_fn():
    def body(x):
        return capsule_math.efficient_squash(x)
    return tf.function(body, autograph=False,
                       experimental_implements=implements(C.EFFICIENT_SQUASH))


def self_attention_fn():
    """u [B, N_in, D_in], W [N_in, N_out, D_out, D_in], b [N_in, N_out] -> v [B, N_out, D_out]."""
    def body(u, w, b):
        return capsule_math.self_attention_routing(capsule_math.predictions(u, w), b)
    return tf.function(body, autograph=False,
                       experimental_implements=implements(C.SELF_ATTENTION_CAPS))
