"""`keras:NAME`: the data sets of `keras.datasets`, read with Keras's own loaders.

Keras downloads each set once into its cache, `$KERAS_HOME/datasets` (default
`~/.keras/datasets`), and reads it from there afterwards, with no network. Offline, the
cache can be filled by hand (docs/data.md); for Fashion-MNIST, Debian's
`dataset-fashion-mnist` package is used as a local mirror: its four original files are
copied into Keras's cache the first time they are needed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from tfkd.data.arrays import splits_from_arrays
from tfkd.data.registry import DatasetError, Splits, register_source


@dataclasses.dataclass(frozen=True)
class KerasSet:
    """What tfkd needs to know about one `keras.datasets` module.

    Attributes:
      module: the module under keras.datasets.
      num_classes: its number of classes.
      files: what its `load_data` reads, relative to Keras's datasets cache; all present
        means no download is attempted.
      mirror: a local directory holding the same files (a distribution package), copied
        into the cache when the cache lacks them.
      offline: how to fill the cache without network, for the error message.
    """

    module: str
    num_classes: int
    files: tuple
    mirror: str = ""
    offline: str = ""


FASHION_MNIST_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
# Where Debian's dataset-fashion-mnist package installs the original IDX files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _download_elsewhere(module, cached):
    return (f"on a machine with internet run `python -c \"import keras; "
            f"keras.datasets.{module}.load_data()\"` and copy ~/.keras/datasets/{cached} "
            f"from there into {{cache}}")


KERAS_DATASETS = {
    "mnist": KerasSet("mnist", 10, ("mnist.npz",),
                      offline=_download_elsewhere("mnist", "mnist.npz")),
    "fashion_mnist": KerasSet(
        "fashion_mnist", 10, tuple(f"fashion-mnist/{f}" for f in FASHION_MNIST_FILES),
        mirror=DEBIAN_FASHION_MNIST,
        offline=("install Debian's copy with `apt-get install dataset-fashion-mnist` (tfkd then "
                 f"reads {DEBIAN_FASHION_MNIST}), or copy the four files into the cache: "
                 "`mkdir -p {cache}/fashion-mnist && cp "
                 f"{DEBIAN_FASHION_MNIST}/*-ubyte.gz {{cache}}/fashion-mnist/`")),
    # Keras extracts the CIFAR archives on every load; the archive is what it checks for.
    "cifar10": KerasSet("cifar10", 10, ("cifar-10-batches-py-target_archive",),
                        offline=_download_elsewhere("cifar10",
                                                    "cifar-10-batches-py-target_archive")),
    "cifar100": KerasSet("cifar100", 100, ("cifar-100-python-target_archive",),
                         offline=_download_elsewhere("cifar100",
                                                     "cifar-100-python-target_archive")),
}


def keras_cache_dir() -> str:
    """The directory `keras.utils.get_file` downloads data sets into (its cache_subdir
    "datasets"), resolved as get_file resolves it."""
    # NOTE: Keras fixes its home ($KERAS_HOME, else ~/.keras, else /tmp/.keras) when it is
    # imported and has no public accessor for it; get_file then falls back to /tmp/.keras
    # when that home is not writable. Mirror both, so the messages name the real place.
    from keras.src.backend import config

    home = os.path.expanduser(config.keras_home())
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(),
                            ".keras")
    return os.path.join(home, "datasets")


def _missing(spec, cache):
    return [f for f in spec.files if not os.path.exists(os.path.join(cache, f))]


def _mirrored(spec, missing):
    """True if the mirror has every file the cache lacks."""
    return bool(spec.mirror) and all(
        os.path.isfile(os.path.join(spec.mirror, os.path.basename(f))) for f in missing)


def is_available(name: str) -> bool:
    """True if `keras:name` loads without network (in Keras's cache or a local mirror)."""
    spec = KERAS_DATASETS[name]
    missing = _missing(spec, keras_cache_dir())
    return not missing or _mirrored(spec, missing)


def _fill_from_mirror(spec, cache, missing):
    """Copies the mirror's files into the cache; each appears whole or not at all."""
    for relative in missing:
        target = os.path.join(cache, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # NOTE: copy-then-rename, because two processes (pytest-xdist workers, parallel
        # runs) may fill the cache at once and get_file trusts any file it finds.
        handle, partial = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".partial")
        os.close(handle)
        try:
            shutil.copyfile(os.path.join(spec.mirror, os.path.basename(relative)), partial)
            os.chmod(partial, 0o644)  # mkstemp's 0600 would hide the cache from other users
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)


def check_keras_name(name: str) -> None:
    if name not in KERAS_DATASETS:
        raise DatasetError(f"keras.datasets has no {name!r} that tfkd loads; choose keras:NAME "
                           f"with NAME one of: {', '.join(sorted(KERAS_DATASETS))}")


@register_source(
    "keras", form="keras:NAME", check=check_keras_name,
    options=("image_size", "input_scaling"),
    usage=f"keras:NAME (NAME: {', '.join(sorted(KERAS_DATASETS))})")
def load_keras(name: str, *, split_seed: int = 0, val_size=None, data_dir=None,
               image_size=None, input_scaling=None) -> Splits:
    """`keras.datasets.NAME.load_data()` as `Splits`: validation carved from the training
    data (10% unless `val_size`), per-channel standardisation with its statistics, grey
    images given a channel axis ((28, 28) -> (28, 28, 1), as TFDS has them)."""
    import importlib

    del data_dir  # refused by the registry: Keras has no per-call cache directory
    spec = KERAS_DATASETS[name]
    cache = keras_cache_dir()
    missing = _missing(spec, cache)
    if missing and _mirrored(spec, missing):
        _fill_from_mirror(spec, cache, missing)
        missing = []
    module = importlib.import_module(f"keras.datasets.{spec.module}")
    try:
        (x_pool, y_pool), (x_test, y_test) = module.load_data()
    except Exception as e:  # noqa: BLE001 -- Keras raises bare Exception for a failed fetch
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if missing:
            raise DatasetError(
                f"Keras dataset {name!r} is not in Keras's cache {cache} (missing "
                f"{', '.join(missing)}) and could not be downloaded ({reason}); to get it "
                f"offline, {spec.offline.format(cache=cache)}") from None
        raise DatasetError(f"Keras dataset {name!r} could not be read from {cache} "
                           f"({type(e).__name__}: {reason}); delete its files there to "
                           f"download them again") from None
    return splits_from_arrays(f"keras:{name}", x_pool, y_pool, x_test, y_test,
                              split_seed=split_seed, val_size=val_size,
                              num_classes=spec.num_classes, image_size=image_size,
                              input_scaling=input_scaling)
