"""Synthetic multi-view data after Allen-Zhu & Li, "Towards Understanding Ensemble, Knowledge
Distillation and Self-Distillation in Deep Learning" (ICLR 2023).

Each class c owns two "view" features v_{c,1}, v_{c,2}; all 2k of them are orthonormal
vectors of R^d. A sample is P patches x_1..x_P in R^d (an array of shape (P, d)):

- multi-view samples (the majority) show both views of their class at weight ~1;
- single-view samples show one view (chosen uniformly) at weight ~1 and the other only at a
  small weight rho, so a model that learned only that weak view barely sees the class;
- every sample also shows a few other classes' features at a small weight ("feature noise"),
  and every patch carries isotropic Gaussian noise.

A feature shown at weight z occupies `patches_per_feature` patches of its own, each equal to
z_p * v plus noise with z_p = z times a uniform jitter; the patches of different features are
disjoint and placed at random, and the remaining patches are pure noise.

Departures from the paper, which states its distribution asymptotically in k:

- every other class's feature is not included independently with probability s/k; instead
  exactly `noise_features` distinct other-class features are drawn, so the patch budget
  P >= (2 + noise_features) * patches_per_feature is fixed;
- feature noise has one weight for both kinds of sample (the paper allows up to 0.4 in
  multi-view and a smaller Gamma in single-view samples);
- the paper's tiny dense feature noise (every feature at weight <= gamma in every patch) is
  left out: the Gaussian noise already perturbs every direction;
- weights are set per patch (z_p ~ weight * U[1 - jitter, 1 + jitter]) rather than only
  constraining their sum over the feature's patches.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional

import numpy as np

from tfkd.data.arrays import held_out_count
from tfkd.data.registry import Splits

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class MultiViewConfig:
    """Every parameter of the generator; checked in the constructor.

    Attributes:
      num_classes: k, the number of classes.
      dim: d, the dimension of a patch; at least 2k so that the 2k features are orthogonal.
      num_patches: P, patches per sample.
      patches_per_feature: patches each shown feature occupies (the paper's C_p).
      multi_view_fraction: probability that a sample is multi-view (1 - mu in the paper).
      view_weight: per-patch weight of a view that is present (the paper's ~1).
      weak_view_weight: per-patch weight of the missing view of a single-view sample (rho).
      noise_features: other classes' features shown by every sample (feature noise).
      noise_feature_weight: their per-patch weight.
      weight_jitter: each per-patch weight is multiplied by U[1 - jitter, 1 + jitter].
      noise_std: scale of the Gaussian noise: each coordinate has standard deviation
        noise_std / sqrt(dim), so a patch's noise has norm ~noise_std whatever `dim` (the
        paper's sigma_p scaling).
      train_size, val_size, test_size: samples per split.

    The defaults put the "patch_net" model in the paper's regime with Adam (lr 3e-3,
    batch 64, 30 epochs): single models are ~100% right on multi-view test samples but
    only ~83-94% on single-view ones, where they miss the samples whose strong view they
    did not learn; an ensemble of five reaches ~95-97%. Two choices matter most:

    - single-view samples are rare (5%): every one in the training set pulls its model
      towards the view it missed, and with 10% most models learn both views of every class;
    - feature noise (0.3) outweighs the weak view (0.1), so a sample whose strong view a
      model missed goes to whichever class its noise features suggest.
    """

    num_classes: int = 10
    dim: int = 64
    num_patches: int = 16
    patches_per_feature: int = 2
    multi_view_fraction: float = 0.95
    view_weight: float = 1.0
    weak_view_weight: float = 0.1
    noise_features: int = 2
    noise_feature_weight: float = 0.3
    weight_jitter: float = 0.2
    noise_std: float = 1.0
    train_size: int = 5000
    val_size: int = 1000
    test_size: int = 5000

    def __post_init__(self):
        def check_int(name, minimum):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
                value < minimum
            ):
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        def check_float(name, low, high, *, high_open=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                low <= value < high if high_open else low <= value <= high
            ):
                bracket = ")" if high_open else "]"
                raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")

        check_int("num_classes", 2)
        check_int("dim", 1)
        check_int("num_patches", 1)
        check_int("patches_per_feature", 1)
        check_int("noise_features", 0)
        for name in ("train_size", "val_size", "test_size"):
            check_int(name, 1)
        check_float("multi_view_fraction", 0.0, 1.0)
        check_float("view_weight", 0.0, np.inf, high_open=True)
        check_float("weak_view_weight", 0.0, np.inf, high_open=True)
        check_float("noise_feature_weight", 0.0, np.inf, high_open=True)
        check_float("weight_jitter", 0.0, 1.0, high_open=True)
        check_float("noise_std", 0.0, np.inf, high_open=True)
        if self.dim < 2 * self.num_classes:
            raise ValueError(
                f"dim must be >= 2 * num_classes = {2 * self.num_classes} for the features to "
                f"be orthogonal, got dim={self.dim}"
            )
        if self.noise_features > 2 * (self.num_classes - 1):
            raise ValueError(
                f"noise_features must be <= {2 * (self.num_classes - 1)}, the number of other "
                f"classes' features, got {self.noise_features}"
            )
        needed = (2 + self.noise_features) * self.patches_per_feature
        if self.num_patches < needed:
            raise ValueError(
                f"num_patches={self.num_patches} is too small: two views and "
                f"{self.noise_features} noise features of {self.patches_per_feature} patches "
                f"each need {needed}"
            )
        if self.weak_view_weight >= self.view_weight:
            raise ValueError(
                f"weak_view_weight must be below view_weight={self.view_weight}, "
                f"got {self.weak_view_weight}"
            )

    @property
    def input_shape(self) -> tuple:
        return (self.num_patches, self.dim)


@dataclasses.dataclass(frozen=True, eq=False)
class MultiViewSplit:
    """One split: `x` float32 (n, P, d), `y` int32 (n,), `single_view` bool (n,), and
    `strong_view` int8 (n,): the view (0 or 1) shown at full weight by single-view samples,
    -1 for multi-view ones."""

    x: np.ndarray
    y: np.ndarray
    single_view: np.ndarray
    strong_view: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class MultiViewData:
    """Generated splits and the features behind them.

    `features` has shape (k, 2, d) (float64, as generated): features[c, l] is view l of
    class c.
    """

    config: MultiViewConfig
    features: np.ndarray
    train: MultiViewSplit
    val: MultiViewSplit
    test: MultiViewSplit

    def to_splits(self, name: str = "multiview") -> Splits:
        """The project's `Splits` (input_shape (P, d)); the view masks are dropped."""
        arrays = []
        for split in SPLITS:
            arrays += [getattr(self, split).x, getattr(self, split).y]
        return Splits(name, self.config.num_classes, self.config.input_shape, *arrays)


def make_features(num_classes: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """2k random orthonormal vectors of R^dim, shaped (k, 2, dim)."""
    # QR of a Gaussian matrix gives a uniformly random orthonormal frame.
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2 * num_classes)))
    return q.T.reshape(num_classes, 2, dim)


def _sample_split(config: MultiViewConfig, features: np.ndarray, n: int,
                  rng: np.random.Generator) -> MultiViewSplit:
    k, c_p, s = config.num_classes, config.patches_per_feature, config.noise_features
    y = rng.integers(0, k, size=n)
    single_view = rng.random(n) >= config.multi_view_fraction
    strong_view = np.where(single_view, rng.integers(0, 2, size=n), -1)

    x = rng.standard_normal((n, config.num_patches, config.dim)) * (
        config.noise_std / np.sqrt(config.dim)
    )
    # A random permutation of the patches per sample: the first c_p go to view 0, the next
    # c_p to view 1, then c_p to each noise feature; the rest stay pure noise.
    order = np.argsort(rng.random((n, config.num_patches)), axis=1)
    rows = np.arange(n)[:, None]

    def jittered(weight, shape):
        return weight * rng.uniform(1 - config.weight_jitter, 1 + config.weight_jitter, shape)

    for view in (0, 1):
        weak = single_view & (strong_view != view)
        weight = np.where(weak, config.weak_view_weight, config.view_weight)[:, None]
        z = jittered(weight, (n, c_p))
        patches = order[:, view * c_p:(view + 1) * c_p]
        x[rows, patches] += z[..., None] * features[y, view][:, None, :]

    if s:
        # s distinct features of other classes: random scores, own class's pushed last.
        flat = features.reshape(2 * k, config.dim)
        scores = rng.random((n, 2 * k))
        scores[rows, 2 * y[:, None] + np.arange(2)] = np.inf
        noise_ids = np.argsort(scores, axis=1)[:, :s]
        for j in range(s):
            z = jittered(config.noise_feature_weight, (n, c_p))
            patches = order[:, (2 + j) * c_p:(3 + j) * c_p]
            x[rows, patches] += z[..., None] * flat[noise_ids[:, j]][:, None, :]

    return MultiViewSplit(
        x=x.astype(np.float32), y=y.astype(np.int32), single_view=single_view,
        strong_view=strong_view.astype(np.int8),
    )


def make_multiview(config: Optional[MultiViewConfig] = None, seed: int = 0) -> MultiViewData:
    """Generates features and train / validation / test splits; the same seed, the same data.

    The features, the train + validation pool and the test set come from independent
    streams of one seed, so the test set does not change with `train_size` or `val_size`;
    with train_size + val_size fixed, changing `val_size` only moves the boundary inside the
    same pool (as `load_multiview`'s `val_fraction` does).
    """
    config = MultiViewConfig() if config is None else config
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    feature_seed, pool_seed, test_seed = np.random.SeedSequence(int(seed)).spawn(3)
    features = make_features(config.num_classes, config.dim, np.random.default_rng(feature_seed))
    pool = _sample_split(config, features, config.train_size + config.val_size,
                         np.random.default_rng(pool_seed))
    test = _sample_split(config, features, config.test_size, np.random.default_rng(test_seed))

    def part(split, index):
        return MultiViewSplit(*(getattr(split, f.name)[index]
                                for f in dataclasses.fields(MultiViewSplit)))

    return MultiViewData(
        config=config, features=features,
        train=part(pool, slice(0, config.train_size)),
        val=part(pool, slice(config.train_size, None)),
        test=test,
    )


def load_multiview(*, split_seed: int = 0, val_size: Optional[float] = None,
                   config: Optional[MultiViewConfig] = None) -> Splits:
    """A dataset loader: `make_multiview(config, seed=split_seed)` as `Splits`.

    The data is generated, so `split_seed` picks the features and samples as well as the
    split. `val_size`, when given (a fraction in (0, 1) or a number of samples), re-divides
    the train_size + val_size samples of the pool (None keeps the config's sizes).
    """
    config = MultiViewConfig() if config is None else config
    if val_size is not None:
        pool = config.train_size + config.val_size
        count = held_out_count(val_size, pool, "multiview")
        config = dataclasses.replace(config, train_size=pool - count, val_size=count)
    return make_multiview(config, seed=split_seed).to_splits()
