"""`npz:PATH`: a NumPy archive with arrays x_train, y_train, x_test, y_test, read by
`numpy.load`, as written by

    np.savez("set.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

x_* are numeric arrays of shape (n, ...): uint8 images are scaled to [0, 1] before
standardisation, and grey-scale images (n, h, w) get a channel axis. y_* are integer class
indices 0..K-1 of shape (n,) or (n, 1); every class must occur in y_train. Other arrays in
the archive are ignored; validation is carved from the training arrays.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from tfkd.data.arrays import splits_from_arrays
from tfkd.data.registry import DatasetError, Splits, register_source

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def check_npz(path: str) -> None:
    if not os.path.isfile(os.path.expanduser(path)):
        raise DatasetError(f"npz:{path}: no such file; expected a .npz archive with arrays "
                           f"{', '.join(ARRAYS)} (written by numpy.savez)")


@register_source("npz", form="npz:PATH", check=check_npz, options=("image_size",),
                 usage=f"npz:PATH (a .npz with {', '.join(ARRAYS)})")
def load_npz(path: str, *, split_seed: int = 0, val_size=None, data_dir=None,
             image_size=None) -> Splits:
    """The archive at `path` as `Splits` (see the module docstring)."""
    del data_dir  # refused by the registry
    name = f"npz:{path}"
    try:
        # NOTE: allow_pickle=False: an archive is data, and a pickled object array in it
        # could run code when loaded.
        archive = np.load(os.path.expanduser(path), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DatasetError(f"{name} holds a single array, not a .npz archive with "
                               f"{', '.join(ARRAYS)}")
        with archive:
            missing = [a for a in ARRAYS if a not in archive.files]
            if missing:
                raise DatasetError(
                    f"{name} has arrays {', '.join(archive.files) or 'none'}; it needs "
                    f"{', '.join(ARRAYS)} (missing: {', '.join(missing)})")
            x_pool, y_pool, x_test, y_test = (archive[a] for a in ARRAYS)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, DatasetError):
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetError(f"{name} is not a readable .npz archive with "
                           f"{', '.join(ARRAYS)} ({reason})") from None
    for split, x in (("train", x_pool), ("test", x_test)):
        if x.ndim < 2:
            raise DatasetError(f"{name}: x_{split} has shape {x.shape}; expected (n, ...) "
                               f"with one row per example")
    if x_pool.ndim == 3:
        x_pool, x_test = x_pool[..., None], x_test[..., None]
    return splits_from_arrays(name, x_pool, y_pool, x_test, y_test, split_seed=split_seed,
                              val_size=val_size, image_size=image_size)
