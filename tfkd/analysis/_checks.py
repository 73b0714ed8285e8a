"""Argument checks and batched forward passes shared by the analysis modules."""

import numpy as np
import tensorflow as tf


def inputs(x, name="x", min_rank=2):
    """`x` as a float32 array of shape (N, ...) with N >= 1; a ValueError otherwise."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < min_rank or x.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a batch of shape (N, ...) with rank >= {min_rank} and N >= 1; "
            f"got shape {x.shape}."
        )
    return x


def labels(y, num_examples, num_classes=None, name="y"):
    """`y` as int64 class indices of shape (num_examples,); (N, 1) is squeezed.

    With `num_classes` the indices must also lie in [0, num_classes).
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (num_examples,):
        raise ValueError(
            f"`{name}` must have shape ({num_examples},) to match the inputs; got shape {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"`{name}` must be integer class indices; got dtype {y.dtype}.")
    if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"`{name}` must lie in [0, {num_classes}); got range [{y.min()}, {y.max()}]."
        )
    return y.astype(np.int64)


def positive_int(value, name):
    """`value` as an int >= 1; a ValueError naming it otherwise."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return int(value)


def non_negative(value, name):
    """`value` as a float >= 0; a ValueError naming it otherwise (NaN included)."""
    value = float(value)
    if not value >= 0:
        raise ValueError(f"`{name}` must be >= 0; got {value!r}.")
    return value


def value_range(bounds, x, name):
    """(lo, hi) floats with lo < hi that contain every value of `x`, or None for None."""
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (lo, hi) of numbers or None; got {bounds!r}.")
    if not lo < hi:
        raise ValueError(f"`{name}` must satisfy lo < hi; got {bounds!r}.")
    if x.min() < lo or x.max() > hi:
        raise ValueError(
            f"`{name}`={bounds!r} must contain the data, whose values span "
            f"[{x.min()}, {x.max()}]; derive it from the data (e.g. its min and max)."
        )
    return lo, hi


def predict_logits(model, x, batch_size):
    """The model's logits on `x`, inference mode, in batches, as a float32 NumPy array."""
    # A direct call skips predict()'s data-adapter set-up, which dominates on the few
    # hundred examples an analysis looks at; training=False keeps BatchNorm in inference mode.
    outputs = [
        np.asarray(model(tf.constant(x[i : i + batch_size]), training=False), dtype=np.float32)
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs, axis=0)


def num_classes(model):
    """The size of the model's last output axis, or None where the model does not say."""
    try:
        return int(model.outputs[0].shape[-1])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def model_name(model):
    """The model's name for error messages."""
    return repr(getattr(model, "name", type(model).__name__))
