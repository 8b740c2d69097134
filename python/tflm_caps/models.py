"""Model zoo: published CapsNet architectures plus a tiny one for tests.

``build(name)`` returns the inference model (image -> class-capsule
lengths); ``build(name, decoder=True)`` the training model with inputs
``[image, one-hot label]`` and outputs ``[lengths, reconstruction]``.
Layer names are stable: ``conv1``..``convN``, ``primary_caps``,
``class_caps``, ``length`` (and ``label``, ``mask``, ``reconstruction`` in
the training model; ``bn1``..``bnN`` in a model with batch normalization).

Two capsule families: dynamic routing (Sabour et al.: ``PrimaryCaps`` +
``ClassCaps``) and self-attention routing (Efficient-CapsNet, ``"family":
"efficient"``: ``DepthwisePrimaryCaps`` + ``SelfAttentionCaps``, whose
``"primary"`` entry is (capsules per grid position, dim, kernel, stride) of
the depthwise convolution and ``"class_caps"`` (dim, None)).
"""
# Metadata only: importing this module does not import TensorFlow.
ZOO = {
    "sabour2017-mnist": {
        "description": "Original CapsNet: conv 256@9x9 -> 32x8D primary caps 9x9/2 "
                       "(1152 caps) -> 10x16D class caps, 3 routings",
        "paper": "Sabour, Frosst, Hinton, Dynamic Routing Between Capsules, NeurIPS 2017",
        "input_shape": (28, 28, 1),
        "num_classes": 10,
        "published_params": 6_804_224,
        "convs": [(256, 9, 1)],
        "primary": (32, 8, 9, 2),
        "class_caps": (16, 3),
    },
    "costa2022-mnist": {
        "description": "Edge CapsNet for MNIST: conv 16@7x7 -> 16x4D primary caps 7x7/2 "
                       "(1024 caps) -> 10x6D class caps, 3 routings",
        "paper": "Costa et al., Shifting Capsule Networks from the Cloud to the Deep Edge, "
                 "ACM TIST 2022 (arXiv 2110.02911)",
        "input_shape": (28, 28, 1),
        "num_classes": 10,
        "published_params": 296_800,
        "convs": [(16, 7, 1)],
        "primary": (16, 4, 7, 2),
        "class_caps": (6, 3),
    },
    "costa2022-cifar10": {
        "description": "Edge CapsNet for CIFAR-10: conv 32,32,64,64 3x3 strides 1,1,2,2 -> "
                       "16x4D primary caps 3x3/2 (64 caps) -> 10x5D class caps, 3 routings",
        "paper": "Costa et al., Shifting Capsule Networks from the Cloud to the Deep Edge, "
                 "ACM TIST 2022 (arXiv 2110.02911)",
        "input_shape": (32, 32, 3),
        "num_classes": 10,
        "published_params": 115_296,
        "convs": [(32, 3, 1), (32, 3, 1), (64, 3, 2), (64, 3, 2)],
        "primary": (16, 4, 3, 2),
        "class_caps": (5, 3),
    },
    "costa2022-smallnorb": {
        "description": "Edge CapsNet for smallNORB (32x32 stereo pair): conv 32@7x7 -> "
                       "16x4D primary caps 7x7/2 (1600 caps) -> 5x6D class caps, 3 routings",
        "paper": "Costa et al., Shifting Capsule Networks from the Cloud to the Deep Edge, "
                 "ACM TIST 2022 (arXiv 2110.02911)",
        "input_shape": (32, 32, 2),
        "num_classes": 5,
        "published_params": 295_584,
        "convs": [(32, 7, 1)],
        "primary": (16, 4, 7, 2),
        "class_caps": (6, 3),
    },
    "mazzia2021-mnist": {
        "description": "Efficient-CapsNet for MNIST: conv 32@5x5, 64@3x3, 64@3x3, 128@3x3/2 "
                       "(ReLU, BatchNorm) -> 16x8D primary caps 9x9 depthwise -> 10x16D "
                       "capsules, self-attention routing",
        "paper": "Mazzia, Salvetti, Chiaberge, Efficient-CapsNet: Capsule Network with "
                 "Self-Attention Routing, Scientific Reports 2021 (arXiv 2101.12491)",
        "input_shape": (28, 28, 1),
        "num_classes": 10,
        # Trainable parameters (the paper's "161K"): 161,248 in convolutions,
        # capsule weights and biases + 576 BatchNorm scales and offsets.
        "published_params": 161_824,
        "family": "efficient",
        "convs": [(32, 5, 1), (64, 3, 1), (64, 3, 1), (128, 3, 2)],
        "batch_norm": True,
        "primary": (16, 8, 9, 1),
        "class_caps": (16, None),
    },
    "tiny": {
        "description": "Small CapsNet for fast tests: conv 8@5x5/2 -> 8x4D primary caps 5x5/2 "
                       "(128 caps on 28x28) -> 10x4D class caps, 3 routings; inputs smaller "
                       "than 20x20 (e.g. 8x8 digits) use 3x3 kernels, conv stride 1",
        "paper": None,
        "input_shape": (28, 28, 1),
        "num_classes": 10,
        "published_params": None,
        "convs": [(8, 5, 2)],
        "primary": (8, 4, 5, 2),
        "class_caps": (4, 3),
    },
}

# Architecture of ``tiny`` for inputs smaller than this (height or width).
_TINY_SMALL_INPUT = 20
_TINY_SMALL = {"convs": [(16, 3, 1)], "primary": (8, 4, 3, 2)}


def names():
    """Names of the models in the zoo."""
    return list(ZOO)


def _spec(name, input_shape):
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(ZOO)}")
    spec = dict(ZOO[name])
    if name == "tiny" and min(input_shape[:2]) < _TINY_SMALL_INPUT:
        spec.update(_TINY_SMALL)
    return spec


def _check_input_shape(name, input_shape):
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"model {name!r}: input_shape must be (height, width, channels) "
                         f"with positive ints, got {input_shape!r}")
    return shape


def _valid_out(size, kernel, stride):
    return (size - kernel) // stride + 1 if size >= kernel else 0


def feature_shapes(name, input_shape=None):
    """Spatial size after each conv and the primary capsule grid (no TF needed).

    Returns a list of (height, width) for every conv then the capsule grid;
    raises ValueError when the input is too small for the architecture.
    """
    input_shape = _check_input_shape(name, input_shape or ZOO.get(name, {}).get(
        "input_shape", ()))
    spec = _spec(name, input_shape)
    h, w = input_shape[:2]
    shapes = []
    layers = [(f"conv{k + 1}", kernel, stride) for k, (_, kernel, stride)
              in enumerate(spec["convs"])]
    layers.append(("primary_caps", spec["primary"][2], spec["primary"][3]))
    for lname, kernel, stride in layers:
        h, w = _valid_out(h, kernel, stride), _valid_out(w, kernel, stride)
        if h < 1 or w < 1:
            raise ValueError(f"model {name!r}: input_shape {input_shape} is too small: "
                             f"layer {lname} ({kernel}x{kernel}, stride {stride}, "
                             "'valid' padding) has no output")
        shapes.append((h, w))
    return shapes


def build(name, decoder=False, num_classes=None, input_shape=None):
    """Build zoo model ``name`` as a functional ``keras.Model``.

    decoder=False: input image ``[B, H, W, C]`` in [0, 1] -> lengths
    ``[B, num_classes]``.  decoder=True: inputs ``[image, one-hot label]`` ->
    outputs ``[lengths, reconstruction]``.  ``num_classes`` and
    ``input_shape`` override the zoo defaults.
    """
    import keras

    from tflm_caps.layers import (ClassCaps, Decoder, DepthwisePrimaryCaps, Length, Mask,
                                  PrimaryCaps, SelfAttentionCaps)

    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(ZOO)}")
    input_shape = _check_input_shape(name, input_shape or ZOO[name]["input_shape"])
    if num_classes is None:
        num_classes = ZOO[name]["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"model {name!r}: num_classes must be an int >= 2, got {num_classes!r}")
    feature_shapes(name, input_shape)  # clear error before Keras raises an obscure one
    spec = _spec(name, input_shape)

    efficient = spec.get("family") == "efficient"
    image = keras.Input(shape=input_shape, name="image")
    x = image
    for k, (filters, kernel, stride) in enumerate(spec["convs"]):
        # Efficient-CapsNet's public code initializes its convolutions with he_normal.
        init = "he_normal" if efficient else "glorot_uniform"
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid",
                                activation="relu", kernel_initializer=init,
                                name=f"conv{k + 1}")(x)
        if spec.get("batch_norm"):
            x = keras.layers.BatchNormalization(name=f"bn{k + 1}")(x)
    caps, dim, kernel, stride = spec["primary"]
    out_dim, routings = spec["class_caps"]
    if efficient:
        x = DepthwisePrimaryCaps(dim, kernel, strides=stride, padding="valid",
                                 name="primary_caps")(x)
        v = SelfAttentionCaps(num_classes, out_dim, name="class_caps")(x)
    else:
        x = PrimaryCaps(caps, dim, kernel, strides=stride, padding="valid",
                        name="primary_caps")(x)
        v = ClassCaps(num_classes, out_dim, routings=routings, name="class_caps")(x)
    lengths = Length(name="length")(v)
    if not decoder:
        return keras.Model(image, lengths, name=name)
    label = keras.Input(shape=(num_classes,), name="label")
    masked = Mask(name="mask")([v, label])
    recon = Decoder(input_shape, name="reconstruction")(masked)
    return keras.Model([image, label], [lengths, recon], name=f"{name}-train")


def is_training_model(model):
    """True for a model built with ``decoder=True`` (two inputs, two outputs)."""
    return len(model.inputs) == 2 and len(model.outputs) == 2


def inference_model(model):
    """The image -> lengths model of ``model`` (weights shared, not copied).

    Accepts an inference model (returned as is) or a training model.
    """
    import keras

    if len(model.inputs) == 1 and len(model.outputs) == 1:
        return model
    if not is_training_model(model):
        raise ValueError(f"model {model.name!r}: expected an inference model (image -> "
                         "lengths) or a training model ([image, label] -> [lengths, "
                         f"reconstruction]), got {len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs")
    name = model.name[:-len("-train")] if model.name.endswith("-train") else model.name
    return keras.Model(model.inputs[0], model.outputs[0], name=name)


def count_inference_params(model):
    """Number of parameters of the inference part (no decoder), trainable or not
    (BatchNorm moving statistics included)."""
    return int(inference_model(model).count_params())


def count_trainable_params(model):
    """Number of trainable parameters of the inference part (no decoder)."""
    import math
    return int(sum(math.prod(w.shape) for w in inference_model(model).trainable_weights))


def compile_for_training(model, learning_rate=1e-3, reconstruction_weight=0.0005,
                         m_plus=0.9, m_minus=0.1, lambda_=0.5):
    """Compile with Adam + margin loss (+ weighted sum-squared reconstruction loss).

    Labels are one-hot: ``fit(x=image, y=one_hot)`` for an inference model,
    ``fit(x=[image, one_hot], y=[one_hot, image])`` for a training model.
    The ``accuracy`` metric is computed on the lengths.
    """
    import keras

    from tflm_caps.layers import MarginLoss, SumSquaredError

    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    margin = MarginLoss(m_plus=m_plus, m_minus=m_minus, lambda_=lambda_)
    accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if is_training_model(model):
        model.compile(optimizer=optimizer,
                      loss=[margin, SumSquaredError()],
                      loss_weights=[1.0, float(reconstruction_weight)],
                      metrics=[[accuracy], []])
    else:
        model.compile(optimizer=optimizer, loss=margin, metrics=[accuracy])
    return model


def describe(name):
    """JSON-friendly metadata of zoo model ``name`` (without building it)."""
    meta = ZOO[name]
    return {
        "name": name,
        "description": meta["description"],
        "paper": meta["paper"],
        "input_shape": list(meta["input_shape"]),
        "num_classes": meta["num_classes"],
        "published_params": meta["published_params"],
        "routing": "self-attention" if meta.get("family") == "efficient" else "dynamic",
        "num_input_capsules": _num_input_capsules(name),
    }


def inference_param_count(name, input_shape=None, num_classes=None):
    """Parameters of the inference model of zoo model ``name``, computed from
    the layer shapes (no TensorFlow; equal to ``count_inference_params`` of
    the built model, tested; BatchNorm moving statistics included).  An entry
    whose layers are not the conv / primary caps / class caps chain of one of
    the two families gives its own count as a ``"param_count"`` function
    ``(input_shape, num_classes) -> int``; None when it has neither.
    """
    counts = _param_counts(name, input_shape, num_classes)
    return None if counts is None else counts[0]


def trainable_param_count(name, input_shape=None, num_classes=None):
    """Trainable parameters of the inference model of zoo model ``name``
    (``count_trainable_params`` of the built model; BatchNorm's moving
    statistics are not trainable).  None when ``inference_param_count`` is."""
    counts = _param_counts(name, input_shape, num_classes)
    return None if counts is None else counts[1]


def _param_counts(name, input_shape, num_classes):
    """(all, trainable) parameters computed from the layer shapes, or None."""
    input_shape = _check_input_shape(name, input_shape or ZOO[name]["input_shape"])
    num_classes = ZOO[name]["num_classes"] if num_classes is None else num_classes
    spec = _spec(name, input_shape)
    if "param_count" in spec:
        total = int(spec["param_count"](input_shape, num_classes))
        return total, total
    if not all(k in spec for k in ("convs", "primary", "class_caps")):
        return None
    channels, total, moving = input_shape[2], 0, 0
    for filters, kernel, _ in spec["convs"]:  # Conv2D with bias
        total += kernel * kernel * channels * filters + filters
        if spec.get("batch_norm"):  # gamma, beta trainable; moving mean, variance not
            total += 4 * filters
            moving += 2 * filters
        channels = filters
    caps, dim, kernel, _ = spec["primary"]
    h, w = feature_shapes(name, input_shape)[-1]
    out_dim = spec["class_caps"][0]
    n_in = h * w * caps
    if spec.get("family") == "efficient":
        # DepthwiseConv2D with bias (caps * dim outputs per position), then
        # SelfAttentionCaps W (N_in, N_out, D_out, D_in) and its bias (N_in, N_out).
        total += kernel * kernel * caps * dim + caps * dim
        total += n_in * num_classes * out_dim * dim + n_in * num_classes
    else:
        # PrimaryCaps' Conv2D: caps * dim filters; ClassCaps W, no bias.
        total += kernel * kernel * channels * caps * dim + caps * dim
        total += n_in * num_classes * out_dim * dim
    return total, total - moving


def _num_input_capsules(name):
    h, w = feature_shapes(name)[-1]
    return h * w * _spec(name, ZOO[name]["input_shape"])["primary"][0]


__all__ = ["ZOO", "names", "build", "inference_model", "compile_for_training",
           "count_inference_params", "count_trainable_params", "inference_param_count",
           "trainable_param_count", "is_training_model", "feature_shapes", "describe"]
