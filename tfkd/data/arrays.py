"""Raw arrays -> `Splits`: the carving and normalisation every image source shares.

TFDS, keras:, folder: and npz: data all pass through `splits_from_arrays`, so that they
carve validation the same way (stratified by class, drawn from `split_seed`, from the
training data only) and standardise the same way (per channel, with the training part's
statistics).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tfkd.data.registry import DatasetError, Splits

DEFAULT_VAL_FRACTION = 0.1  # 45,000 / 5,000 on CIFAR, as in the replication note
_RESIZE_BATCH = 1024
MAX_LABEL = int(np.iinfo(np.int32).max)  # labels are int32 from here on
# Elements per finiteness check: 16 MB of float32 at a time, never a copy of a whole array.
_FINITE_CHUNK = 2**22


def held_out_count(size, n_pool, name, *, what="val_size", held="validation") -> int:
    """Examples to hold out of `n_pool`: None = 10%, < 1 a fraction, >= 1 a count."""
    if size is None:
        size = DEFAULT_VAL_FRACTION
    count = int(round(size * n_pool)) if size < 1 else int(size)
    if size >= 1 and size != count:
        raise DatasetError(f"{what} must be a fraction in (0, 1) or a whole number of "
                           f"examples, got {size!r}")
    if not 1 <= count < n_pool:
        raise DatasetError(
            f"{what}={size!r} leaves no training or no {held} example: the {name} "
            f"training data has {n_pool} examples, so {what} needs 1 to {n_pool - 1} "
            f"examples")
    return count


def stratified_subset(y, count, seed):
    """`count` indices of `y` (class labels) drawn at random from `seed`, with every class's
    count within one example of its share (count * n_c / n: each class gets the floor of its
    share, and the examples left over go to the largest remainders, ties broken at random).

    The indices come interleaved by class, so that every prefix is near-stratified too (a
    figure of the first 8 examples shows several classes, not the first one's). Data sets
    stored in class order (a folder read class by class, a sorted `.npz`) are the reason:
    their first N examples are one class. Written by hand: scikit-learn's
    `train_test_split(stratify=...)` needs two examples of every class and keeps no order.
    """
    y = np.asarray(y)
    count = int(count)
    if not 0 <= count <= len(y):
        raise ValueError(f"count must be in 0..{len(y)}, got {count}")
    rng = np.random.default_rng(seed)
    classes, inverse, sizes = np.unique(y, return_inverse=True, return_counts=True)
    share = count * sizes / len(y)
    quota = np.floor(share).astype(int)
    left = count - int(quota.sum())
    # Largest remainder first; a random key breaks ties.
    order = np.lexsort((rng.random(len(classes)), -(share - quota)))
    quota[order[:left]] += 1
    chosen, keys = [], []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        picked = rng.permutation(members)[:quota[c]]
        chosen.append(picked)
        # Class c's j-th example sits at (j + u) / quota: the classes interleave evenly.
        keys.append((np.arange(quota[c]) + rng.random()) / max(quota[c], 1))
    chosen, keys = np.concatenate(chosen), np.concatenate(keys)
    return chosen[np.argsort(keys, kind="stable")].astype(np.int64)


def carve(y, count, seed):
    """(held-out indices, kept indices) of range(len(y)), sorted: `count` examples held out,
    stratified by the labels `y` (each class's count within one of its share, in both
    parts); the split depends only on (y, count, seed)."""
    held = np.sort(stratified_subset(y, count, seed))
    kept = np.setdiff1d(np.arange(len(y)), held, assume_unique=True)
    return held, kept


# How an image source prepares its inputs (--input_scaling): choice -> what it does. "auto"
# is each source's own; the others apply to the sources that carve their splits here.
INPUT_SCALINGS = {
    "auto": "the source's own: images scaled to [0, 1] and standardised per channel with the "
            "training split's statistics (digits, mnist1d and multiview keep their own)",
    "standardise": "scaled to [0, 1], then standardised per channel with the training split's "
                   "statistics",
    "unit": "scaled to [0, 1] (8-bit images divided by 255), not standardised",
    "none": "the values as stored, as float32",
}


def prepare(x_train, others, scale, scaling=None):
    """(x_train, others) as float32, prepared as `scaling` (INPUT_SCALINGS) says; None and
    "auto" standardise."""
    if scaling in (None, "auto", "standardise"):
        x_train, others, _ = standardise(x_train, others, scale)
        return x_train, others
    factor = np.float32(scale if scaling == "unit" else 1.0)

    def apply(x):
        out = x.astype(np.float32)
        out *= factor
        return out

    return apply(x_train), [apply(x) for x in others]


def standardise(x_train, others, scale):
    """x scaled by `scale`, then standardised per channel (last axis) with train statistics."""
    scale = np.float32(scale)
    axes = tuple(range(x_train.ndim - 1))
    # float64 accumulation: a float32 sum over 10^8 pixels loses digits.
    mean = x_train.mean(axis=axes, dtype=np.float64) * scale
    var = (x_train.astype(np.float32) * scale).var(axis=axes, dtype=np.float64)
    std = np.sqrt(np.maximum(var, 1e-12))
    mean, std = mean.astype(np.float32), std.astype(np.float32)

    def apply(x):
        out = x.astype(np.float32)
        out *= scale
        out -= mean
        out /= std
        return out

    return apply(x_train), [apply(x) for x in others], (mean, std)


def resize_images(x, image_size):
    """Images (n, h, w, c) resized to (n, image_size, image_size, c), in batches."""
    import tensorflow as tf

    return np.concatenate([
        tf.image.resize(x[i:i + _RESIZE_BATCH], (image_size, image_size)).numpy()
        for i in range(0, len(x), _RESIZE_BATCH)])


def class_labels(y, name, split):
    """`y` as int32 class indices of shape (n,); DatasetError for anything else, naming the
    first label out of range (checked on the raw labels: a cast first would read 2**40 + k
    as k)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # keras.datasets' CIFAR labels are (n, 1)
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{name}: y_{split} must hold integer class indices of shape (n,), "
                           f"got {y.dtype} of shape {y.shape}")
    if len(y) and y.min() < 0:
        first = int(np.argmax(y < 0))
        raise DatasetError(f"{name}: y_{split}[{first}] is label {int(y[first])}; class "
                           f"indices start at 0")
    if len(y) and int(y.max()) > MAX_LABEL:
        first = int(np.argmax(y > MAX_LABEL))
        raise DatasetError(f"{name}: y_{split}[{first}] is label {int(y[first])}, beyond the "
                           f"largest class index tfkd takes ({MAX_LABEL}, int32)")
    return y.astype(np.int32)


def check_label_sets(name, y_train, **others):
    """The number of classes from y_train, which must use every index 0..K-1; every other
    split may only use labels that y_train has."""
    present = np.unique(y_train)
    num_classes = int(present[-1]) + 1
    if len(present) < num_classes:
        # The first few absent indices, without a set of all num_classes indices (a label of
        # 10**9 would make it gigabytes).
        missing = np.setdiff1d(np.arange(min(num_classes, len(present) + 5)), present)
        extra = num_classes - len(present) - len(missing)
        raise DatasetError(f"{name}: training labels must be 0..{num_classes - 1} with every "
                           f"class present; missing: {_few(missing.tolist(), extra=extra)}")
    for split, y in others.items():
        extra = sorted(set(np.unique(y).tolist()) - set(present.tolist()))
        if extra:
            raise DatasetError(f"{name}: {split} has labels {_few(extra)} that the training "
                               f"data does not have (0..{num_classes - 1})")
    return num_classes


def _few(values, limit=5, extra=0):
    shown = ", ".join(map(str, values[:limit]))
    more = max(len(values) - limit, 0) + extra
    return shown + (f" (and {more} more)" if more else "")


def check_inputs(x, name, array):
    """DatasetError unless `x` holds numbers that are finite as float32, naming the first
    element that is not (NaN, an infinity, or a float64 beyond float32's range, which the
    cast to float32 would make infinite).

    Checked in chunks of rows, so a large array is never copied whole. Written by hand:
    Keras and TF check no input values (a NaN in x_test just lowers the test accuracy).
    """
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.issubdtype(
            x.dtype, np.complexfloating):
        raise DatasetError(f"{name}: {array} must hold real numbers, got {x.dtype}")
    if not np.issubdtype(x.dtype, np.floating):
        return  # every integer is finite as float32
    step = max(1, _FINITE_CHUNK // max(1, int(np.prod(x.shape[1:], dtype=np.int64))))
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(chunk.astype(np.float32, copy=False))
        if bad.any():
            local = np.unravel_index(int(np.argmax(bad)), chunk.shape)
            index = (start + int(local[0]),) + tuple(int(i) for i in local[1:])
            value = chunk[local]
            what = (f"{value!r}, beyond float32's range" if np.isfinite(value)
                    else str(value))
            raise DatasetError(f"{name}: {array}[{', '.join(map(str, index))}] is {what}; "
                               "inputs must be finite numbers (within float32's +-3.4e38)")


def splits_from_arrays(
    name: str, x_pool, y_pool, x_test, y_test, *, split_seed: int,
    val_size: Optional[float], num_classes: Optional[int] = None,
    image_size: Optional[int] = None, scale: Optional[float] = None,
    input_scaling: Optional[str] = None,
) -> Splits:
    """Checks the arrays, carves validation out of (x_pool, y_pool) and standardises
    everything with the training part's per-channel statistics.

    Checked here once for every source (DatasetError, one line naming `name`, the array and
    the first bad position): inputs finite as float32 (`check_inputs`), labels within
    0..int32 max (`class_labels`), at least two classes in y_train, matching lengths and
    example shapes. Grey-scale images (n, h, w) get a channel axis.

    Args:
      name: the dataset's name, for `Splits.name` and messages.
      x_pool, y_pool: all training data (validation is carved from it).
      x_test, y_test: the test split, kept whole.
      num_classes: known from the source's metadata (labels are then only checked to be in
        range); None infers it from y_pool and checks that every split's labels are ones
        the training data has.
      image_size: resize images (n, h, w, c) to image_size x image_size first.
      scale: multiplies x before standardising; None: 1/255 for uint8 x, else 1.
      input_scaling: a key of INPUT_SCALINGS; None is "auto" (standardise).
    """
    y_pool = class_labels(y_pool, name, "train")
    y_test = class_labels(y_test, name, "test")
    x_pool, x_test = np.asarray(x_pool), np.asarray(x_test)
    for split, x, y in (("train", x_pool, y_pool), ("test", x_test, y_test)):
        if x.ndim < 2:
            raise DatasetError(f"{name}: x_{split} has shape {x.shape}; expected (n, ...) "
                               f"with one row per example")
        if len(x) != len(y):
            raise DatasetError(f"{name}: x_{split} has {len(x)} examples but y_{split} "
                               f"has {len(y)}")
        if not len(x):
            raise DatasetError(f"{name}: the {split} split is empty")
        check_inputs(x, name, f"x_{split}")
    if x_pool.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{name}: x_train examples have shape {x_pool.shape[1:]} but "
                           f"x_test examples {x_test.shape[1:]}; they must match")
    classes = np.unique(y_pool)
    if len(classes) < 2:
        raise DatasetError(f"{name}: y_train has one class only (label {int(classes[0])} in "
                           f"all {len(y_pool)} examples); a classifier needs at least two")
    if x_pool.ndim == 3:  # grey-scale images (n, h, w) get a channel axis, as TFDS has them
        x_pool, x_test = x_pool[..., None], x_test[..., None]
    if scale is None:
        scale = 1 / 255.0 if x_pool.dtype == np.uint8 else 1.0
    if image_size:
        if x_pool.ndim != 4:
            raise DatasetError(f"{name}: image_size applies to images of shape (n, h, w, c), "
                               f"not to x of shape {x_pool.shape}")
        x_pool, x_test = resize_images(x_pool, image_size), resize_images(x_test, image_size)
    if num_classes is None:
        num_classes = check_label_sets(name, y_pool, y_test=y_test)
    else:
        for split, y in (("train", y_pool), ("test", y_test)):
            if y.max() >= num_classes:
                raise DatasetError(f"{name}: y_{split} has label {int(y.max())}, outside "
                                   f"0..{num_classes - 1}")
    n_val = held_out_count(val_size, len(x_pool), name)
    val_idx, train_idx = carve(y_pool, n_val, split_seed)
    x_train, (x_val, x_test) = prepare(x_pool[train_idx], [x_pool[val_idx], x_test], scale,
                                       input_scaling)
    return Splits(name, int(num_classes), tuple(int(d) for d in x_train.shape[1:]),
                  x_train, y_pool[train_idx], x_val, y_pool[val_idx], x_test, y_test)
