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
    if teacher_logits is None:
        features = x
    else:
        teacher_logits = np.asarray(teacher_logits, dtype=np.float32)
        if len(teacher_logits) != len(x):
            raise ValueError(
                f"teacher_logits has {len(teacher_logits)} rows but x has {len(x)} examples"
            )
        features = {"inputs": x, "teacher_logits": teacher_logits}

    dataset = tf.data.Dataset.from_tensor_slices((features, y))
    if shuffle:
        # A full-size buffer is affordable for in-memory data and gives a true permutation.
        # Shuffling before repeat gives each epoch a new order without mixing epochs.
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
