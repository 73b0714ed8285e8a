"""Datasets that need no download: scikit-learn's digits and generated MNIST-1D."""

from __future__ import annotations

import functools
import math
import random
from typing import Optional

import numpy as np

from tfkd.data.registry import DatasetError, Splits, register_dataset


def stratified_split(x, y, *, fraction, seed: int):
    """Splits off `fraction` of (x, y) (a number of examples if >= 1) with class proportions
    kept; returns (kept, held_out)."""
    # Imported lazily, like mnist1d below: each is needed only by the loader that uses it.
    from sklearn.model_selection import train_test_split

    if fraction >= 1:
        fraction = int(fraction)
    # As train_test_split counts: ceil for a fraction. Both sides need every class.
    count = fraction if fraction >= 1 else math.ceil(fraction * len(x))
    classes = len(np.unique(y))
    if not classes <= count <= len(x) - classes:
        raise DatasetError(
            f"val_size={fraction} holds out {count} of {len(x)} examples; a stratified split "
            f"of {classes} classes needs {classes} to {len(x) - classes}")
    x_keep, x_out, y_keep, y_out = train_test_split(
        x, y, test_size=fraction, stratify=y, random_state=seed
    )
    return (x_keep, y_keep), (x_out, y_out)


@register_dataset("digits")
def load_digits(*, split_seed: int = 0, val_size: Optional[float] = None) -> Splits:
    """scikit-learn's 1,797 8x8 digits in [0, 1]; 60% train / 20% validation / 20% test."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = bunch.target.astype(np.int32)
    # The source ships no test split, so split_seed fixes it too.
    (x_pool, y_pool), (x_test, y_test) = stratified_split(x, y, fraction=0.2, seed=split_seed)
    (x_train, y_train), (x_val, y_val) = stratified_split(
        x_pool, y_pool, fraction=0.25 if val_size is None else val_size, seed=split_seed
    )
    return Splits("digits", 10, (8, 8, 1), x_train, y_train, x_val, y_val, x_test, y_test)


@functools.lru_cache(maxsize=1)
def _generate_mnist1d():
    """The standard MNIST-1D arrays (4,000 train, 1,000 test), generated once per process."""
    import mnist1d.data

    # NOTE: make_dataset reseeds Python's and NumPy's *global* RNGs (seed 42); restore them
    # so that loading data never changes what unrelated seeded code draws afterwards.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    arrays = (data["x"], data["y"], data["x_test"], data["y_test"])
    for array in arrays:
        array.flags.writeable = False  # shared by every caller through the cache
    return arrays


@register_dataset("mnist1d")
def load_mnist1d(*, split_seed: int = 0, val_size: Optional[float] = None) -> Splits:
    """MNIST-1D (Greydanus 2020) generated offline; 3,500 train / 500 validation / 1,000 test.

    Inputs have shape (40, 1) and are standardised with one mean and one standard deviation
    taken from the training split only.
    """
    x, y, x_test, y_test = _generate_mnist1d()
    (x_train, y_train), (x_val, y_val) = stratified_split(
        x, y, fraction=0.125 if val_size is None else val_size, seed=split_seed
    )
    # Scalar (not per-position) statistics: a per-position shift would change the shape of
    # each signal, which a translation-equivariant Conv1D should see unchanged.
    mean, std = x_train.mean(), x_train.std()

    def prepare(xs, ys):
        xs = ((xs - mean) / std).astype(np.float32)[..., np.newaxis]
        return xs, ys.astype(np.int32)

    return Splits(
        "mnist1d", 10, (40, 1),
        *prepare(x_train, y_train), *prepare(x_val, y_val), *prepare(x_test, y_test),
    )
