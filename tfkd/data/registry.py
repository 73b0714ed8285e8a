"""The `Splits` container and the one registry that maps a dataset name to its loader.

Two kinds of entry, both chosen by key as in torchdistill's dataset registry:

- named datasets (`register_dataset("digits")`): the whole name is the key;
- sources (`register_source("keras", ...)`): the part before the first ":" is the key and
  the rest is the source's argument ("keras:fashion_mnist", "npz:/data/set.npz"). One
  source may be the fallback for every other name (TFDS: "cifar10").

Loaders register themselves when `tfkd.data` imports their modules; this module imports
none of them, so that they can all import it. The accepted forms in every error message
are read from these tables, never from a second list.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import numpy as np

SPLIT_NAMES = ("train", "val", "test")
# The loading options a source may take besides the split settings.
OPTIONS = ("data_dir", "image_size", "input_scaling")
# Seeds the stratified subsets that --train_size, --smoke and --analysis_examples take. A
# constant, not a setting: the subset then follows from the recorded settings alone.
SUBSET_SEED = 0


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
        for split in SPLIT_NAMES:
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

    def sample(self, split: str, count: int):
        """(x, y) of `split`, or `count` of its examples stratified by class when `count` is
        smaller (see `tfkd.data.arrays.stratified_subset`). The draw depends only on the
        labels and `count` (seed SUBSET_SEED), so every model of a workdir, and every run
        with the same settings, sees the same examples."""
        from tfkd.data.arrays import stratified_subset

        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        if count >= len(y):
            return x, y
        index = stratified_subset(y, count, SUBSET_SEED)
        return x[index], y[index]

    def subset(self, **counts) -> "Splits":
        """These splits with each split named in `counts` (train=, val=, test=) cut to a
        stratified sample of that many examples (`sample`)."""
        arrays = {}
        for split, count in counts.items():
            arrays[f"x_{split}"], arrays[f"y_{split}"] = self.sample(split, count)
        return dataclasses.replace(self, **arrays)

    @property
    def sizes(self) -> dict:
        """Examples per split: {"train": n, "val": n, "test": n}."""
        return {split: len(getattr(self, f"y_{split}")) for split in SPLIT_NAMES}


class DatasetError(ValueError):
    """A dataset that cannot be loaded as asked (unknown name, missing data, bad split size)."""


# A named loader takes keyword arguments `split_seed: int` and `val_size: float | None` (a
# fraction in (0, 1), a number of examples >= 1, or None for the dataset's own default)
# and returns a `Splits`.
Loader = Callable[..., Splits]

DATASETS: dict[str, Loader] = {}


@dataclasses.dataclass(frozen=True)
class Source:
    """A family of names served by one loader.

    Attributes:
      form: how the names look, for messages ("keras:NAME").
      usage: `form` with what NAME or PATH may be, for the list of accepted names.
      load: `load(argument, *, split_seed, val_size, data_dir, image_size) -> Splits`.
      check: `check(argument)` raises DatasetError for an argument the source refuses,
        quickly and without reading any data.
      options: the members of OPTIONS that the source uses; others are refused.
      examples: names known to work, listed by `dataset_names`.
    """

    form: str
    usage: str
    load: Callable[..., Splits]
    check: Callable[[str], None]
    options: tuple = ()
    examples: tuple = ()


SOURCES: dict[str, Source] = {}
# The scheme whose source takes every name that is neither registered nor scheme-qualified.
_fallback: list = []


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader to `DATASETS` under `name`."""

    def decorator(loader: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = loader
        return loader

    return decorator


def register_source(scheme: str, *, form: str, usage: str, check: Callable[[str], None],
                    options: tuple = (), examples: tuple = (), fallback: bool = False):
    """Decorator adding a source under `scheme`: names "SCHEME:ARGUMENT" go to it.

    With `fallback=True` it also receives, whole, every name that no other entry takes.
    """
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown source options {sorted(unknown)}; choose from {OPTIONS}")

    def decorator(load):
        if scheme in SOURCES:
            raise ValueError(f"source {scheme!r} is already registered")
        if fallback and _fallback:
            raise ValueError(f"source {_fallback[0]!r} is already the fallback")
        SOURCES[scheme] = Source(form, usage, load, check, tuple(options), tuple(examples))
        if fallback:
            _fallback.append(scheme)
        return load

    return decorator


def accepted_forms() -> list:
    """Every accepted name or form, for messages: named datasets, then the sources."""
    schemes = [s for s in SOURCES if s not in _fallback] + list(_fallback)
    return sorted(DATASETS) + [SOURCES[s].usage for s in schemes]


def dataset_names() -> list:
    """The registered names, then the fallback source's examples (TFDS sets tested with tfkd).

    Kept for callers that list plain names; `accepted_forms` lists the schemes too.
    """
    examples = list(SOURCES[_fallback[0]].examples) if _fallback else []
    return sorted(DATASETS) + examples


def display_name(name: str) -> str:
    """`name` for titles and captions: a source whose argument is a path (its form ends in
    PATH: folder:, npz:) shows the path's last part, not the whole, often absolute, path."""
    scheme, colon, argument = str(name).partition(":")
    source = SOURCES.get(scheme) if colon else None
    if source is not None and source.form.endswith("PATH"):
        return f"{scheme}:{os.path.basename(os.path.normpath(argument)) or argument}"
    return str(name)


def _unknown(name) -> DatasetError:
    forms = accepted_forms()
    listed = ", ".join(forms[:-1]) + (", or " if len(forms) > 1 else "") + forms[-1]
    return DatasetError(f"unknown dataset {name!r}; choose one of: {listed}")


def _resolve(name):
    """(source or None for a named dataset, the source's argument); DatasetError if unknown."""
    if not isinstance(name, str) or not name.strip():
        raise _unknown(name)
    if name in DATASETS:
        return None, name
    scheme, colon, argument = name.partition(":")
    if colon and scheme in SOURCES:
        source = SOURCES[scheme]
        if not argument:
            raise DatasetError(f"dataset {name!r} has nothing after {scheme + ':'!r}; "
                               f"expected {source.usage}")
        source.check(argument)
        return source, argument
    if not _fallback:
        raise _unknown(name)
    source = SOURCES[_fallback[0]]
    try:
        source.check(name)
    except DatasetError:
        # The fallback refusing a name means no source takes it: list them all.
        raise _unknown(name) from None
    return source, name


def check_dataset_name(name: str, *, data_dir: Optional[str] = None,
                       image_size: Optional[int] = None,
                       input_scaling: Optional[str] = None) -> None:
    """Raises DatasetError (one line, listing the accepted forms) unless some source takes
    `name` with these options. Reads no data: for settings to call before anything is
    trained."""
    source, _ = _resolve(name)
    _check_options(name, source, data_dir, image_size,
                   None if input_scaling == "auto" else input_scaling)


VAL_SIZE_ACCEPTED = "a fraction in (0, 1) or a whole number of examples >= 1"


def val_size_problem(val_size) -> Optional[str]:
    """None if `val_size` is a valid validation size, else what would be accepted. The one
    copy of the rule: `load_dataset` and the settings schema both ask it."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float, np.integer,
                                                               np.floating)):
        return f"a number: {VAL_SIZE_ACCEPTED}"
    if 0.0 < val_size < 1.0 or (1 <= val_size < 2**53 and float(val_size).is_integer()):
        return None
    return VAL_SIZE_ACCEPTED


def check_val_size(val_size) -> None:
    if val_size is not None and val_size_problem(val_size):
        raise DatasetError(f"val_size must be {val_size_problem(val_size)}, got {val_size!r}")


def _check_options(name, source, data_dir, image_size, input_scaling=None):
    given = [option for option, value in zip(OPTIONS, (data_dir, image_size, input_scaling))
             if value]
    taken = source.options if source else ()
    refused = [option for option in given if option not in taken]
    if not refused:
        return
    takers = [s.form for s in SOURCES.values() if set(refused) <= set(s.options)]
    verb = "applies" if len(refused) == 1 else "apply"
    where = (", ".join(takers[:-1]) + " and " if len(takers) > 1 else "") + (
        takers[-1] if takers else "no source")
    raise DatasetError(f"{' and '.join(refused)} {verb} to {where}, not to {name!r}")


def load_dataset(
    name: str, *, split_seed: int = 0, val_size: Optional[float] = None,
    data_dir: Optional[str] = None, image_size: Optional[int] = None,
    input_scaling: Optional[str] = None,
) -> Splits:
    """Loads dataset `name` with train / validation / test splits.

    Args:
      name: a named dataset ("digits", "mnist1d", "multiview"), a source-qualified name
        ("keras:fashion_mnist", "folder:PATH", "npz:PATH", "tfds:NAME"), or the name of a
        TensorFlow Datasets image-classification set ("cifar10", "svhn_cropped", ...).
        `accepted_forms()` lists them; docs/data.md describes each.
      split_seed: seeds the validation (and, where the source has none, test) split. It is
        deliberately separate from any model seed, so that every ensemble member, teacher
        and student of one experiment sees the same examples.
      val_size: how much of the data available for training is held out for validation:
        a fraction in (0, 1) or a number of examples. None keeps the dataset's default
        (digits: 0.25 of the 80% left after the test split, i.e. 20% of all; mnist1d: 500
        of 4,000; every other source: 10% of its training data).
      data_dir: where TFDS keeps prepared data (TFDS names only).
      image_size: resize images to image_size x image_size (TFDS, keras:, folder:, npz:).
      input_scaling: how images are prepared (TFDS, keras:, folder:, npz:): a key of
        `tfkd.data.arrays.INPUT_SCALINGS` other than "auto"; None: the source's own.
    """
    check_val_size(val_size)
    source, argument = _resolve(name)
    input_scaling = None if input_scaling == "auto" else input_scaling
    _check_options(name, source, data_dir, image_size, input_scaling)
    if source is None:
        return DATASETS[name](split_seed=split_seed, val_size=val_size)
    extra = {"input_scaling": input_scaling} if input_scaling else {}
    return source.load(argument, split_seed=split_seed, val_size=val_size,
                       data_dir=data_dir, image_size=image_size, **extra)
