"""ResNet-18 and ResNet-50 in their CIFAR form (He et al. 2016, "Deep Residual Learning").

The CIFAR form is the one of the common adaptations (kuangliu/pytorch-cifar, and the
ensemble / distillation papers that train on it): a 3x3 stride-1 stem of 64 channels and no
max-pool, so a 32x32 image reaches the last stage as a 4x4 map instead of ImageNet's
224 -> 7. Blocks are post-activation (conv-BN-ReLU, the ReLU after the addition) as in the
original paper. With 10 classes ResNet-18 has 11,173,962 trainable parameters and ResNet-50
23,520,842, the counts of the PyTorch reference (whose BatchNorm moving statistics are
buffers, not parameters: Keras lists them as non-trainable weights).

The helpers `conv2d` and `batch_norm` are shared with `wrn.py`.
"""

from __future__ import annotations

import keras

from tfkd.models.registry import IMAGES, LayerSeeds, register_model

# PyTorch's and cuDNN's BatchNorm epsilon, which the published CIFAR results were trained
# with; Keras's default of 1e-3 would be a (small) departure from the reference networks.
BN_EPSILON = 1e-5


def check_positive_int(model: str, name: str, value) -> None:
    """Raises a ValueError naming `value` unless it is a positive int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{model} needs {name} to be a positive integer, got {name}={value!r}")


def conv2d(h, filters: int, kernel_size: int, strides: int, *, seeds: LayerSeeds, name: str):
    """A bias-free convolution with its own He initializer: the BatchNorm that always
    follows (or, pre-activation, precedes the next op) has a beta that acts as the bias.

    NOTE: a strided 3x3 convolution pads one pixel on every side, as PyTorch's padding=1
    does, rather than using Keras's "same". On an even input "same" pads only the bottom
    and right, which centres the 3x3 windows on odd pixels while the strided 1x1 projection
    shortcut samples even ones, so the two branches that get added would be misaligned by
    a pixel. Explicit padding keeps them aligned for even and odd sizes alike (28 -> 14 ->
    7 -> 4 on MNIST).
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        h = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(h)
        padding = "valid"
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=False,
        kernel_initializer=seeds.he(), name=name,
    )(h)


def batch_norm(h, *, momentum: float, name: str):
    """BatchNorm with the reference epsilon. `momentum` is Keras's: 0.9 equals PyTorch's 0.1."""
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=BN_EPSILON, name=name)(h)


def _basic_block(h, filters: int, strides: int, *, seeds, bn_momentum, name, out_name):
    """Two 3x3 convolutions; expansion 1."""
    out = conv2d(h, filters, 3, strides, seeds=seeds, name=f"{name}_conv1")
    out = batch_norm(out, momentum=bn_momentum, name=f"{name}_bn1")
    out = keras.layers.ReLU(name=f"{name}_relu1")(out)
    out = conv2d(out, filters, 3, 1, seeds=seeds, name=f"{name}_conv2")
    out = batch_norm(out, momentum=bn_momentum, name=f"{name}_bn2")
    return _add_shortcut(h, out, strides, seeds=seeds, bn_momentum=bn_momentum, name=name,
                         out_name=out_name)


def _bottleneck_block(h, filters: int, strides: int, *, seeds, bn_momentum, name, out_name):
    """1x1 reduce, 3x3, 1x1 expand to 4 * `filters`. The stride sits on the 3x3 conv, as in
    the CIFAR reference (and torchvision's "ResNet v1.5"): a strided 1x1 conv would skip
    three quarters of its input."""
    out = conv2d(h, filters, 1, 1, seeds=seeds, name=f"{name}_conv1")
    out = batch_norm(out, momentum=bn_momentum, name=f"{name}_bn1")
    out = keras.layers.ReLU(name=f"{name}_relu1")(out)
    out = conv2d(out, filters, 3, strides, seeds=seeds, name=f"{name}_conv2")
    out = batch_norm(out, momentum=bn_momentum, name=f"{name}_bn2")
    out = keras.layers.ReLU(name=f"{name}_relu2")(out)
    out = conv2d(out, 4 * filters, 1, 1, seeds=seeds, name=f"{name}_conv3")
    out = batch_norm(out, momentum=bn_momentum, name=f"{name}_bn3")
    return _add_shortcut(h, out, strides, seeds=seeds, bn_momentum=bn_momentum, name=name,
                         out_name=out_name)


def _add_shortcut(h, out, strides: int, *, seeds, bn_momentum, name, out_name):
    """Adds the identity, or a 1x1 conv + BN projection where the shape changes (option B
    of the paper, as in the CIFAR reference), then applies the block's final ReLU."""
    shortcut = h
    if strides != 1 or h.shape[-1] != out.shape[-1]:
        shortcut = conv2d(h, out.shape[-1], 1, strides, seeds=seeds, name=f"{name}_proj_conv")
        shortcut = batch_norm(shortcut, momentum=bn_momentum, name=f"{name}_proj_bn")
    out = keras.layers.Add(name=f"{name}_add")([shortcut, out])
    return keras.layers.ReLU(name=out_name)(out)


def _build_resnet(
    input_shape, num_classes, *, seeds, name, model, block, blocks_per_stage, width, bn_momentum
) -> keras.Model:
    check_positive_int(model, "width", width)
    if len(blocks_per_stage) != 4:
        raise ValueError(f"{model}: blocks_per_stage must give 4 stages, got {blocks_per_stage!r}")
    for count in blocks_per_stage:
        check_positive_int(model, "blocks_per_stage", count)

    inputs = keras.Input(input_shape, name="inputs")
    # CIFAR stem: 3x3 stride 1 and no max-pool (ImageNet's 7x7/2 + pool would shrink a
    # 32x32 image to 8x8 before the first block).
    h = conv2d(inputs, width, 3, 1, seeds=seeds, name="stem_conv")
    h = batch_norm(h, momentum=bn_momentum, name="stem_bn")
    h = keras.layers.ReLU(name="stem_relu")(h)
    last_stage = len(blocks_per_stage) - 1
    for stage, (num_blocks, stage_stride) in enumerate(zip(blocks_per_stage, (1, 2, 2, 2))):
        for b in range(num_blocks):
            block_name = f"stage{stage + 1}_block{b + 1}"
            last = stage == last_stage and b == num_blocks - 1
            h = block(
                h, width * 2**stage, stage_stride if b == 0 else 1, seeds=seeds,
                bn_momentum=bn_momentum, name=block_name,
                # The last block's rectified output is the feature map Grad-CAM weighs.
                out_name="last_conv_act" if last else f"{block_name}_out",
            )
    h = keras.layers.GlobalAveragePooling2D(name="features")(h)
    logits = keras.layers.Dense(num_classes, kernel_initializer=seeds.glorot(), name="logits")(h)
    return keras.Model(inputs, logits, name=name)


@register_model("resnet18", inputs=IMAGES)
def build_resnet18(
    input_shape: tuple,
    num_classes: int,
    *,
    seeds: LayerSeeds,
    name: str = "resnet18",
    width: int = 64,
    bn_momentum: float = 0.9,
    blocks_per_stage: tuple = (2, 2, 2, 2),
) -> keras.Model:
    """CIFAR ResNet-18: stages of [2, 2, 2, 2] basic blocks with `width` * (1, 2, 4, 8)
    channels (64 .. 512 by default) and strides (1, 2, 2, 2), global average pooling
    ("features", 8 * `width` values) and Dense "logits".

    A smaller `width` (or fewer `blocks_per_stage`) gives a small ResNet-18 for quick
    experiments and tests; the defaults are the published network. Any (H, W, C) input works; an 8x8 image reaches the last stage as
    a 1x1 map.
    """
    return _build_resnet(
        input_shape, num_classes, seeds=seeds, name=name, model="resnet18",
        block=_basic_block, blocks_per_stage=blocks_per_stage, width=width,
        bn_momentum=bn_momentum,
    )


@register_model("resnet50", inputs=IMAGES)
def build_resnet50(
    input_shape: tuple,
    num_classes: int,
    *,
    seeds: LayerSeeds,
    name: str = "resnet50",
    width: int = 64,
    bn_momentum: float = 0.9,
    blocks_per_stage: tuple = (3, 4, 6, 3),
) -> keras.Model:
    """CIFAR ResNet-50: stages of [3, 4, 6, 3] bottleneck blocks of `width` * (1, 2, 4, 8)
    inner channels expanded 4 times (256 .. 2048 by default), strides (1, 2, 2, 2), global
    average pooling ("features", 32 * `width` values) and Dense "logits". `width` and
    `blocks_per_stage` shrink it for tests; the defaults are the published network."""
    return _build_resnet(
        input_shape, num_classes, seeds=seeds, name=name, model="resnet50",
        block=_bottleneck_block, blocks_per_stage=blocks_per_stage, width=width,
        bn_momentum=bn_momentum,
    )
