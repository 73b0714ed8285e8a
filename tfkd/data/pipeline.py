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
) -> tf.data.Dataset:
    """Batches (x, y), or ({"inputs": x, "teacher_logits": t}, y) when `teacher_logits` is given.

    The dict form lets a Distiller train against teacher outputs computed once, instead of
    running the teachers on every step; the logits travel with their example through the
    shuffle.
    """
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
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


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
