"""Small models for the embedded datasets: a CNN (1-D or 2-D) and an MLP."""

from __future__ import annotations

import keras

from tfkd.models.registry import IMAGES, LayerSeeds, register_model


@register_model("cnn", inputs={2: "length, channels", **IMAGES})
def build_cnn(
    input_shape: tuple,
    num_classes: int,
    *,
    seeds: LayerSeeds,
    name: str = "cnn",
    filters: tuple = (16, 32, 64),
    feature_units: int = 64,
    batch_norm: bool = True,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """Conv blocks (conv 3, [BatchNorm], ReLU, pool while the input is large enough), global
    average pooling, a Dense "features" layer and Dense "logits".

    Rank-3 inputs (H, W, C) use 2-D convolutions, rank-2 inputs (L, C) 1-D ones. The last
    convolution is named "last_conv" and its rectified output "last_conv_act", the feature
    maps Grad-CAM weighs.

    `bn_momentum` defaults to 0.9, not Keras's 0.99: digits has only ~17 steps per epoch, and
    with 0.99 the moving statistics lag so far behind that validation accuracy stalls for
    the first epochs. Note that BatchNorm statistics are per replica, so with
    `batch_norm=True` a 2-replica step is not exactly a 1-replica step.
    """
    if len(input_shape) == 3:
        conv, pool, global_pool = keras.layers.Conv2D, keras.layers.MaxPooling2D, (
            keras.layers.GlobalAveragePooling2D
        )
    else:  # rank 2, as registered
        conv, pool, global_pool = keras.layers.Conv1D, keras.layers.MaxPooling1D, (
            keras.layers.GlobalAveragePooling1D
        )
    if not filters:
        raise ValueError(f"cnn needs at least one conv block, got filters={filters!r}")

    inputs = keras.Input(input_shape, name="inputs")
    h = inputs
    spatial = list(input_shape[:-1])
    for i, width in enumerate(filters):
        last = i == len(filters) - 1
        h = conv(
            width, 3, padding="same", use_bias=not batch_norm,  # BatchNorm's beta is the bias
            kernel_initializer=seeds.he(), name="last_conv" if last else f"conv{i}",
        )(h)
        if batch_norm:
            h = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i}")(h)
        h = keras.layers.ReLU(name="last_conv_act" if last else f"relu{i}")(h)
        # Pool between blocks only while every spatial side stays >= 2, so 8x8 digits keep
        # a 2x2 map for the last conv and Grad-CAM still has a spatial map to show.
        if not last and min(spatial) >= 4:
            h = pool(2, name=f"pool{i}")(h)
            spatial = [s // 2 for s in spatial]
    h = global_pool(name="global_pool")(h)
    h = keras.layers.Dense(
        feature_units, activation="relu", kernel_initializer=seeds.he(), name="features"
    )(h)
    logits = keras.layers.Dense(num_classes, kernel_initializer=seeds.glorot(), name="logits")(h)
    return keras.Model(inputs, logits, name=name)


@register_model("mlp")
def build_mlp(
    input_shape: tuple,
    num_classes: int,
    *,
    seeds: LayerSeeds,
    name: str = "mlp",
    hidden_units: tuple = (128, 64),
) -> keras.Model:
    """Flatten, Dense ReLU layers (the last named "features"), Dense "logits"."""
    if not hidden_units:
        raise ValueError(f"mlp needs at least one hidden layer, got hidden_units={hidden_units!r}")
    inputs = keras.Input(input_shape, name="inputs")
    h = keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(
            units, activation="relu", kernel_initializer=seeds.he(),
            name="features" if i == len(hidden_units) - 1 else f"dense{i}",
        )(h)
    logits = keras.layers.Dense(num_classes, kernel_initializer=seeds.glorot(), name="logits")(h)
    return keras.Model(inputs, logits, name=name)
