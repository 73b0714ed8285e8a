"""TensorFlow Datasets image-classification sets as `Splits`.

Any TFDS dataset whose supervised pair is (Image, ClassLabel) loads by name, plain or as
"tfds:NAME" (the plain form is the registry's fallback for names no other source takes):

    load_dataset("cifar10", data_dir="~/tensorflow_datasets", val_size=5000)

The training split is divided, with a seeded permutation, into train and validation; the
dataset's test split is kept whole for the final report. Images are decoded once, in a
parallel tf.data map, and passed to `tfkd.data.arrays.splits_from_arrays` (scaled to
[0, 1] and standardised per channel with the *train* part's statistics); the result is held
in memory (CIFAR-10: 45,000 x 32 x 32 x 3 float32 = 553 MB), which is where the pipeline
caches it. docs/data.md says how to prepare the data offline.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from tfkd.data.arrays import splits_from_arrays
from tfkd.data.registry import DatasetError, Splits, register_source

# Tested under tfds.testing.mock_data; every other image-classification set works the same.
KNOWN_TFDS_DATASETS = ("cifar10", "cifar100", "fashion_mnist", "mnist", "svhn_cropped")
# Datasets whose float32 copy would not fit comfortably in memory are refused up front.
MAX_IN_MEMORY_BYTES = 8 * 2**30
_READ_BATCH = 1024


def _tfds():
    # Deferred: importing tensorflow_datasets costs seconds the embedded datasets never need.
    import tensorflow_datasets as tfds

    return tfds


def is_tfds_name(name: str) -> bool:
    """True if TFDS has a dataset builder called `name` (no data is read)."""
    tfds = _tfds()
    try:
        tfds.builder_cls(name.split(":")[0])
    except (tfds.core.registered.DatasetNotFoundError, ValueError):
        return False
    return True


def check_tfds_name(name: str) -> None:
    """DatasetError unless TFDS has a builder called `name` (no data is read)."""
    if not is_tfds_name(name):
        raise DatasetError(f"TensorFlow Datasets has no dataset {name!r}; image-classification "
                           f"sets include {', '.join(KNOWN_TFDS_DATASETS)}")


def default_data_dir(data_dir: Optional[str]) -> str:
    """Where TFDS looks for prepared data: `data_dir`, else $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    if data_dir:
        return data_dir
    import os

    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def _supervised_features(builder):
    """(image feature, number of classes) of an image-classification builder, else DatasetError."""
    tfds = _tfds()
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise DatasetError(
            f"TFDS dataset {builder.name!r} has no (image, label) supervised pair "
            f"(supervised_keys={keys!r}); tfkd loads image-classification sets such as "
            f"{', '.join(KNOWN_TFDS_DATASETS)}")
    image, label = info.features[keys[0]], info.features[keys[1]]
    if not isinstance(image, tfds.features.Image) or not isinstance(label,
                                                                    tfds.features.ClassLabel):
        raise DatasetError(
            f"TFDS dataset {builder.name!r} maps {keys[0]!r} -> {keys[1]!r} "
            f"({type(image).__name__} -> {type(label).__name__}); tfkd needs Image -> ClassLabel")
    return image, label.num_classes


def _offline(builder):
    """Why the download would fail at once, or None: none of the dataset's download hosts
    has an address, the state of a machine without network.

    NOTE: TFDS retries a failed download ten times with exponential back-off, which took
    220 s offline before its error; a name lookup takes milliseconds. Behind a proxy the
    lookup is the proxy's business, so it is not tried there; nor under
    `tfds.testing.mock_data`, whose download_and_prepare needs no network.
    """
    import os
    import socket
    import urllib.parse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                       "http_proxy", "ALL_PROXY", "all_proxy")):
        return None
    if "mock" in getattr(type(builder).download_and_prepare, "__qualname__", ""):
        return None
    try:
        hosts = sorted({urllib.parse.urlparse(url).hostname for url in builder.url_infos or ()}
                       - {None})
    except Exception:  # noqa: BLE001 -- no recorded URLs: let TFDS try
        return None
    for host in hosts:
        try:
            socket.getaddrinfo(host, 443)
            return None
        except (socket.gaierror, UnicodeError):
            continue
    return (f"no address for its download host{'s' if len(hosts) > 1 else ''} "
            f"{', '.join(hosts)}: this machine looks offline" if hosts else None)


def _keras_copy(name):
    """"keras:NAME" when the keras: source holds TFDS's `name` on this machine, else None."""
    from tfkd.data import keras_source

    if name in keras_source.KERAS_DATASETS and keras_source.is_available(name):
        return f"keras:{name}"
    return None


def _prepare(builder, name, data_dir):
    """Downloads and prepares the data when it is not there yet; one clear error if that fails."""
    if builder.is_prepared():
        return
    try:
        offline = _offline(builder)
        if offline:
            raise ConnectionError(offline)
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 -- network, permissions, missing extras: all one story
        where = default_data_dir(data_dir)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        local = _keras_copy(name)
        if local:
            raise DatasetError(
                f"TFDS dataset {name!r} is not prepared in {where} and could not be "
                f"downloaded ({type(e).__name__}: {reason}); this machine has the same data "
                f"for --dataset={local} (keras.datasets, read offline): pass that") from None
        raise DatasetError(
            f"TFDS dataset {name!r} is not prepared in {where} and could not be downloaded "
            f"({type(e).__name__}: {reason}). On a machine with internet run `python -c "
            f"\"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='DIR')"
            f".download_and_prepare()\"` (or `tfds build {name} --data_dir=DIR`, which also "
            f"needs apache-beam), copy DIR here and pass --data_dir=DIR (or set "
            f"TFDS_DATA_DIR); docs/data.md has the details") from None


def _read_split(builder, split, image_size):
    """All (uint8 or resized float32 images, int32 labels) of `split` as NumPy arrays."""
    import tensorflow as tf

    def convert(image, label):
        if image_size:
            image = tf.image.resize(image, (image_size, image_size))
        return image, tf.cast(label, tf.int32)

    dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(_READ_BATCH).prefetch(tf.data.AUTOTUNE)
    images, labels = [], []
    for x, y in dataset.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not images:
        raise DatasetError(f"TFDS split {builder.name}/{split} is empty")
    return np.concatenate(images), np.concatenate(labels)


@register_source(
    "tfds", form="TFDS names", check=check_tfds_name, options=("data_dir", "image_size", "input_scaling"),
    examples=KNOWN_TFDS_DATASETS, fallback=True,
    usage=f"a TensorFlow Datasets image-classification set ({', '.join(KNOWN_TFDS_DATASETS)}, "
          "...; also as tfds:NAME)")
def _load_source(name, *, split_seed, val_size, data_dir, image_size, input_scaling=None):
    return load_tfds(name, split_seed=split_seed, val_size=val_size, data_dir=data_dir,
                     image_size=image_size, input_scaling=input_scaling)


def load_tfds(name: str, *, split_seed: int = 0, val_size: Optional[float] = None,
              data_dir: Optional[str] = None, image_size: Optional[int] = None,
              input_scaling: Optional[str] = None) -> Splits:
    """Loads TFDS image-classification set `name` as train / validation / test `Splits`.

    Args:
      name: a TFDS builder name, optionally with config and version ("cifar10",
        "cifar100", "svhn_cropped", "mnist", ...).
      split_seed: seeds the stratified draw that carves validation out of the training split.
      val_size: a fraction in (0, 1) of the training split, or a number of examples
        (5000 gives CIFAR's 45,000 / 5,000); None: 10%.
      data_dir: where TFDS keeps prepared data (default: $TFDS_DATA_DIR or
        ~/tensorflow_datasets). Missing data is downloaded when the network allows,
        otherwise a DatasetError says how to prepare it offline.
      image_size: resize images to image_size x image_size (needed by sets whose images
        vary in size); None keeps the native size.
      input_scaling: a key of `tfkd.data.arrays.INPUT_SCALINGS`; None standardises.

    TFDS's own INFO lines are muted while loading: they share absl's logger with tfkd's
    progress lines.
    """
    import logging as std_logging

    from absl import logging

    # The absl logger's own level, restored as it was: NOTSET (nobody set a verbosity)
    # must stay NOTSET, so that its records still reach whatever level the root logger has.
    absl_logger = logging.get_absl_logger()
    level = absl_logger.level
    absl_logger.setLevel(max(absl_logger.getEffectiveLevel(), std_logging.WARNING))
    try:
        return _load_tfds(name, split_seed=split_seed, val_size=val_size, data_dir=data_dir,
                          image_size=image_size, input_scaling=input_scaling)
    finally:
        absl_logger.setLevel(level)


def _load_tfds(name, *, split_seed, val_size, data_dir, image_size,
               input_scaling=None) -> Splits:
    """`load_tfds` without the logging guard."""
    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
        raise DatasetError(f"unknown TFDS dataset {name!r} ({str(e).splitlines()[0]})") from None
    image_feature, num_classes = _supervised_features(builder)
    shape = tuple(image_feature.shape)
    if image_size is None and any(d is None for d in shape[:2]):
        raise DatasetError(f"TFDS dataset {name!r} has images of varying size {shape}; "
                           "pass --image_size=N to resize them to N x N")
    input_shape = (image_size, image_size, shape[2]) if image_size else shape
    _prepare(builder, name, data_dir)

    # NOTE: info.splits is empty under tfds.testing.mock_data, so the split names fall back
    # to the usual ones instead of being read only from it.
    split_names = set(builder.info.splits.keys()) or {"train", "test"}
    if "train" not in split_names or "test" not in split_names:
        raise DatasetError(f"TFDS dataset {name!r} has splits {sorted(split_names)}; tfkd needs "
                           "'train' (carved into train and validation) and 'test'")
    known = builder.info.splits["train"].num_examples if builder.info.splits else None
    if known and known * math.prod(input_shape) * 4 > MAX_IN_MEMORY_BYTES:
        raise DatasetError(
            f"TFDS dataset {name!r} needs {known * math.prod(input_shape) * 4 / 2**30:.0f} GiB "
            "as float32 in memory; tfkd holds datasets in memory (try --image_size to shrink it)")

    x_pool, y_pool = _read_split(builder, "train", image_size)
    x_test, y_test = _read_split(builder, "test", image_size)
    # NOTE: resized images arrive as float32 in [0, 255]: scaled like the uint8 ones.
    return splits_from_arrays(name, x_pool, y_pool, x_test, y_test, split_seed=split_seed,
                              val_size=val_size, num_classes=int(num_classes),
                              scale=1 / 255.0, input_scaling=input_scaling)
