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


# A loader takes keyword arguments `split_seed: int` and `val_fraction: float | None`
# (None: the dataset's own default) and returns a `Splits`.
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


def load_dataset(
    name: str, *, split_seed: int = 0, val_fraction: Optional[float] = None
) -> Splits:
    """Loads dataset `name` with train / validation / test splits.

    Args:
      name: a key of `DATASETS`.
      split_seed: seeds the validation (and, where the source has none, test) split. It is
        deliberately separate from any model seed, so that every ensemble member, teacher
        and student of one experiment sees the same examples.
      val_fraction: fraction of the examples available for training that is held out for
        validation; None keeps the dataset's default (digits: 0.25 of the 80% left after
        the test split, i.e. 20% of all; mnist1d: 0.125 of 4,000, i.e. 500).
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}"
        )
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    return DATASETS[name](split_seed=split_seed, val_fraction=val_fraction)
