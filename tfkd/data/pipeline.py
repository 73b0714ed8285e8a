"""In-memory NumPy arrays -> `tf.data.Dataset`, optionally with precomputed teacher logits."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf


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
) -> tf.data.Dataset:
    """Batches (x, y), or ({"inputs": x, "teacher_logits": t}, y) when `teacher_logits` is given.

    The dict form lets a Distiller train against teacher outputs computed once, instead of
    running the teachers on every step; the logits travel with their example through the
    shuffle.

    `augment="crop_flip"` applies the standard CIFAR augmentation to every example of every
    epoch: pad 4 pixels (with zeros, the mean of standardised data), crop back to the
    original size at a random offset, flip horizontally with probability 1/2. Use it for
    training batches only. The draws are stateless and seeded by `seed`: reproducible,
    different in each epoch, and independent of the parallel map's scheduling.
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
    if augment != "none":
        if teacher_logits is not None:
            # The teacher must see the augmented image its student sees: cached logits of
            # the clean image would teach a different target.
            raise ValueError("augment needs online teachers: precomputed teacher_logits "
                             "belong to the un-augmented images")
        if x.ndim != 4:
            raise ValueError(f"augment={augment!r} needs images (n, height, width, channels), "
                             f"got x of shape {x.shape}")
    if isinstance(teacher_logits, np.memmap):
        return _with_streamed_logits(x, y, teacher_logits, batch_size=batch_size,
                                     shuffle=shuffle, seed=seed,
                                     drop_remainder=drop_remainder, repeat=repeat)
    if teacher_logits is None:
        features = x
    else:
        features = {"inputs": x, "teacher_logits": np.asarray(teacher_logits, np.float32)}

    dataset = tf.data.Dataset.from_tensor_slices((features, y))
    if shuffle:
        # A full-size buffer is affordable for in-memory data and gives a true permutation.
        # Shuffling before repeat gives each epoch a new order without mixing epochs.
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if augment != "none":
        # One stateless seed pair per example; rerandomize_each_iteration gives each epoch
        # (each new iterator) fresh draws from the same seeded stream.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda example, pair: (crop_flip(example[0], pair), example[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


AUGMENTATIONS = ("none", "crop_flip")
CROP_PADDING = 4


def crop_flip(image, seed_pair):
    """Pads `image` (H, W, C) by 4 pixels, crops a random H x W window, flips it at random."""
    seed_pair = tf.cast(seed_pair, tf.int64)
    height, width, channels = image.shape
    padded = tf.pad(image, [[CROP_PADDING, CROP_PADDING], [CROP_PADDING, CROP_PADDING], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, (height, width, channels), seed=seed_pair)
    # A second, different seed for the flip: reusing the crop's would correlate them.
    return tf.image.stateless_random_flip_left_right(cropped, seed=seed_pair[::-1])


def _with_streamed_logits(x, y, teacher_logits, *, batch_size, shuffle, seed, drop_remainder,
                          repeat):
    """The dict form, reading each batch's teacher logits from a memory-mapped cache file.

    Indices are shuffled and batched, not examples, so the cache is never loaded whole:
    each step reads its own rows from disk. Shuffling `range(n)` with the same seed gives
    the same permutation as shuffling the examples, so batches equal the in-memory form's.
    """
    x_all, y_all = tf.constant(x), tf.constant(y)
    num_classes = teacher_logits.shape[1]

    def read_rows(indices):
        return np.asarray(teacher_logits[indices], dtype=np.float32)

    def fetch(indices):
        logits = tf.numpy_function(read_rows, [indices], tf.float32)
        logits.set_shape([None, num_classes])
        return ({"inputs": tf.gather(x_all, indices), "teacher_logits": logits},
                tf.gather(y_all, indices))

    indices = tf.data.Dataset.range(len(x))
    if shuffle:
        indices = indices.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        indices = indices.repeat()
    indices = indices.batch(batch_size, drop_remainder=drop_remainder)
    return indices.map(fetch).prefetch(tf.data.AUTOTUNE)
