"""Photometric jitter and how consistently a model's predictions survive it.

Ojha et al. (NeurIPS 2023) train a teacher with colour jitter (torchvision's ColorJitter,
brightness, contrast and saturation magnitudes 0.4, hue 0.2) and find that a distilled
student inherits the teacher's invariance to it. `jitter` draws the same transformations;
`consistency` measures the invariance.
"""

import numpy as np
import tensorflow as tf

from tfkd.analysis import _checks
from tfkd.data.pipeline import jitter_images

# Ojha et al., section on invariance to data augmentation.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.4, 0.4, 0.4, 0.2


# One graph per colour flag and image shape: the analysis jitters many batches.
_jitter_images = tf.function(jitter_images, reduce_retracing=True)


def _magnitudes(brightness, contrast, saturation, hue):
    for name, value in (("brightness", brightness), ("contrast", contrast),
                        ("saturation", saturation)):
        _checks.non_negative(value, name)
    if not 0 <= hue <= 0.5:
        raise ValueError(f"`hue` must lie in [0, 0.5] (half the colour wheel); got {hue!r}.")


def jitter(
    x, brightness=BRIGHTNESS, contrast=CONTRAST, saturation=SATURATION, hue=HUE, seed=0,
    value_range=(0.0, 1.0),
):
    """Random photometric jitter of a batch, one random draw per example.

    Follows torchvision's ColorJitter: brightness and contrast multipliers uniform in
    [max(0, 1 - m), 1 + m] for magnitude m, saturation likewise, a hue shift uniform in
    [-hue, hue] (in turns of the colour wheel). Defaults are the paper's magnitudes.

    Args:
      x: (N, H, W, C) images or (N, L, C) signals. Grey-scale (C = 1) inputs and signals
        get brightness and contrast only; `saturation` and `hue` are ignored for them.
        Colour images (C = 3) get all four.
      brightness, contrast, saturation: magnitudes >= 0; hue: in [0, 0.5]. Zero skips a
        transformation, and all zeros return `x` unchanged.
      seed: seed of the per-example factors; the same seed gives the same output.
      value_range: (lo, hi) of the data. Jitter works on [0, 1] intensities, so `x` is
        mapped from this range to [0, 1] and back; pass the data's own range for
        standardised data.

    Returns:
      float32 array of the shape of `x`, inside `value_range`.
    """
    x = _checks.inputs(x, min_rank=3)
    if x.ndim not in (3, 4):
        raise ValueError(f"`x` must have shape (N, H, W, C) or (N, L, C); got shape {x.shape}.")
    _magnitudes(brightness, contrast, saturation, hue)
    lo, hi = _checks.value_range(value_range, x, "value_range")
    channels = x.shape[-1]
    colour = x.ndim == 4 and channels == 3
    if x.ndim == 4 and channels not in (1, 3) and (saturation or hue):
        raise ValueError(
            f"saturation and hue need RGB images (3 channels); got {channels} channels. "
            "Pass saturation=0 and hue=0."
        )
    if not colour:
        saturation = hue = 0.0
    if not (brightness or contrast or saturation or hue):
        return x.copy()

    rng = np.random.default_rng(seed)

    def multipliers(magnitude):
        return rng.uniform(max(0.0, 1.0 - magnitude), 1.0 + magnitude, size=len(x))

    # Draw all four columns whatever the magnitudes, so that one seed gives the same
    # brightness factors whether or not saturation and hue are switched on.
    factors = np.stack(
        [multipliers(brightness), multipliers(contrast), multipliers(saturation),
         rng.uniform(-hue, hue, size=len(x))],
        axis=1,
    ).astype(np.float32)
    images = (x - lo) / (hi - lo)
    if x.ndim == 3:
        images = images[:, :, None, :]  # signals as images of width 1
    jittered = _jitter_images(tf.constant(images), tf.constant(factors), colour).numpy()
    if x.ndim == 3:
        jittered = jittered[:, :, 0, :]
    return np.clip(jittered * (hi - lo) + lo, lo, hi).astype(np.float32)


def consistency(
    model, x, n_views=5, brightness=BRIGHTNESS, contrast=CONTRAST, saturation=SATURATION,
    hue=HUE, seed=0, value_range=(0.0, 1.0), batch_size=256, per_example=False,
):
    """Fraction of (example, view) pairs whose top-1 prediction equals the clean one.

    Each of `n_views` views is `jitter(x, ..., seed=<derived from seed and the view>)`;
    1.0 means the model's predictions are fully invariant to the jitter. Labels are not
    needed: invariance is about the model agreeing with itself. With `per_example`, the
    (N, n_views) booleans instead (whose mean is the fraction).
    """
    n_views = _checks.positive_int(n_views, "n_views")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    x = _checks.inputs(x, min_rank=3)
    clean = np.argmax(_checks.predict_logits(model, x, batch_size), axis=-1)
    view_seeds = np.random.SeedSequence(seed).generate_state(n_views)
    same = np.stack([
        np.argmax(_checks.predict_logits(
            model,
            jitter(x, brightness, contrast, saturation, hue, seed=int(view_seed),
                   value_range=value_range),
            batch_size), axis=-1) == clean
        for view_seed in view_seeds], axis=1)
    return same if per_example else float(np.mean(same))
