"""Where a CapsNet can be cut, and the cut itself (smaller shapes, not masks).

``find(model)`` walks the chain image -> convolutions -> PrimaryCaps ->
ClassCaps of a functional Keras model and records which weights share an
axis: the output channels of a convolution are the input channels of the
next convolution (or of the primary-capsule convolution) and the channels
of any BatchNormalization in between; primary capsule type ``k`` owns
output channels ``[k*D, (k+1)*D)`` of the primary-capsule convolution and,
at every grid position, one input capsule of ClassCaps, i.e. rows
``(y*W' + x)*K + k`` of its weight ``W``.

``shrink(model, structure, keep)`` rebuilds the model with those axes cut
down to the kept indices: the result is an ordinary functional model of
the same layer classes with smaller configs and sliced weights.
"""
import dataclasses

import numpy as np

# Layers that may sit between two convolutions without mixing channels:
# they act per channel (or not at all), so a removed channel simply vanishes.
_PASS_THROUGH = ("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout",
                 "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "MaxPooling2D",
                 "AveragePooling2D", "ZeroPadding2D", "Cropping2D", "Identity")


class PruningError(ValueError):
    """The model cannot be pruned as asked (a user-facing error)."""


@dataclasses.dataclass
class ConvGroup:
    """A convolution whose output channels can be removed.

    ``batch_norms``: BatchNormalization layers after it (sliced with it).
    ``consumer``: the layer whose kernel's input channels follow (the next
    Conv2D or the PrimaryCaps).
    """

    name: str
    channels: int
    batch_norms: list
    consumer: str


@dataclasses.dataclass
class CapsStructure:
    """The prunable axes of a CapsNet (see the module docstring)."""

    convs: list            # ConvGroup, input to output order
    primary: str           # PrimaryCaps layer name
    class_caps: str        # ClassCaps layer name
    num_types: int         # primary capsule types K
    capsule_dim: int       # D_in
    grid: tuple            # (H', W') of the capsule grid

    @property
    def input_capsules(self):
        return self.grid[0] * self.grid[1] * self.num_types

    def conv(self, name):
        for group in self.convs:
            if group.name == name:
                return group
        raise PruningError(f"no prunable convolution named {name!r}; prunable: "
                           f"{', '.join(g.name for g in self.convs) or 'none'}")

    def full_keep(self):
        """The keep-everything selection for ``shrink``."""
        keep = {"types": list(range(self.num_types))}
        keep.update({g.name: list(range(g.channels)) for g in self.convs})
        return keep


def _source(layer):
    """The layer feeding ``layer`` (None for an input layer); one input only."""
    import keras

    if isinstance(layer, keras.layers.InputLayer):
        return None
    inputs = layer.input
    if isinstance(inputs, (list, tuple, dict)):
        raise PruningError(f"layer {layer.name!r} ({type(layer).__name__}) has several inputs: "
                           "pruning needs a single chain from the image to the capsules")
    history = getattr(inputs, "_keras_history", None)
    if history is None:
        raise PruningError(f"layer {layer.name!r}: cannot follow its input")
    return history.operation


def find(model):
    """The ``CapsStructure`` of ``model`` (image -> ... -> PrimaryCaps -> ClassCaps).

    Raises ``PruningError`` naming the layer when the model has no capsule
    layers, several of them, or a layer between the image and the primary
    capsules that mixes channels in a way pruning cannot follow.
    """
    import keras

    from tflm_caps.layers import ClassCaps, PrimaryCaps

    name = getattr(model, "name", "model")
    if not isinstance(model, keras.Model):
        raise PruningError(f"expected a keras.Model, got {type(model).__name__}")
    class_caps = [layer for layer in model.layers if isinstance(layer, ClassCaps)]
    primary = [layer for layer in model.layers if isinstance(layer, PrimaryCaps)]
    if not class_caps or not primary:
        raise PruningError(f"model {name!r} has no capsule layers (PrimaryCaps followed by "
                           "ClassCaps): nothing to prune")
    if len(class_caps) != 1 or len(primary) != 1:
        raise PruningError(f"model {name!r} has {len(primary)} PrimaryCaps and "
                           f"{len(class_caps)} ClassCaps layers; pruning supports one of each")
    cc, pc = class_caps[0], primary[0]
    if _source(cc) is not pc:
        raise PruningError(f"model {name!r}: ClassCaps {cc.name!r} must take the output of "
                           f"PrimaryCaps {pc.name!r} directly")

    # Walk back from the primary capsules to the image.
    chain = []
    layer = _source(pc)
    while layer is not None:
        chain.append(layer)
        layer = _source(layer)
    chain.reverse()
    for layer in chain[1:]:
        if _consumers(model, layer) > 1:
            raise PruningError(f"model {name!r}: the output of {layer.name!r} is used by "
                               "several layers; pruning needs a single chain")

    convs, current = [], None
    for layer in chain:
        kind = type(layer).__name__
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if kind == "Conv2D":
            if getattr(layer, "groups", 1) != 1:
                raise PruningError(f"layer {layer.name!r}: grouped convolutions are not "
                                   "supported by pruning")
            if current is not None:
                current.consumer = layer.name
            current = ConvGroup(layer.name, int(layer.filters), [], None)
            convs.append(current)
        elif kind == "BatchNormalization":
            if layer.axis not in (-1, 3, [3], [-1]):
                raise PruningError(f"layer {layer.name!r}: BatchNormalization must normalize "
                                   "the channel axis (-1) for pruning")
            if current is not None:
                current.batch_norms.append(layer.name)
        elif kind not in _PASS_THROUGH:
            raise PruningError(f"model {name!r}: layer {layer.name!r} ({kind}) between the "
                               "image and the primary capsules is not supported by pruning "
                               "(supported: Conv2D, BatchNormalization, "
                               f"{', '.join(_PASS_THROUGH)})")
    if current is not None:
        current.consumer = pc.name
    grid = tuple(int(d) for d in pc.grid_shape(tuple(pc.input.shape)))
    return CapsStructure(convs=convs, primary=pc.name, class_caps=cc.name,
                         num_types=int(pc.num_capsules), capsule_dim=int(pc.capsule_dim),
                         grid=grid)


def _consumers(model, layer):
    """How many layers of ``model`` take ``layer``'s output."""
    count = 0
    for other in model.layers:
        try:
            src = _source(other)
        except PruningError:
            continue
        count += src is layer
    return count


def check_keep(structure, keep):
    """Validate a selection ``{"types": [...], conv name: [...]}``; returns it normalized."""
    out = {}
    sizes = {"types": structure.num_types, **{g.name: g.channels for g in structure.convs}}
    unknown = set(keep) - set(sizes)
    if unknown:
        raise PruningError(f"cannot prune {', '.join(sorted(unknown))}: prunable axes are "
                           f"{', '.join(sizes)}")
    for axis, size in sizes.items():
        idx = sorted(int(i) for i in keep.get(axis, range(size)))
        if not idx:
            raise PruningError(f"{axis}: at least one must be kept")
        if len(set(idx)) != len(idx) or idx[0] < 0 or idx[-1] >= size:
            raise PruningError(f"{axis}: kept indices must be distinct and in [0, {size}), "
                               f"got {idx}")
        out[axis] = idx
    return out


def _slice_weights(layer, in_keep, out_keep, structure, keep):
    """Weights of ``layer`` cut to the kept axes, in ``get_weights()`` order."""
    from tflm_caps.layers import ClassCaps, PrimaryCaps

    weights = layer.get_weights()
    kind = type(layer).__name__
    if isinstance(layer, PrimaryCaps):
        d = structure.capsule_dim
        channels = np.concatenate([np.arange(k * d, (k + 1) * d) for k in keep["types"]])
        kernel, bias = weights
        if in_keep is not None:
            kernel = kernel[:, :, in_keep, :]
        return [kernel[..., channels], bias[channels]]
    if isinstance(layer, ClassCaps):
        (w,) = weights
        positions = structure.grid[0] * structure.grid[1]
        w = w.reshape(positions, structure.num_types, *w.shape[1:])[:, keep["types"]]
        return [w.reshape(-1, *w.shape[2:])]
    if kind == "Conv2D":
        kernel, *rest = weights
        if in_keep is not None:
            kernel = kernel[:, :, in_keep, :]
        if out_keep is not None:
            kernel = kernel[..., out_keep]
            rest = [b[out_keep] for b in rest]
        return [kernel, *rest]
    if kind == "BatchNormalization" and out_keep is not None:
        return [w[out_keep] for w in weights]
    return weights


def shrink(model, structure, keep):
    """``model`` rebuilt with only the kept capsule types and channels.

    keep: ``{"types": [type indices], "<conv name>": [channel indices]}``
    (missing axes are kept whole).  Returns a new functional model with the
    same layer names and classes, smaller configs and sliced weights; the
    original is left untouched.
    """
    import keras

    keep = check_keep(structure, keep)
    out_keep = {}     # layer name -> kept output channels (convs and their batch norms)
    in_keep = {}      # layer name -> kept input channels (the consumers)
    for group in structure.convs:
        if len(keep[group.name]) == group.channels:
            continue
        out_keep[group.name] = keep[group.name]
        for bn in group.batch_norms:
            out_keep[bn] = keep[group.name]
        in_keep[group.consumer] = keep[group.name]

    def clone(layer):
        config = layer.get_config()
        if layer.name == structure.primary:
            config["num_capsules"] = len(keep["types"])
        elif layer.name in out_keep and "filters" in config:
            config["filters"] = len(out_keep[layer.name])
        return type(layer).from_config(config)

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not layer.weights:
            continue
        new.get_layer(layer.name).set_weights(_slice_weights(
            layer, in_keep.get(layer.name), out_keep.get(layer.name), structure, keep))
    return new
