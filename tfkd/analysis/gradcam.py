"""Grad-CAM (Selvaraju et al., 2017) maps of Keras models and their similarity.

Ojha et al. (NeurIPS 2023) measure inherited localisation as the similarity of a student's
Grad-CAM maps to its teacher's. Maps here are non-negative, scaled so each map's maximum is
1, and upsampled to the input's spatial size, so maps of models with different feature-map
resolutions can be compared pixel by pixel.
"""

import keras
import numpy as np
import tensorflow as tf

from tfkd.analysis import _checks


def _output_rank(layer):
    # Layers with several outputs (or none yet) have no single feature map to weigh.
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def find_last_conv_layer(model):
    """Name of the last layer whose output is a spatial feature map.

    A feature map is a rank-4 (batch, H, W, C) or rank-3 (batch, L, C) output, 2-D and 1-D
    models alike; the input layer does not count. For tfkd's "cnn" this is "last_conv_act",
    the rectified output of the last convolution. Raises a ValueError naming the model when
    it has none (e.g. an MLP).
    """
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if _output_rank(layer) in (3, 4):
            return layer.name
    raise ValueError(
        f"model {_checks.model_name(model)} has no layer with a spatial feature map "
        "(output of rank 4 (batch, H, W, C) or rank 3 (batch, L, C)); Grad-CAM needs one."
    )


def feature_layer(model, layer_name=None, input_rank=4):
    """The layer whose feature maps Grad-CAM weighs, for inputs of rank `input_rank` (batch
    axis included): `layer_name`, or by default `find_last_conv_layer(model)`. A ValueError
    naming the model when it has no such layer or the layer's output is not a feature map
    of the inputs' rank; so whether Grad-CAM applies is known from the model alone."""
    if input_rank not in (3, 4):
        raise ValueError(
            f"Grad-CAM needs inputs with spatial axes, (N, H, W, C) or (N, L, C); got inputs "
            f"of rank {input_rank}."
        )
    if layer_name is None:
        layer_name = find_last_conv_layer(model)
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(f"model {_checks.model_name(model)} has no layer {layer_name!r}.")
    if _output_rank(layer) != input_rank:
        raise ValueError(
            f"layer {layer_name!r} of model {_checks.model_name(model)} outputs rank "
            f"{_output_rank(layer)}, not a feature map of the inputs' rank {input_rank}."
        )
    return layer


def _class_indices(class_index, num_examples, num_classes):
    """None, or (N,) int32 class indices from an int or an (N,) array."""
    if class_index is None:
        return None
    indices = np.asarray(class_index)
    if indices.ndim == 0:
        indices = np.full((num_examples,), indices)
    if indices.shape != (num_examples,):
        raise ValueError(
            f"`class_index` must be an int or have shape ({num_examples},); got shape "
            f"{indices.shape}."
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"`class_index` must hold integers; got dtype {indices.dtype}.")
    if indices.min() < 0 or indices.max() >= num_classes:
        raise ValueError(
            f"`class_index` must lie in [0, {num_classes}); got range "
            f"[{indices.min()}, {indices.max()}]."
        )
    return indices.astype(np.int32)


def _upsample(cams, spatial_shape):
    """(N, h[, w]) maps resized bilinearly to `spatial_shape`."""
    if len(spatial_shape) == 2:
        return tf.image.resize(cams[..., None], spatial_shape, method="bilinear")[..., 0]
    # 1-D maps go through tf.image as (N, L, 1, 1) images of width 1.
    resized = tf.image.resize(cams[:, :, None, None], (spatial_shape[0], 1), method="bilinear")
    return resized[:, :, 0, 0]


def _features_and_logits(model, layer):
    """A function from a batch to (the layer's feature maps, the model's logits), computed in
    one forward pass, so the gradient flows through the very activations that are weighed."""
    if isinstance(model, keras.Sequential):
        # NOTE: not keras.Model(model.inputs, [layer.output, ...]): a Sequential loaded from
        # .keras has its layers called twice (by from_config and by its build), and
        # `layer.output` is then the first call's tensor, in a graph that does not lead to
        # the model's outputs (the gradient is None). A Sequential is a chain: run it.
        index = model.layers.index(layer)

        def forward(batch):
            h = batch
            for i, each in enumerate(model.layers):
                h = each(h, training=False)
                if i == index:
                    features = h
            return features, h

        return forward
    feature_model = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    return lambda batch: feature_model(batch, training=False)


def grad_cam(model, x, layer_name=None, class_index=None, batch_size=128):
    """Grad-CAM maps of `model` on `x`, in [0, 1], at the input's spatial size.

    For class c with logit y_c and feature maps A_k of layer `layer_name`: weights
    alpha_k = spatial mean of dy_c / dA_k, map = ReLU(sum_k alpha_k A_k). The gradient is
    taken of the logit, not the softmax probability, as in the original paper. Each map is
    bilinearly upsampled to the input's spatial size and divided by its maximum.

    Args:
      model: a functional or Sequential Keras model that outputs (N, C) logits.
      x: (N, H, W, C) images or (N, L, C) signals, matching the model's input.
      layer_name: the feature-map layer; default `find_last_conv_layer(model)`.
      class_index: the class explained. Default None: each example's predicted class
        (argmax of the model's logits on it). An int explains that class for every
        example; an (N,) array one class per example.
      batch_size: examples per forward/backward pass.

    Returns:
      float32 maps of shape (N, H, W) or (N, L). NOTE: a map with no positive evidence
      (ReLU zero everywhere) stays all zeros rather than being divided by 0.
    """
    x = _checks.inputs(x, min_rank=3)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if x.ndim not in (3, 4):
        raise ValueError(
            f"`x` must have shape (N, H, W, C) or (N, L, C); got shape {x.shape}."
        )
    layer = feature_layer(model, layer_name, x.ndim)
    forward = _features_and_logits(model, layer)
    num_classes = int(model.outputs[0].shape[-1])
    indices = _class_indices(class_index, len(x), num_classes)

    maps = []
    for start in range(0, len(x), batch_size):
        batch = tf.constant(x[start : start + batch_size])
        with tf.GradientTape() as tape:
            features, logits = forward(batch)
            chosen = (
                tf.argmax(logits, axis=-1, output_type=tf.int32)
                if indices is None
                else tf.constant(indices[start : start + batch_size])
            )
            # The sum over the batch is fine: each example's score depends on its own maps only.
            score = tf.reduce_sum(tf.gather(logits, chosen, axis=1, batch_dims=1))
        grads = tape.gradient(score, features)
        spatial_axes = list(range(1, features.shape.rank - 1))
        weights = tf.reduce_mean(grads, axis=spatial_axes, keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        cams = _upsample(cams, x.shape[1:-1])
        peak = tf.reduce_max(cams, axis=list(range(1, cams.shape.rank)), keepdims=True)
        maps.append(tf.math.divide_no_nan(cams, peak).numpy())
    return np.concatenate(maps, axis=0).astype(np.float32)


def map_similarity(maps_a, maps_b):
    """Per-image Pearson correlation of two sets of maps, flattened; shape (N,).

    Pearson rather than cosine: non-negative maps have a cosine near 1 even when they
    highlight different regions, while the correlation is 0 for unrelated maps and 1 for
    maps equal up to scale and offset. A constant map has no correlation with anything;
    NOTE: its similarity is defined as 1.0 to an identical map and 0.0 otherwise, so that
    the mean stays finite.
    """
    a = np.asarray(maps_a, dtype=np.float64)
    b = np.asarray(maps_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(
            "`maps_a` and `maps_b` must have the same shape (N, ...) with N >= 1; got "
            f"{a.shape} and {b.shape}."
        )
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a_centred = a - a.mean(axis=1, keepdims=True)
    b_centred = b - b.mean(axis=1, keepdims=True)
    # Constancy is tested on the raw values: centring a constant map can leave rounding
    # residue that would turn into a meaningless correlation.
    constant = (np.ptp(a, axis=1) == 0) | (np.ptp(b, axis=1) == 0)
    norms = np.linalg.norm(a_centred, axis=1) * np.linalg.norm(b_centred, axis=1)
    covariance = np.sum(a_centred * b_centred, axis=1)
    safe_norms = np.where(constant, 1.0, norms)
    identical = np.all(a == b, axis=1).astype(np.float64)
    return np.where(constant, identical, covariance / safe_norms)


def mean_map_similarity(maps_a, maps_b):
    """Mean over images of `map_similarity`, a float in [-1, 1]."""
    return float(np.mean(map_similarity(maps_a, maps_b)))
