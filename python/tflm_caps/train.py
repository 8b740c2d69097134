"""Training of zoo (or user) CapsNets on a ``tflm_caps.data.Dataset``.

``train(model, dataset, ...)`` seeds everything, compiles with
``models.compile_for_training`` (Adam + margin loss, optional
reconstruction decoder), fits with a progress bar on stderr and measures
train and held-out accuracy of the final weights with the inference model.
Importing this module is light; Keras is imported when training starts.
"""
import dataclasses
import math
import sys
import time

import numpy as np

__all__ = ["RECIPES", "DEFAULT_RECIPE", "TrainResult", "recipe", "train", "accuracy",
           "set_seed"]

# Per-model defaults, chosen to reach their target held-out accuracy on the
# bundled split quickly on 2 CPU cores (numbers in docs/data.md).  Learning
# rate decays by ``lr_decay`` per epoch (exponential, as in Sabour et al.).
DEFAULT_RECIPE = {"epochs": 10, "batch_size": 32, "learning_rate": 1e-3, "lr_decay": 0.9,
                  "decoder": False}
RECIPES = {
    "tiny": {"epochs": 6, "batch_size": 32, "learning_rate": 3e-3, "lr_decay": 0.8,
             "decoder": False},
    "costa2022-mnist": {"epochs": 5, "batch_size": 32, "learning_rate": 3e-3, "lr_decay": 0.7,
                        "decoder": False},
    "mazzia2021-mnist": {"epochs": 5, "batch_size": 32, "learning_rate": 2e-3, "lr_decay": 0.7,
                         "decoder": False},
}


def recipe(model_name):
    """Default training settings for ``model_name`` (a copy)."""
    return dict(RECIPES.get(model_name, DEFAULT_RECIPE))


@dataclasses.dataclass
class TrainResult:
    """What ``train`` measured.  ``as_dict()`` is the CLI's ``--json`` body."""

    model: str
    epochs: int
    batch_size: int
    learning_rate: float
    lr_decay: float
    seed: int
    decoder: bool
    data: str
    train_accuracy: float
    test_accuracy: float
    seconds: float
    params: int
    history: dict
    inference_model: object = dataclasses.field(default=None, repr=False)

    def as_dict(self):
        out = dataclasses.asdict(dataclasses.replace(self, inference_model=None))
        del out["inference_model"]
        for key in ("train_accuracy", "test_accuracy"):
            if math.isnan(out[key]):
                out[key] = None  # NaN (not measured) is not valid JSON
        return out


def set_seed(seed):
    """Seed Python, numpy, TensorFlow and Keras (keras.utils.set_random_seed)."""
    import keras
    keras.utils.set_random_seed(int(seed))


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of an image -> lengths (or scores) model on labels ``y``."""
    from tflm_caps import models
    net = models.inference_model(model)
    scores = net.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(y).reshape(-1)))


def _progress_callback(total_steps, epochs, enabled):
    """A Keras callback driving one tqdm bar over all steps (stderr)."""
    import keras
    from tflm_caps.console import progress as progress_bar

    class TqdmProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = progress_bar(total=total_steps, unit="step", enabled=enabled,
                                    dynamic_ncols=True, leave=True)
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.bar.set_description(f"epoch {epoch + 1}/{epochs}")

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and batch % 10 == 0:
                self.bar.set_postfix({k: f"{float(v):.4f}" for k, v in logs.items()
                                      if k in ("loss", "accuracy", "length_accuracy")})

        def on_train_end(self, logs=None):
            self.bar.close()

    return TqdmProgress()


def _check_positive(value, name, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")
    if not value > 0 or (kind is float and not math.isfinite(value)):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return kind(value)


def _model_input_shape(model):
    shape = model.inputs[0].shape
    return tuple(int(d) if d is not None else None for d in shape[1:])


def train(model, dataset, epochs=None, batch_size=None, seed=0, decoder=None,
          learning_rate=None, lr_decay=None, fit=None, progress=True, verbose=True,
          train_eval_samples=None):
    """Train ``model`` on ``dataset``; returns ``(trained_model, TrainResult)``.

    model: a zoo name (built for the dataset's input shape and classes, with
    the reconstruction decoder if ``decoder``) or a ``keras.Model`` (an
    inference model or a ``models.build(..., decoder=True)`` training
    model).  ``None`` settings come from ``recipe(name)``.  The returned
    model is the one trained (the training model when a decoder was used);
    ``result.inference_model`` is its image -> lengths part (shared weights).

    fit: when the data's image shape differs from the model's, ``None``
    raises; ``auto``/``pad``/``resize`` adapt the data (``Dataset.fit_to``).
    train_eval_samples: images of the train split used to measure the final
    train accuracy (``None``: all; ``0``: skip, NaN; else a stratified
    subset, which saves time on big models).  verbose prints the held-out
    accuracy at the end (to stderr).
    """
    from tflm_caps import models
    from tflm_caps.data import Dataset

    if not isinstance(dataset, Dataset):
        raise ValueError(f"train: dataset must be a tflm_caps.data.Dataset, got "
                         f"{type(dataset).__name__}")
    name = model if isinstance(model, str) else getattr(model, "name", "model")
    base = recipe(name if isinstance(model, str) else "")
    epochs = _check_positive(base["epochs"] if epochs is None else epochs, "epochs")
    batch_size = _check_positive(base["batch_size"] if batch_size is None else batch_size,
                                 "batch_size")
    learning_rate = _check_positive(base["learning_rate"] if learning_rate is None
                                    else learning_rate, "learning_rate", float)
    lr_decay = _check_positive(base["lr_decay"] if lr_decay is None else lr_decay,
                               "lr_decay", float)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if train_eval_samples is not None and (isinstance(train_eval_samples, bool) or not
                                           isinstance(train_eval_samples, int)
                                           or train_eval_samples < 0):
        raise ValueError(f"train_eval_samples must be None or an integer >= 0, got "
                         f"{train_eval_samples!r}")

    import keras

    set_seed(seed)
    if isinstance(model, str):
        if model not in models.names():
            raise ValueError(f"unknown model {model!r}; available: {', '.join(models.names())}")
        decoder = base["decoder"] if decoder is None else bool(decoder)
        shape = dataset.input_shape
        if fit is not None:
            shape = tuple(models.ZOO[model]["input_shape"])
        net = models.build(model, decoder=decoder, num_classes=dataset.num_classes,
                           input_shape=shape)
    elif isinstance(model, keras.Model):
        net = model
        is_training = models.is_training_model(net)
        if decoder and not is_training:
            raise ValueError(f"model {net.name!r} is an inference model: decoder=True needs a "
                             "training model from models.build(name, decoder=True)")
        decoder = is_training
    else:
        raise ValueError(f"train: model must be a zoo name ({', '.join(models.names())}) or a "
                         f"keras.Model, got {type(model).__name__}")

    want = _model_input_shape(net)
    if want != dataset.input_shape:
        if fit is None:
            raise ValueError(f"model {net.name!r} expects images {want}, dataset "
                             f"{dataset.name!r} has {dataset.input_shape}; pass fit='auto' "
                             "(or 'pad'/'resize') to adapt the data")
        dataset = dataset.fit_to(want, fit)
    classes = int(net.outputs[0].shape[-1])
    if classes != dataset.num_classes:
        raise ValueError(f"model {net.name!r} has {classes} outputs, dataset "
                         f"{dataset.name!r} has {dataset.num_classes} classes")

    models.compile_for_training(net, learning_rate=learning_rate)
    y_train = dataset.y_train_onehot
    if decoder:
        x_fit, y_fit = (dataset.x_train, y_train), (y_train, dataset.x_train)
    else:
        x_fit, y_fit = dataset.x_train, y_train
    steps = math.ceil(len(dataset.x_train) / batch_size)
    callbacks = [_progress_callback(steps * epochs, epochs, progress)]
    if lr_decay != 1.0:
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: learning_rate * lr_decay ** epoch))

    start = time.perf_counter()
    history = net.fit(x_fit, y_fit, batch_size=batch_size, epochs=epochs, shuffle=True,
                      callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start

    inference = models.inference_model(net)
    test_acc = accuracy(inference, dataset.x_test, dataset.y_test)
    if train_eval_samples == 0:
        train_acc = float("nan")
    elif train_eval_samples is None or train_eval_samples >= len(dataset.x_train):
        train_acc = accuracy(inference, dataset.x_train, dataset.y_train)
    else:
        part = dataset.subset(train=train_eval_samples, seed=seed)
        train_acc = accuracy(inference, part.x_train, part.y_train)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    result = TrainResult(
        model=name, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        lr_decay=lr_decay, seed=seed, decoder=bool(decoder), data=dataset.name,
        train_accuracy=train_acc, test_accuracy=test_acc, seconds=round(seconds, 2),
        params=int(inference.count_params()), history=hist, inference_model=inference)
    if verbose:
        print(f"{name}: held-out accuracy {test_acc:.4f} on {len(dataset.x_test)} "
              f"{dataset.name} test images (train {train_acc:.4f}, {epochs} epochs, "
              f"{seconds:.1f} s)", file=sys.stderr)
    return net, result
