"""The pruning loop: score, cut, fine-tune, check the floor, repeat.

Data discipline: the training split is divided (stratified, fixed seed)
into a fine-tuning part and a validation part.  Importance is scored on
fine-tuning images, fine-tuning trains on them, the accuracy floor is
checked on the validation part.  The test split is only measured, before
and after, for the report; no decision depends on it.
"""
import math
import numbers
import time

from tflm_caps.pruning import cost, importance
from tflm_caps.pruning.report import PruneResult
from tflm_caps.pruning.structure import PruningError, find, shrink

DEFAULTS = {"keep_types": 0.5, "steps": 1, "finetune_epochs": 2, "batch_size": 32,
            "learning_rate": 1e-3, "lr_decay": 0.7, "validation_fraction": 0.1,
            "score_samples": 1000}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_fraction(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral))


def resolve_count(value, total, what):
    """How many of ``total`` to keep: an int count in [1, total] or a
    float fraction in (0, 1] (rounded, at least 1)."""
    if _is_int(value):
        if not 1 <= value <= total:
            raise PruningError(f"{what}: keep between 1 and {total}, got {value}")
        return int(value)
    if _is_fraction(value):
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise PruningError(f"{what}: a fraction to keep must be in (0, 1], got {value!r}")
        return max(1, min(total, int(round(value * total))))
    raise PruningError(f"{what}: expected a count (int) or a fraction to keep (float), "
                       f"got {value!r}")


def _channel_targets(structure, keep_channels):
    """{conv name: channels to keep} for every prunable convolution."""
    targets = {g.name: g.channels for g in structure.convs}
    if keep_channels is None:
        return targets
    if isinstance(keep_channels, dict):
        for name, value in keep_channels.items():
            group = structure.conv(name)
            targets[name] = resolve_count(value, group.channels, f"channels of {name}")
        return targets
    if not structure.convs:
        raise PruningError("keep_channels: the model has no convolution before the primary "
                           "capsules")
    for group in structure.convs:
        targets[group.name] = resolve_count(keep_channels, group.channels,
                                            f"channels of {group.name}")
    return targets


def _schedule(start, end, steps):
    """Counts after each of ``steps`` steps, geometric from start to end."""
    counts, prev = [], start
    for t in range(1, steps + 1):
        n = int(round(start * (end / start) ** (t / steps)))
        n = min(prev, max(end, n))
        counts.append(n)
        prev = n
    counts[-1] = end
    return counts


def _check_positive(value, name, kind=int, allow_zero=False):
    ok = _is_int(value) if kind is int else (isinstance(value, numbers.Real)
                                            and not isinstance(value, bool)
                                            and math.isfinite(value))
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise PruningError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                           f"{'integer' if kind is int else 'number'}, got {value!r}")
    return kind(value)


def _dataset(data, input_shape):
    from tflm_caps import data as caps_data

    if isinstance(data, str):
        return caps_data.load(data, input_shape=input_shape)
    if not isinstance(data, caps_data.Dataset):
        raise PruningError(f"data must be a tflm_caps.data.Dataset or a data source string, "
                           f"got {type(data).__name__}")
    if data.input_shape != tuple(input_shape):
        raise PruningError(f"the model takes images {tuple(input_shape)}, dataset "
                           f"{data.name!r} has {data.input_shape}")
    return data


def _load_model(model):
    from tflm_caps import models
    from tflm_caps.validation import load_keras

    net = load_keras(model)
    import keras
    if not isinstance(net, keras.Model):
        raise PruningError(f"model must be a keras.Model or a .keras path, got "
                           f"{type(net).__name__}")
    return models.inference_model(net)


def prune(model, data, *, keep_types=DEFAULTS["keep_types"], keep_channels=None,
          criterion="routing", channel_criterion="l1", steps=DEFAULTS["steps"],
          finetune_epochs=DEFAULTS["finetune_epochs"], batch_size=DEFAULTS["batch_size"],
          learning_rate=DEFAULTS["learning_rate"], lr_decay=DEFAULTS["lr_decay"],
          validation_fraction=DEFAULTS["validation_fraction"], accuracy_floor=None,
          score_samples=DEFAULTS["score_samples"], seed=0, progress=True):
    """Structured pruning of a CapsNet; returns a ``PruneResult``.

    Removes whole primary capsule types (their output channels of the
    primary-capsule convolution and their rows of the ClassCaps weight W)
    and, optionally, output channels of the convolutions before them (with
    the matching input channels of the next convolution).  The pruned model
    (``result.model``) is an ordinary, smaller Keras model of the same
    layers: it saves as ``.keras``, trains and converts with
    ``tflm_caps.convert``.

    Args:
        model: ``keras.Model`` or ``.keras`` path (an inference model, or a
            training model whose inference part is pruned).
        data: ``tflm_caps.data.Dataset`` or a data source (``"bundled"``...).
        keep_types: capsule types to keep: an int count or a float fraction
            in (0, 1] (0.5 removes half).
        keep_channels: None (convolutions untouched), an int count or a
            fraction applied to every convolution before the primary
            capsules, or ``{conv name: count or fraction}``.
        criterion: capsule-type importance, ``"routing"`` or ``"length"``
            (see ``tflm_caps.pruning.importance``).
        channel_criterion: ``"l1"``, ``"l2"`` or ``"bn"``.
        steps: prune in this many steps (geometric schedule of the counts),
            re-scoring and fine-tuning after each.
        finetune_epochs: epochs of fine-tuning after each step (0: none).
        batch_size, learning_rate, lr_decay: fine-tuning settings (Adam +
            margin loss, learning rate times ``lr_decay`` per epoch,
            restarted at each step).
        validation_fraction: part of the training split held out for the
            accuracy floor and the per-step accuracy (never the test split).
        accuracy_floor: stop when the validation accuracy after a step falls
            below this (0..1); the result is then the last model that met it.
        score_samples: training images used for the importance scores.
        seed: seeds the split, the scoring subset and fine-tuning.
        progress: tqdm bars on stderr.
    """
    from tflm_caps import train
    from tflm_caps.data import Dataset, stratified_split

    t0 = time.perf_counter()
    steps = _check_positive(steps, "steps")
    finetune_epochs = _check_positive(finetune_epochs, "finetune_epochs", allow_zero=True)
    batch_size = _check_positive(batch_size, "batch_size")
    score_samples = _check_positive(score_samples, "score_samples")
    learning_rate = _check_positive(learning_rate, "learning_rate", float)
    lr_decay = _check_positive(lr_decay, "lr_decay", float)
    seed = _check_positive(seed, "seed", allow_zero=True)
    if not (isinstance(validation_fraction, numbers.Real) and not isinstance(
            validation_fraction, bool) and 0.0 < validation_fraction <= 0.5):
        raise PruningError(f"validation_fraction must be in (0, 0.5], got "
                           f"{validation_fraction!r}")
    if accuracy_floor is not None and not (isinstance(accuracy_floor, numbers.Real)
                                           and not isinstance(accuracy_floor, bool)
                                           and 0.0 <= accuracy_floor <= 1.0):
        raise PruningError(f"accuracy_floor must be an accuracy in [0, 1], got "
                           f"{accuracy_floor!r}")
    if criterion not in importance.TYPE_CRITERIA:
        raise PruningError(f"criterion must be one of {', '.join(importance.TYPE_CRITERIA)}, "
                           f"got {criterion!r}")
    if channel_criterion not in importance.CHANNEL_CRITERIA:
        raise PruningError(f"channel_criterion must be one of "
                           f"{', '.join(importance.CHANNEL_CRITERIA)}, got {channel_criterion!r}")

    net = _load_model(model)
    structure = find(net)
    type_target = resolve_count(keep_types, structure.num_types, "capsule types")
    channel_target = _channel_targets(structure, keep_channels)
    if channel_criterion == "bn":
        for name, n in channel_target.items():
            if n < structure.conv(name).channels:
                importance.channel_scores(net, structure, name, "bn")  # clear error early
    ds = _dataset(data, tuple(int(d) for d in net.inputs[0].shape[1:]))
    classes = int(net.outputs[0].shape[-1])
    if classes != ds.num_classes:
        raise PruningError(f"model {net.name!r} has {classes} outputs, dataset {ds.name!r} "
                           f"has {ds.num_classes} classes")

    try:
        fit_idx, val_idx = stratified_split(ds.y_train, test_fraction=validation_fraction,
                                            seed=seed)
    except ValueError as exc:
        raise PruningError(f"cannot carve a validation split from {ds.name!r}: {exc}") from exc
    split = Dataset(f"{ds.name}/fine-tune", ds.x_train[fit_idx], ds.y_train[fit_idx],
                    ds.x_train[val_idx], ds.y_train[val_idx], ds.num_classes, ds.class_names)
    score_images = split.calibration_subset(min(score_samples, len(split.x_train)), seed=seed)

    def accuracies(m):
        return (train.accuracy(m, split.x_test, split.y_test),
                train.accuracy(m, ds.x_test, ds.y_test))

    val0, test0 = accuracies(net)
    before = {**cost.model_cost(net, structure), "validation_accuracy": val0,
              "test_accuracy": test0}

    type_counts = _schedule(structure.num_types, type_target, steps)
    channel_counts = {name: _schedule(structure.conv(name).channels, n, steps)
                      for name, n in channel_target.items()}
    # Original indices of what the current model still holds, per axis.
    kept = structure.full_keep()
    current, current_structure = net, structure
    history, stopped_early = [], False
    for step in range(steps):
        t_step = time.perf_counter()
        local = {}
        want_types = type_counts[step]
        if want_types < current_structure.num_types:
            scores = importance.type_scores(current, current_structure, score_images, criterion,
                                            progress=progress)
            local["types"] = importance.top(scores, want_types)
        for group in current_structure.convs:
            want = channel_counts[group.name][step]
            if want < group.channels:
                scores = importance.channel_scores(current, current_structure, group.name,
                                                   channel_criterion)
                local[group.name] = importance.top(scores, want)
        candidate = shrink(current, current_structure, local) if local else current
        if candidate is current and finetune_epochs:
            # Nothing to cut (e.g. keep everything): fine-tune a copy, not the input.
            candidate = shrink(current, current_structure, {})
        if finetune_epochs:
            _, res = train.train(candidate, split, epochs=finetune_epochs,
                                 batch_size=batch_size, seed=seed + step,
                                 learning_rate=learning_rate, lr_decay=lr_decay,
                                 progress=progress, verbose=False, train_eval_samples=0)
            val_acc = res.test_accuracy  # the split's "test" part is the validation set
        else:
            val_acc = train.accuracy(candidate, split.x_test, split.y_test)
        cand_structure = find(candidate)
        record = {"step": step + 1, "capsule_types": cand_structure.num_types,
                  "channels": {g.name: g.channels for g in cand_structure.convs},
                  "params": int(candidate.count_params()),
                  "macs": cost.model_cost(candidate, cand_structure)["macs"],
                  "finetune_epochs": finetune_epochs, "validation_accuracy": val_acc,
                  "seconds": round(time.perf_counter() - t_step, 2)}
        if accuracy_floor is not None and val_acc < accuracy_floor:
            record["accepted"] = False
            history.append(record)
            stopped_early = True
            break
        record["accepted"] = True
        history.append(record)
        for axis, idx in local.items():
            kept[axis] = [kept[axis][i] for i in idx]
        current, current_structure = candidate, cand_structure

    val1, test1 = accuracies(current)
    after = {**cost.model_cost(current, current_structure), "validation_accuracy": val1,
             "test_accuracy": test1}
    settings = {"keep_types": type_target, "keep_channels": channel_target,
                "criterion": criterion, "channel_criterion": channel_criterion, "steps": steps,
                "finetune_epochs": finetune_epochs, "batch_size": batch_size,
                "learning_rate": learning_rate, "lr_decay": lr_decay,
                "validation_fraction": float(validation_fraction),
                "validation_images": int(len(split.x_test)),
                "accuracy_floor": accuracy_floor, "score_samples": int(len(score_images)),
                "seed": seed, "data": ds.name, "test_images": int(len(ds.x_test))}
    return PruneResult(model=current, kept=kept, before=before, after=after, steps=history,
                       stopped_early=stopped_early, settings=settings,
                       seconds=round(time.perf_counter() - t0, 2))


__all__ = ["prune", "resolve_count", "DEFAULTS"]
