"""In-memory NumPy arrays -> `tf.data.Dataset`, optionally with precomputed teacher logits.

Every dataset is built over example *indices*: the indices are shuffled and batched, and
each batch gathers its examples (and its rows of a memory-mapped teacher-logit cache, so
that a cache is never loaded whole). Shuffling `range(n)` with a seed gives the same
permutation as shuffling the examples themselves.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

AUGMENTATIONS = ("none", "crop_flip", "jitter")
# Ojha et al.'s colour jitter (torchvision ColorJitter magnitudes): brightness, contrast,
# saturation multipliers uniform in [0.6, 1.4], hue shift uniform in [-0.2, 0.2] turns.
JITTER = (0.4, 0.4, 0.4, 0.2)
CROP_PADDING = 4


def make_tf_dataset(
    x,
    y,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: Optional[int] = None,
    teacher_logits=None,
    drop_remainder: bool = False,
    repeat: bool = False,
    augment: str = "none",
    augment_seed: Optional[int] = None,
    view_logits=None,
    epochs: Optional[int] = None,
    initial_epoch: int = 0,
) -> tf.data.Dataset:
    """Batches (x, y), or ({"inputs": x, "teacher_logits": t}, y) when `teacher_logits` is given.

    The dict form lets a Distiller train against teacher outputs computed once, instead of
    running the teachers on every step; the logits travel with their example through the
    shuffle.

    Two ways to shuffle:
      - without `epochs`: one pass per iteration, reshuffled each time the dataset is
        iterated (as `fit(dataset, epochs=...)` does); `repeat` makes it endless.
      - with `epochs`: the batches of epochs `initial_epoch` .. `epochs - 1` in one finite
        dataset (pass `steps_per_epoch` to fit). Epoch e's order depends only on (seed, e),
        so a run resumed at epoch k sees exactly the batches an uninterrupted run sees.

    `augment="crop_flip"` applies the standard CIFAR augmentation to every example of every
    epoch: pad 4 pixels (with zeros, the mean of standardised data), crop back to the
    original size at a random offset, flip horizontally with probability 1/2.
    `augment="jitter"` applies Ojha et al.'s colour jitter (brightness and contrast; also
    saturation and hue for 3-channel images) on intensities mapped from x's [min, max] to
    [0, 1] and back. Use either for training batches only. The draws are stateless, seeded
    by `augment_seed` (default: `seed`), the epoch and the example's index: reproducible,
    different in each epoch, and independent of the batch order and of the parallel map's
    scheduling. So two datasets with one `augment_seed` hold the same views of each example
    in each epoch, whatever their shuffling `seed` (`augmented_views` gives them in example
    order), and `view_logits[e][i]`, the teachers' outputs on example i's view in epoch e,
    can travel with it as `teacher_logits` (with `epochs`).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
        batch_size <= 0
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if teacher_logits is not None and len(teacher_logits) != len(x):
        raise ValueError(
            f"teacher_logits has {len(teacher_logits)} rows but x has {len(x)} examples"
        )
    if epochs is not None and not 0 <= initial_epoch < epochs:
        raise ValueError(f"initial_epoch must be in [0, epochs={epochs}), got {initial_epoch!r}")
    if augment != "none":
        if teacher_logits is not None:
            # The teacher must see the augmented image its student sees: cached logits of
            # the clean image would teach a different target.
            raise ValueError("augment needs online teachers or view_logits: precomputed "
                             "teacher_logits belong to the un-augmented images")
        if x.ndim != 4:
            raise ValueError(f"augment={augment!r} needs images (n, height, width, channels), "
                             f"got x of shape {x.shape}")
    if view_logits is not None and (augment == "none" or epochs is None):
        raise ValueError("view_logits are the teachers' outputs on augmented views by epoch: "
                         "they need augment and epochs")

    n = len(x)
    seed = 0 if seed is None else int(seed)
    x_all, y_all = tf.constant(x), tf.constant(y)
    read_logits = _logit_reader(teacher_logits)
    read_views = None if view_logits is None else _view_reader(view_logits, n)

    def batches(pairs):
        """(counter, index) pairs -> batches; the counter seeds the example's augmentation."""
        if augment != "none":
            view = _viewer(x, x_all, augment, seed if augment_seed is None else augment_seed)

            def one_example(counter, index):
                return view(counter, index), tf.gather(y_all, index), counter

            examples = pairs.map(one_example, num_parallel_calls=tf.data.AUTOTUNE)
            examples = examples.batch(batch_size, drop_remainder=drop_remainder)
            if read_views is None:
                return examples.map(lambda images, labels, _: (images, labels))
            return examples.map(lambda images, labels, counters: (
                {"inputs": images, "teacher_logits": read_views(counters)}, labels))

        def one_batch(_, indices):
            inputs = tf.gather(x_all, indices)
            if read_logits is not None:
                inputs = {"inputs": inputs, "teacher_logits": read_logits(indices)}
            return inputs, tf.gather(y_all, indices)

        return pairs.batch(batch_size, drop_remainder=drop_remainder).map(one_batch)

    if epochs is not None:
        # Batched within each epoch: the last, smaller batch of an epoch stays its own.
        dataset = tf.data.Dataset.range(initial_epoch, epochs).flat_map(
            lambda epoch: batches(_epoch_pairs(n, epoch, seed=seed, shuffle=shuffle)))
    else:
        indices = tf.data.Dataset.range(n)
        if shuffle:
            # A full-size buffer is affordable for in-memory data and gives a true
            # permutation. Shuffling before repeat gives each epoch a new order without
            # mixing epochs.
            indices = indices.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            indices = indices.repeat()
        # rerandomize_each_iteration: each epoch (each new iterator) draws afresh.
        counters = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = batches(tf.data.Dataset.zip((counters, indices)))
    return prefetched(dataset)


def prefetched(dataset):
    """`dataset` prefetched, without tf.data's autotuning.

    NOTE: the autotuning thread sleeps for a doubling period (10 ms up to seconds), and
    destroying an iterator waits for it: `fit` (and each `evaluate`, `predict`) returned
    0.3 to 2.5 s after its last step on a 2-core machine, with fit's wall time stuck at
    2.55 or 5.11 s. Without it the wait is gone and the step loops of plain and augmented
    pipelines were no slower (tools/benchmark.py); parallel maps then use every core.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _viewer(x, x_all, augment, seed):
    """The function (counter, index) -> the augmented view of example `index`; counter =
    epoch * n + index. The one definition of a view, for training batches and the cache."""
    low, high = float(x.min()), float(x.max())

    def view(counter, index):
        pair = tf.stack([tf.constant(int(seed), tf.int64), tf.cast(counter, tf.int64)])
        image = tf.gather(x_all, index)
        if augment == "crop_flip":
            return crop_flip(image, pair)
        return random_jitter(image, pair, low, high)

    return view


def augmented_views(x, *, augment, augment_seed, epoch, batch_size=512):
    """Epoch `epoch`'s augmented view of every example of `x`, in example order, batched:
    the views a training dataset with this `augment_seed` holds in that epoch, whatever
    its shuffling. Built in a parallel map and prefetched, for the teachers' inference."""
    if augment not in AUGMENTATIONS or augment == "none":
        raise ValueError(f"augmented_views needs an augmentation, got {augment!r}")
    x = np.asarray(x)
    n = len(x)
    view = _viewer(x, tf.constant(x), augment, augment_seed)
    indices = tf.data.Dataset.range(n)
    views = indices.map(lambda i: view(epoch * n + i, i), num_parallel_calls=tf.data.AUTOTUNE)
    return prefetched(views.batch(batch_size))


def _view_reader(view_logits, n):
    """counters -> rows of `view_logits[epoch]`; a batch never spans two epochs."""
    def rows(counters):
        epoch = int(counters[0]) // n
        return view_logits[epoch][counters - epoch * n]

    return _rows_from_numpy(rows, view_logits[0].shape[1])


def _rows_from_numpy(rows, num_classes):
    """A tf.data-side function keys -> float32 logits of shape (batch, num_classes), from
    `rows(keys)` run in NumPy (a memory map's rows are read per batch)."""
    def read(keys):
        logits = tf.numpy_function(lambda k: np.asarray(rows(k), dtype=np.float32), [keys],
                                   tf.float32)
        logits.set_shape([None, num_classes])
        return logits

    return read


def _epoch_pairs(n, epoch, *, seed, shuffle):
    """(counter, index) pairs of one epoch: a permutation of range(n) drawn statelessly from
    (seed, epoch); counter = epoch * n + index is unique over the whole run."""
    order = tf.range(n, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(
            order, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    return tf.data.Dataset.from_tensor_slices((epoch * n + order, order))


def _logit_reader(teacher_logits):
    """A function from a batch of indices to those rows of `teacher_logits` (None: no logits)."""
    if teacher_logits is None:
        return None
    if isinstance(teacher_logits, np.memmap):
        # Each step reads its own rows from disk; the cache is never loaded whole.
        return _rows_from_numpy(lambda indices: teacher_logits[indices],
                                teacher_logits.shape[1])
    table = tf.constant(np.asarray(teacher_logits, np.float32))
    return lambda indices: tf.gather(table, indices)


def crop_flip(image, seed_pair):
    """Pads `image` (H, W, C) by 4 pixels, crops a random H x W window, flips it at random."""
    seed_pair = tf.cast(seed_pair, tf.int64)
    height, width, channels = image.shape
    padded = tf.pad(image, [[CROP_PADDING, CROP_PADDING], [CROP_PADDING, CROP_PADDING], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, (height, width, channels), seed=seed_pair)
    # A second, different seed for the flip: reusing the crop's would correlate them.
    return tf.image.stateless_random_flip_left_right(cropped, seed=seed_pair[::-1])


def jitter_image(image, factors, colour):
    """Photometric jitter of one (H, W, C) image in [0, 1]: `factors` = (brightness,
    contrast, saturation multipliers, hue shift), applied in that fixed order."""
    brightness, contrast, saturation, hue = tf.unstack(tf.cast(factors, image.dtype))
    # NOTE: tf.image.adjust_brightness adds a delta; ColorJitter, whose magnitudes the
    # paper quotes, multiplies, so brightness is a multiplication here.
    image = tf.clip_by_value(image * brightness, 0.0, 1.0)
    # NOTE: tf.image.adjust_contrast blends towards each channel's mean, ColorJitter
    # towards the grey-scale mean; the two agree on grey-scale images.
    image = tf.clip_by_value(tf.image.adjust_contrast(image, contrast), 0.0, 1.0)
    if colour:
        image = tf.clip_by_value(tf.image.adjust_saturation(image, saturation), 0.0, 1.0)
        image = tf.clip_by_value(tf.image.adjust_hue(image, hue), 0.0, 1.0)
    return image


def random_jitter(image, seed_pair, low, high):
    """`jitter_image` with factors drawn statelessly from `seed_pair`, for data in [low, high]."""
    b, c, s, h = JITTER
    u = tf.random.stateless_uniform([4], seed=tf.cast(seed_pair, tf.int64))
    factors = tf.stack([1 - b + 2 * b * u[0], 1 - c + 2 * c * u[1], 1 - s + 2 * s * u[2],
                        -h + 2 * h * u[3]])
    span = max(high - low, 1e-12)
    unit = (image - low) / span
    return jitter_image(unit, factors, colour=image.shape[-1] == 3) * span + low
