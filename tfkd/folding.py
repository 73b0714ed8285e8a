"""Frozen teachers for inference: each BatchNormalization folded into the layer before it.

At inference a BatchNormalization is a fixed affine map per channel, so after a linear
Conv1D/2D/3D or Dense layer (its only consumer) it can be folded into that layer's kernel
and bias: kernel * s, (bias - mean) * s + beta, with s = gamma / sqrt(variance + epsilon).
The folded model computes the same function up to float rounding, and does less work: no
BatchNorm pass over every activation, and TensorFlow's graph optimizer fuses the
convolution, its bias and a ReLU after it into one kernel. A teacher's forward pass is
what a Distiller with online teachers spends most of its step on, and what building a
logits cache consists of.

NOTE: written here because neither Keras nor TensorFlow offers it for a Keras model
(converters such as TFLite's fold BatchNorm only into their own formats). The folded copy
is rebuilt from the model's own config (public API), so any functional or Sequential
model of built-in layers qualifies; where nothing can be folded, or the model cannot be
rebuilt from its config (a subclassed model), the model is used as given. `fold` checks
the copy against the model on a sample batch and keeps the model where they differ by more
than float rounding.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
from absl import logging

# Layers whose kernel's last axis is the output channel, the axis a channels-last
# BatchNormalization normalises. Exact types: a subclass may compute something else.
FOLDABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)


def _layer_entries(config):
    """(entries, name of entry) of a functional or Sequential model config."""
    return config["layers"], lambda entry: entry.get("name") or entry["config"]["name"]


def _histories(structure):
    """Every keras_history list ([layer name, node index, tensor index]) in a config part."""
    if isinstance(structure, dict):
        if "keras_history" in structure:
            yield structure["keras_history"]
            return
        for value in structure.values():
            yield from _histories(value)
    elif isinstance(structure, (list, tuple)):
        if (isinstance(structure, list) and len(structure) == 3
                and isinstance(structure[0], str)
                and all(isinstance(v, int) for v in structure[1:])):
            yield structure
        else:
            for value in structure:
                yield from _histories(value)


def _foldable(layer, bn):
    if type(layer) not in FOLDABLE or type(bn) is not keras.layers.BatchNormalization:
        return False
    # A Conv{N}D's input and kernel both have N + 2 axes; a Dense's input any number.
    rank = len(layer.kernel.shape)
    return (keras.activations.serialize(layer.activation) == "linear"
            and getattr(layer, "data_format", "channels_last") == "channels_last"
            and (bn.axis == -1 or (not isinstance(layer, keras.layers.Dense)
                                   and bn.axis == rank - 1))
            and len(layer.weights) == (2 if layer.use_bias else 1)  # no LoRA, no quantization
            and layer.kernel.shape[-1] == bn.moving_mean.shape[0])


def _pairs_functional(model, config):
    """{layer name: BatchNormalization name} foldable in a functional model's config."""
    entries, name_of = _layer_entries(config)
    uses = {}
    for entry in entries:
        for history in _histories(entry.get("inbound_nodes", [])):
            uses[history[0]] = uses.get(history[0], 0) + 1
    for history in _histories(config.get("output_layers", [])):
        uses[history[0]] = uses.get(history[0], 0) + 1
    pairs = {}
    for entry in entries:
        nodes = entry.get("inbound_nodes", [])
        if entry.get("class_name") != "BatchNormalization" or len(nodes) != 1:
            continue
        sources = list(_histories(nodes[0]))
        if len(sources) != 1:
            continue
        source = sources[0][0]
        source_entry = next(e for e in entries if name_of(e) == source)
        if uses.get(source) != 1 or len(source_entry.get("inbound_nodes", [])) != 1:
            continue  # the layer's output is read elsewhere too, or the layer is shared
        if _foldable(model.get_layer(source), model.get_layer(name_of(entry))):
            pairs[source] = name_of(entry)
    return pairs


def _pairs_sequential(model, config):
    entries, name_of = _layer_entries(config)
    pairs = {}
    for before, entry in zip(entries, entries[1:]):
        if (entry.get("class_name") == "BatchNormalization"
                and before.get("class_name") != "InputLayer"):
            source, bn = name_of(before), name_of(entry)
            if _foldable(model.get_layer(source), model.get_layer(bn)):
                pairs[source] = bn
    return pairs


def _folded_config(config, pairs, sequential):
    config = copy.deepcopy(config)
    entries, name_of = _layer_entries(config)
    renamed = {bn: source for source, bn in pairs.items()}
    config["layers"] = [e for e in entries if name_of(e) not in renamed]
    for entry in config["layers"]:
        if name_of(entry) in pairs:
            entry["config"]["use_bias"] = True
        if not sequential:
            for history in _histories(entry.get("inbound_nodes", [])):
                history[0] = renamed.get(history[0], history[0])
    if not sequential:
        for history in _histories(config.get("output_layers", [])):
            history[0] = renamed.get(history[0], history[0])
    return config


def copy_weights(model, folded, pairs):
    """Sets `folded`'s weights from `model`'s current ones, folding each pair's BatchNorm."""
    for layer in folded.layers:
        source = model.get_layer(layer.name)
        if layer.name not in pairs:
            if source.weights:
                layer.set_weights(source.get_weights())
            continue
        bn = model.get_layer(pairs[layer.name])
        mean = np.asarray(bn.moving_mean, dtype=np.float64)
        scale = 1.0 / np.sqrt(np.asarray(bn.moving_variance, dtype=np.float64) + bn.epsilon)
        if bn.scale:
            scale = scale * np.asarray(bn.gamma, dtype=np.float64)
        bias = np.asarray(source.bias, dtype=np.float64) if source.use_bias else 0.0
        bias = (bias - mean) * scale
        if bn.center:
            bias = bias + np.asarray(bn.beta, dtype=np.float64)
        kernel = np.asarray(source.kernel, dtype=np.float64) * scale
        layer.set_weights([kernel.astype(layer.kernel.dtype), bias.astype(layer.bias.dtype)])


class Folded:
    """A model's folded copy and what it takes to refresh it (see `refresh`)."""

    def __init__(self, model, folded, pairs):
        self.model, self.folded, self.pairs = model, folded, pairs

    def refresh(self):
        """Folds the model's current weights again (after they were loaded or changed)."""
        copy_weights(self.model, self.folded, self.pairs)


def _folded_copy(model):
    """A `Folded` for a built functional or Sequential `model`, or None when there is
    nothing to fold or the model cannot be rebuilt from its config."""
    sequential = isinstance(model, keras.Sequential)
    if not isinstance(model, keras.Model) or not model.built:
        return None
    try:
        config = model.get_config()
        if not (sequential or "input_layers" in config):
            return None  # a subclassed model: no graph to rewrite
        pairs = (_pairs_sequential if sequential else _pairs_functional)(model, config)
        if not pairs:
            return None
        folded = type(model).from_config(_folded_config(config, pairs, sequential))
    # NOTE: broad on purpose: rebuilding a user's model from its config can fail in any
    # layer's from_config; such a model is simply run as given.
    except Exception as error:  # noqa: BLE001
        logging.info("not folding %s's BatchNorm: %s", model.name, error)
        return None
    folded.trainable = False
    copy_weights(model, folded, pairs)
    return Folded(model, folded, pairs)


def fold(model, sample):
    """A `Folded` copy of `model` whose outputs on `sample` match the model's to float
    rounding, or None (the model is then used as given)."""
    result = _folded_copy(model)
    if result is None:
        return None
    expected = np.asarray(model(sample, training=False), dtype=np.float64)
    got = np.asarray(result.folded(sample, training=False), dtype=np.float64)
    float16 = keras.backend.standardize_dtype(model.compute_dtype) in ("float16", "bfloat16")
    tolerance = (1e-2 if float16 else 1e-4) * max(1.0, float(np.max(np.abs(expected))))
    error = float(np.max(np.abs(expected - got)))
    if not np.isfinite(error) or error > tolerance:
        logging.warning("not folding %s's BatchNorm: the folded copy's outputs differ by %.3g",
                        model.name, error)
        return None
    return result
