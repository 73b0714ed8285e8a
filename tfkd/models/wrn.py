"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

WRN-d-k has depth d = 6n + 4 (n pre-activation basic blocks in each of three stages, plus
the stem conv, the logits layer and the two projection shortcuts that widen the stages,
counted as the paper does) and widen factor k: stages of 16k, 32k and 64k channels. With
10 classes WRN-28-10 has 36,479,194 trainable parameters, the paper's "36.5M" and the count
of the usual PyTorch implementation (xternalz/WideResNet-pytorch), whose BatchNorm moving
statistics are buffers, not parameters.

"wrn" takes `depth` and `width`; "wrn28_10" (the paper's CIFAR network), "wrn16_4" and
"wrn16_1" (about 0.17M parameters, for tests and quick runs) fix them.
"""

from __future__ import annotations

import keras

from tfkd.models.registry import IMAGES, LayerSeeds, register_model
from tfkd.models.resnet import batch_norm, check_positive_int, conv2d


def _preact_block(h, filters: int, strides: int, *, seeds, bn_momentum, dropout, name):
    """BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3, added to the identity or a projection.

    NOTE: the 1x1 projection reads the *pre-activated* input (after the block's first
    BN-ReLU), as in the authors' Torch code and the common PyTorch port; the identity
    shortcut reads the raw input. Both keep the residual stream itself free of BN and ReLU,
    which is the point of pre-activation.
    """
    preact = batch_norm(h, momentum=bn_momentum, name=f"{name}_bn1")
    preact = keras.layers.ReLU(name=f"{name}_relu1")(preact)
    out = conv2d(preact, filters, 3, strides, seeds=seeds, name=f"{name}_conv1")
    out = batch_norm(out, momentum=bn_momentum, name=f"{name}_bn2")
    out = keras.layers.ReLU(name=f"{name}_relu2")(out)
    if dropout > 0:
        # Seeded from the same stream as the weights, so a seeded model also drops
        # reproducibly; None (an unseeded build) stays unseeded.
        out = keras.layers.Dropout(dropout, seed=seeds.next(), name=f"{name}_dropout")(out)
    out = conv2d(out, filters, 3, 1, seeds=seeds, name=f"{name}_conv2")
    shortcut = h
    if strides != 1 or h.shape[-1] != filters:
        shortcut = conv2d(preact, filters, 1, strides, seeds=seeds, name=f"{name}_proj_conv")
    return keras.layers.Add(name=f"{name}_add")([shortcut, out])


@register_model("wrn", inputs=IMAGES)
def build_wrn(
    input_shape: tuple,
    num_classes: int,
    *,
    seeds: LayerSeeds,
    name: str = "wrn",
    depth: int = 28,
    width: int = 10,
    dropout: float = 0.0,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """WRN-`depth`-`width`: a 3x3 stem conv of 16 channels, three stages of (depth - 4) / 6
    pre-activation basic blocks with 16, 32 and 64 times `width` channels and strides
    (1, 2, 2), a final BN-ReLU ("last_conv_act"), global average pooling ("features") and
    Dense "logits".

    `dropout` is the rate between a block's two convolutions (the paper's best CIFAR results
    use 0.3). Weight decay (the paper's 5e-4) belongs to the optimiser, not to the layers.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"wrn needs depth = 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got depth={depth!r}"
        )
    check_positive_int("wrn", "width", width)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"wrn needs 0 <= dropout < 1, got dropout={dropout!r}")
    blocks_per_stage = (depth - 4) // 6

    inputs = keras.Input(input_shape, name="inputs")
    # No BN-ReLU after the stem: the first block's pre-activation provides it.
    h = conv2d(inputs, 16, 3, 1, seeds=seeds, name="stem_conv")
    for stage, stage_stride in enumerate((1, 2, 2)):
        for b in range(blocks_per_stage):
            h = _preact_block(
                h, 16 * 2**stage * width, stage_stride if b == 0 else 1, seeds=seeds,
                bn_momentum=bn_momentum, dropout=dropout, name=f"stage{stage + 1}_block{b + 1}",
            )
    # Pre-activation blocks leave the residual sum un-normalised, so the network ends with
    # its own BN-ReLU; that rectified map is what Grad-CAM weighs.
    h = batch_norm(h, momentum=bn_momentum, name="final_bn")
    h = keras.layers.ReLU(name="last_conv_act")(h)
    h = keras.layers.GlobalAveragePooling2D(name="features")(h)
    logits = keras.layers.Dense(num_classes, kernel_initializer=seeds.glorot(), name="logits")(h)
    return keras.Model(inputs, logits, name=name)


@register_model("wrn28_10", inputs=IMAGES)
def build_wrn28_10(input_shape, num_classes, *, seeds: LayerSeeds, name: str = "wrn28_10",
                   dropout: float = 0.0, bn_momentum: float = 0.9) -> keras.Model:
    """WRN-28-10, the paper's CIFAR network (36.5M parameters)."""
    return build_wrn(input_shape, num_classes, seeds=seeds, name=name, depth=28, width=10,
                     dropout=dropout, bn_momentum=bn_momentum)


@register_model("wrn16_4", inputs=IMAGES)
def build_wrn16_4(input_shape, num_classes, *, seeds: LayerSeeds, name: str = "wrn16_4",
                  dropout: float = 0.0, bn_momentum: float = 0.9) -> keras.Model:
    """WRN-16-4 (2.7M parameters), a mid-sized teacher or student."""
    return build_wrn(input_shape, num_classes, seeds=seeds, name=name, depth=16, width=4,
                     dropout=dropout, bn_momentum=bn_momentum)


@register_model("wrn16_1", inputs=IMAGES)
def build_wrn16_1(input_shape, num_classes, *, seeds: LayerSeeds, name: str = "wrn16_1",
                  dropout: float = 0.0, bn_momentum: float = 0.9) -> keras.Model:
    """WRN-16-1 (0.17M parameters), small enough for tests and CPU runs."""
    return build_wrn(input_shape, num_classes, seeds=seeds, name=name, depth=16, width=1,
                     dropout=dropout, bn_momentum=bn_momentum)
