"""The `Splits` container and the name -> loader registry behind `load_dataset`."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """Train / validation / test arrays of one dataset.

    `x_*` are float32 with shape `(n,) + input_shape`; `y_*` are int32 class indices.
    The validation split exists so that checkpoints and hyper-parameters are never chosen on
    the test set.
    """

    # NOTE: eq=False because a generated __eq__ would compare NumPy arrays element-wise and
    # fail on `bool(...)`; identity comparison is the only meaningful default here.

    name: str
    num_classes: int
    input_shape: tuple
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self):
        for split in ("train", "val", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x.dtype != np.float32 or y.dtype != np.int32:
                raise ValueError(
                    f"{self.name} {split}: expected float32 x and int32 y, "
                    f"got {x.dtype} and {y.dtype}"
                )
            if x.shape[1:] != tuple(self.input_shape) or len(x) != len(y):
                raise ValueError(
                    f"{self.name} {split}: x has shape {x.shape} and y {y.shape}, "
                    f"expected (n,) + {tuple(self.input_shape)} and (n,)"
                )


class DatasetError(ValueError):
    """A dataset that cannot be loaded as asked (unknown name, missing data, bad split size)."""


# A loader takes keyword arguments `split_seed: int` and `val_size: float | None` (a
# fraction in (0, 1), a number of examples >= 1, or None for the dataset's own default)
# and returns a `Splits`.
Loader = Callable[..., Splits]

DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader to `DATASETS` under `name`."""

    def decorator(loader: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = loader
        return loader

    return decorator


def check_val_size(val_size) -> None:
    if val_size is None:
        return
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float, np.integer,
                                                               np.floating)):
        raise DatasetError(f"val_size must be a number, got {val_size!r}")
    if not (0.0 < val_size < 1.0 or (val_size >= 1 and float(val_size).is_integer())):
        raise DatasetError(f"val_size must be a fraction in (0, 1) or a whole number of "
                           f"examples >= 1, got {val_size!r}")


def dataset_names() -> list:
    """The registered names, then the TFDS sets tested with tfkd (any TFDS image set loads)."""
    from tfkd.data.tfds_loader import KNOWN_TFDS_DATASETS

    return sorted(DATASETS) + list(KNOWN_TFDS_DATASETS)


def load_dataset(
    name: str, *, split_seed: int = 0, val_size: Optional[float] = None,
    data_dir: Optional[str] = None, image_size: Optional[int] = None,
) -> Splits:
    """Loads dataset `name` with train / validation / test splits.

    Args:
      name: a key of `DATASETS` (the embedded "digits", "mnist1d", ...) or the name of a
        TensorFlow Datasets image-classification set ("cifar10", "cifar100", "mnist",
        "fashion_mnist", "svhn_cropped", ...).
      split_seed: seeds the validation (and, where the source has none, test) split. It is
        deliberately separate from any model seed, so that every ensemble member, teacher
        and student of one experiment sees the same examples.
      val_size: how much of the data available for training is held out for validation:
        a fraction in (0, 1) or a number of examples. None keeps the dataset's default
        (digits: 0.25 of the 80% left after the test split, i.e. 20% of all; mnist1d: 500
        of 4,000; TFDS sets: 10% of their training split).
      data_dir, image_size: for TFDS sets only (see `tfkd.data.tfds_loader.load_tfds`).
    """
    check_val_size(val_size)
    if name in DATASETS:
        if data_dir or image_size:
            raise DatasetError(f"data_dir and image_size apply to TFDS datasets, not to the "
                               f"embedded {name!r}")
        return DATASETS[name](split_seed=split_seed, val_size=val_size)
    from tfkd.data import tfds_loader

    if not tfds_loader.is_tfds_name(name):
        raise DatasetError(
            f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}, or any "
            "other TensorFlow Datasets image-classification set")
    return tfds_loader.load_tfds(name, split_seed=split_seed, val_size=val_size,
                                 data_dir=data_dir, image_size=image_size)
