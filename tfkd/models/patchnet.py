"""The two learners of Allen-Zhu & Li's multi-view analysis, for inputs of P patches in R^d.

"patch_net" is the paper's network: class i has m neurons w_{i,1..m}, each applied to every
patch, and its logit is

    F_i(X) = sum_{r <= m} sum_{p <= P} smoothed_relu(<w_{i,r}, x_p>).

"random_features" keeps the same first layer frozen at its random initialisation and trains
only a linear head on the patch-summed activations: the random-feature model the paper
contrasts with (features fixed at random, only a linear map learned).

Both are built from stock Keras layers only, so a saved `.keras` file loads with
`keras.models.load_model` without importing tfkd.
"""

from __future__ import annotations

import numbers

import keras

from tfkd.models.registry import LayerSeeds, register_model

PATCHES = {2: "patches, dim"}


def smoothed_relu(z, *, power: int, threshold: float, name: str):
    """The paper's smoothed ReLU of a symbolic tensor, out of stock Keras layers:

        0                                   for z <= 0,
        z^q / (q * threshold^(q - 1))       for 0 <= z <= threshold,
        z - (1 - 1/q) * threshold           for z >= threshold.

    With r = relu(z) and c = min(r, threshold) it equals c^q / (q threshold^(q-1)) + (r - c);
    both pieces meet with slope 1 at the threshold. The polynomial part is why a neuron's
    small initial correlations with the features grow at very different speeds, so each
    network ends up learning only some of the views.
    """
    r = keras.layers.ReLU(name=f"{name}_relu")(z)
    c = keras.layers.ReLU(max_value=threshold, name=f"{name}_clip")(z)
    # NOTE: Multiply of q copies, not a power op: a stock layer keeps the model loadable
    # without custom objects (and Lambda layers would need safe_mode=False).
    c_q = c if power == 1 else keras.layers.Multiply(name=f"{name}_power")([c] * power)
    poly = keras.layers.Rescaling(1.0 / (power * threshold ** (power - 1)),
                                  name=f"{name}_poly")(c_q)
    linear = keras.layers.Subtract(name=f"{name}_linear")([r, c])
    return keras.layers.Add(name=name)([poly, linear])


def _patch_features(input_shape, num_classes, seeds, *, neurons_per_class, power, threshold,
                    init_std, trainable):
    """Input, and the per-neuron activations summed over patches ("features",
    shape (batch, k * m)); neuron r of class i is unit i * m + r."""
    for arg, value in (("neurons_per_class", neurons_per_class), ("power", power)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold!r}")
    if not init_std > 0:
        raise ValueError(f"init_std must be positive, got {init_std!r}")
    num_patches = input_shape[0]
    inputs = keras.Input(input_shape, name="inputs")
    # Dense on a (P, d) input acts on each patch with the same kernel: weights shared over
    # patches, as in the paper. N(0, init_std^2) makes <w, v> ~ N(0, init_std^2) for any
    # unit feature v, whatever d (the paper's sigma_0).
    h = keras.layers.Dense(
        num_classes * neurons_per_class, use_bias=False, trainable=trainable,
        kernel_initializer=keras.initializers.RandomNormal(stddev=init_std, seed=seeds.next()),
        name="neurons",
    )(inputs)
    h = smoothed_relu(h, power=power, threshold=threshold, name="activation")
    # A mean over patches times P is the sum over patches.
    h = keras.layers.GlobalAveragePooling1D(name="patch_mean")(h)
    features = keras.layers.Rescaling(float(num_patches), name="features")(h)
    return inputs, features


@register_model("patch_net", inputs=PATCHES)
def build_patch_net(
    input_shape: tuple,
    num_classes: int,
    *,
    seeds: LayerSeeds,
    name: str = "patch_net",
    neurons_per_class: int = 1,
    power: int = 4,
    threshold: float = 2.0,
    init_std: float = 0.1,
) -> keras.Model:
    """The paper's learner: logit i is the sum of class i's `neurons_per_class` smoothed-ReLU
    neurons, each summed over patches.

    Layers: Dense "neurons" (no bias, shared over patches), the smoothed ReLU ("activation"
    with `power` q and `threshold`), the sum over patches ("features", one value per neuron)
    and the sum over each class's neurons ("logits"). The layers after "neurons" have no
    weights.

    The paper takes q >= 3, m = polylog(k) neurons per class, a threshold of 1/polylog(k)
    and a small Gaussian initialisation. What the analysis needs is that initial
    correlations <w, v> (~init_std) sit deep in the polynomial part while learned ones pass
    the threshold; with feature weights ~1 (see tfkd.data.multiview) that is init_std = 0.1
    against threshold = 2, and learned correlations reach ~5-7.

    NOTE: one neuron per class by default. Adam scales every weight's step by that weight's
    own gradient history, so separate neurons of a class grow at the same speed whatever
    their initial correlations, and with m = 4 each view wins some neuron: every model then
    learns both views and ensembles gain nothing. Inside one weight vector the views still
    compete, as the analysis describes for gradient descent.
    """
    inputs, features = _patch_features(
        input_shape, num_classes, seeds, neurons_per_class=neurons_per_class, power=power,
        threshold=threshold, init_std=init_std, trainable=True,
    )
    # Sum over each class's neurons: (k*m,) -> (k, m) -> (m, k), mean over m, times m.
    h = keras.layers.Reshape((num_classes, int(neurons_per_class)), name="by_class")(features)
    h = keras.layers.Permute((2, 1), name="neurons_first")(h)
    h = keras.layers.GlobalAveragePooling1D(name="class_mean")(h)
    logits = keras.layers.Rescaling(float(neurons_per_class), name="logits")(h)
    return keras.Model(inputs, logits, name=name)


@register_model("random_features", inputs=PATCHES)
def build_random_features(
    input_shape: tuple,
    num_classes: int,
    *,
    seeds: LayerSeeds,
    name: str = "random_features",
    neurons_per_class: int = 16,
    power: int = 4,
    threshold: float = 2.0,
    init_std: float = 1.0,
) -> keras.Model:
    """patch_net's first layer frozen at initialisation, then a trainable Dense "logits" head.

    `neurons_per_class` only sets the width (k * neurons_per_class random features); the
    head mixes all of them. The defaults differ from patch_net's where a frozen layer needs
    it: wider (10 random features cannot separate 10 classes), and init_std = 1.0 so that
    pre-activations span both parts of the smoothed ReLU; at patch_net's 0.1 every feature
    sits deep in the polynomial part, ~1e-6, and the head cannot learn in any usual number
    of steps. The frozen "neurons" layer draws the first seed, as in patch_net, so with
    equal widths the same model seed gives both models the same neuron directions.

    NOTE: `model.trainable = True` sets the flag on every layer, "neurons" included; set it
    on the "logits" layer instead to unfreeze only the head.
    """
    inputs, features = _patch_features(
        input_shape, num_classes, seeds, neurons_per_class=neurons_per_class, power=power,
        threshold=threshold, init_std=init_std, trainable=False,
    )
    logits = keras.layers.Dense(num_classes, kernel_initializer=seeds.glorot(), name="logits")(
        features
    )
    return keras.Model(inputs, logits, name=name)
