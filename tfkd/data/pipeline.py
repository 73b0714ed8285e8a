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

from tfkd.choices import AUGMENTATIONS  # the names, listed there

# The version of how views are drawn (_Views), part of a view cache's name: raise it
# whenever the views of a given seed change.
VIEWS = 2
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
    A row of `teacher_logits` (or of `view_logits[e]`) is an example's logits, (classes,),
    or each teacher member's, (members, classes): t is (batch, classes) or
    (batch, members, classes).

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
    [0, 1] and back. Use either for training batches only. The draws are stateless: with
    `epochs`, example i's view in epoch e is a function of (`augment_seed` (default: `seed`),
    e, i) only, reproducible, different in each epoch, and independent of
    the batch order. So two datasets with one `augment_seed` hold the same views of each
    example in each epoch, whatever their shuffling `seed` (`augmented_views` gives them in
    example order), and `view_logits[e][i]`, the teachers' outputs on example i's view in
    epoch e, can travel with it as `teacher_logits`. Without `epochs`, each batch draws
    its own views, afresh in each epoch.
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
    views = None if augment == "none" else _Views(
        x, x_all, augment, seed if augment_seed is None else augment_seed)
    read_logits = _logit_reader(teacher_logits)
    read_views = None if view_logits is None else _view_reader(view_logits, n)

    def one_batch(counters, indices, table=None, rows=None):
        """The batch of examples `indices`; `counters`, `table` and `rows` seed their views."""
        if views is None:
            inputs = tf.gather(x_all, indices)
        else:
            inputs = views(counters, indices, table, rows)
        if read_views is not None:
            inputs = {"inputs": inputs, "teacher_logits": read_views(counters)}
        elif read_logits is not None:
            inputs = {"inputs": inputs, "teacher_logits": read_logits(indices)}
        return inputs, tf.gather(y_all, indices)

    parallel = {} if views is None else {"num_parallel_calls": tf.data.AUTOTUNE}
    if epochs is not None:
        def epoch_batches(epoch):
            # Batched within each epoch: the last, smaller batch of an epoch stays its own.
            pairs = _epoch_pairs(n, epoch, seed=seed, shuffle=shuffle).batch(
                batch_size, drop_remainder=drop_remainder)
            table = None if views is None else views.table(epoch, n)  # once per epoch
            return pairs.map(lambda c, i: one_batch(c, i, table), **parallel)

        dataset = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
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
        pairs = tf.data.Dataset.zip((counters, indices)).batch(
            batch_size, drop_remainder=drop_remainder)

        def batch_of(counters, indices):
            # No epoch here: a batch's table is keyed by its first counter, a row per example.
            size = tf.size(indices)
            table = None if views is None else views.table(counters[0], size)
            return one_batch(counters, indices, table, tf.range(size))

        dataset = pairs.map(batch_of, **parallel)
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


class _Views:
    """The augmented views of `x`: the one definition of a view, for training batches and
    the view cache. Example i's view in epoch e depends only on (seed, e, i):

    - crop_flip draws from a table of random numbers per epoch, drawn once from (seed, e),
      row i for example i (`table`), so that a batch is cropped and flipped at once;
    - jitter draws per example from (seed, counter), counter = e * n + i, as it always has
      (its views, and the results measured on them, are unchanged).
    """

    def __init__(self, x, x_all, augment, seed):
        self.x_all, self.augment, self.seed = x_all, augment, int(seed)
        self.low, self.high = float(x.min()), float(x.max())

    def table(self, key, size):
        """crop_flip's (size, 3) uniform random numbers in [0, 1) from (seed, key); None for
        augmentations drawn per example."""
        if self.augment != "crop_flip":
            return None
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(key, tf.int64)])
        return tf.random.stateless_uniform(tf.stack([tf.cast(size, tf.int32), 3]), seed=seed)

    def __call__(self, counters, indices, table, rows=None):
        """The views of examples `indices`: crop_flip reads rows `rows` of `table` (default:
        row i for example i), jitter its draws from `counters`."""
        images = tf.gather(self.x_all, indices)
        if self.augment == "crop_flip":
            return crop_flip(images, tf.gather(table, indices if rows is None else rows))
        factors = tf.map_fn(
            lambda counter: tf.random.stateless_uniform(
                [4], seed=tf.stack([tf.constant(self.seed, tf.int64), counter])),
            tf.cast(counters, tf.int64), fn_output_signature=tf.float32)
        return random_jitter(images, factors, self.low, self.high)


def augmented_views(x, *, augment, augment_seed, epoch, batch_size=512):
    """Epoch `epoch`'s augmented view of every example of `x`, in example order, batched:
    the views a training dataset with this `augment_seed` holds in that epoch, whatever
    its shuffling. Built in a parallel map and prefetched, for the teachers' inference."""
    if augment not in AUGMENTATIONS or augment == "none":
        raise ValueError(f"augmented_views needs an augmentation, got {augment!r}")
    x = np.asarray(x)
    n = len(x)
    views = _Views(x, tf.constant(x), augment, augment_seed)
    table = views.table(epoch, n)
    indices = tf.data.Dataset.range(n).batch(batch_size)
    return prefetched(indices.map(lambda i: views(epoch * n + i, i, table),
                                  num_parallel_calls=tf.data.AUTOTUNE))


def _view_reader(view_logits, n):
    """counters -> rows of `view_logits[epoch]`; a batch never spans two epochs."""
    def rows(counters):
        epoch = int(counters[0]) // n
        return view_logits[epoch][counters - epoch * n]

    return _rows_from_numpy(rows, view_logits[0].shape[1:])


def _rows_from_numpy(rows, row_shape):
    """A tf.data-side function keys -> float32 logits of shape (batch, *row_shape), from
    `rows(keys)` run in NumPy (a memory map's rows are read per batch). A row: (classes,)
    logits, or (members, classes) of each member."""
    def read(keys):
        logits = tf.numpy_function(lambda k: np.asarray(rows(k), dtype=np.float32), [keys],
                                   tf.float32)
        logits.set_shape([None, *row_shape])
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
                                teacher_logits.shape[1:])
    table = tf.constant(np.asarray(teacher_logits, np.float32))
    return lambda indices: tf.gather(table, indices)


def crop_flip(images, draws):
    """Pads (B, H, W, C) `images` by CROP_PADDING pixels and crops an H x W window of each,
    at the offset its row of `draws` gives (columns 0 and 1: vertical and horizontal
    offset), flipped horizontally when the row's column 2 is below 1/2.

    NOTE: written as two gathers over the whole batch because tf.image's random crop and
    flip take one image and one seed per call: with per-example calls the augmented
    pipeline alone took 0.20 s of the 2 cores per epoch of 3,000 28x28 images, cores that
    training needs; with the gathers 0.04 s.
    """
    _, height, width, _ = images.shape
    p = CROP_PADDING
    padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
    offsets = tf.minimum(tf.cast(draws[:, :2] * (2 * p + 1), tf.int32), 2 * p)
    rows = offsets[:, :1] + tf.range(height)
    columns = tf.where(draws[:, 2:3] < 0.5, tf.range(width - 1, -1, -1), tf.range(width))
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, offsets[:, 1:] + columns, axis=2, batch_dims=1)


def jitter_image(image, factors, colour):
    """Photometric jitter of one (H, W, C) image in [0, 1]: `factors` = (brightness,
    contrast, saturation multipliers, hue shift), applied in that fixed order (ColorJitter
    shuffles the order; a fixed one keeps results reproducible and comparable across
    models)."""
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


def jitter_images(images, factors, colour):
    """`jitter_image` of each of the (B, H, W, C) `images` in [0, 1] with its row of the
    (B, 4) `factors`; `colour` (a Python bool) adds saturation and hue (RGB only)."""
    # The tf.image adjustments take one scalar factor per call, hence one call per image.
    return tf.map_fn(lambda args: jitter_image(args[0], args[1], colour), (images, factors),
                     fn_output_signature=images.dtype)


def random_jitter(images, draws, low, high):
    """`jitter_images` of (B, H, W, C) `images` in [low, high], with factors from their
    rows of `draws` (uniform in [0, 1)) scaled to the JITTER magnitudes."""
    b, c, s, h = JITTER
    u = tf.unstack(draws, axis=1)
    factors = tf.stack([1 - b + 2 * b * u[0], 1 - c + 2 * c * u[1], 1 - s + 2 * s * u[2],
                        -h + 2 * h * u[3]], axis=1)
    span = max(high - low, 1e-12)
    unit = (images - low) / span
    return jitter_images(unit, factors, colour=images.shape[-1] == 3) * span + low
