"""Structured pruning of CapsNets: fewer capsule types, smaller shapes.

``prune(model, data, ...)`` removes whole primary capsule types (and
optionally convolution channels), fine-tunes, and returns a
``PruneResult`` whose ``model`` is an ordinary, physically smaller Keras
model of the project's layers.  See docs/pruning.md.

- ``structure``: where the model can be cut, and the cut (``shrink``);
- ``importance``: scores of capsule types and channels;
- ``cost``: parameters, MACs and int8 bytes per layer;
- ``schedule``: the prune / fine-tune loop (``prune``);
- ``report``: ``PruneResult`` and its tables.
"""
from tflm_caps.pruning.cost import layer_costs, model_cost
from tflm_caps.pruning.importance import (CHANNEL_CRITERIA, TYPE_CRITERIA, channel_scores,
                                          type_scores)
from tflm_caps.pruning.report import PruneResult, format_table
from tflm_caps.pruning.schedule import DEFAULTS, prune
from tflm_caps.pruning.structure import CapsStructure, PruningError, find, shrink

__all__ = ["prune", "PruneResult", "PruningError", "CapsStructure", "find", "shrink",
           "type_scores", "channel_scores", "layer_costs", "model_cost", "format_table",
           "TYPE_CRITERIA", "CHANNEL_CRITERIA", "DEFAULTS"]
