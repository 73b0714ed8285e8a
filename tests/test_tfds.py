"""The TFDS loader, through the real code path, on tfds.testing.mock_data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorflow as tf

from tfkd.data import DatasetError, load_dataset, make_tf_dataset
from tfkd.data import tfds_loader
from tfkd.data.pipeline import CROP_PADDING, _Views, crop_flip

N = 60  # mock examples per split
EXPECTED = {  # input shape, classes
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "svhn_cropped": ((32, 32, 3), 10),
}


def mock_load(name, num_examples=N, **kwargs):
    with tfds.testing.mock_data(num_examples=num_examples):
        return load_dataset(name, **kwargs)


def test_every_known_dataset_is_tested():
    assert set(EXPECTED) == set(tfds_loader.KNOWN_TFDS_DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_splits_and_standardisation(name):
    splits = mock_load(name)
    shape, classes = EXPECTED[name]
    assert splits.input_shape == shape and splits.num_classes == classes
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (54, 6, N)
    for split in ("train", "val", "test"):
        x, y = getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")
        assert x.dtype == np.float32 and x.shape[1:] == shape
        assert y.dtype == np.int32 and 0 <= y.min() and y.max() < classes
    # Per channel, from the train part only.
    axes = (0, 1, 2)
    np.testing.assert_allclose(splits.x_train.mean(axis=axes), 0.0, atol=1e-4)
    np.testing.assert_allclose(splits.x_train.std(axis=axes), 1.0, atol=1e-3)
    assert np.abs(splits.x_val.mean(axis=axes)).max() > 1e-4


def test_validation_is_carved_from_train_by_seed():
    splits = mock_load("cifar10", val_size=10)
    assert (len(splits.x_train), len(splits.x_val)) == (N - 10, 10)
    # Train and validation partition the training split, each raw image used once. The
    # standardisation is affine per channel; recover it from the test split and undo it.
    raw = _raw("cifar10", "train")
    raw_test = _raw("cifar10", "test")
    pooled = np.concatenate([splits.x_train, splits.x_val])
    restored = np.empty(pooled.shape)
    for c in range(3):
        slope, offset = np.polyfit(splits.x_test[..., c].ravel(), raw_test[..., c].ravel(), 1)
        restored[..., c] = slope * pooled[..., c] + offset
    np.testing.assert_allclose(restored, np.rint(restored), atol=1e-2)
    assert _sorted_rows(np.rint(restored)) == _sorted_rows(raw)
    again = mock_load("cifar10", val_size=10)
    np.testing.assert_array_equal(again.x_val, splits.x_val)
    other = mock_load("cifar10", val_size=10, split_seed=1)
    assert _sorted_rows(other.x_val) != _sorted_rows(splits.x_val)
    assert len(mock_load("cifar10", val_size=0.25).x_val) == 15


def _raw(name, split):
    with tfds.testing.mock_data(num_examples=N):
        dataset = tfds.load(name, split=split, as_supervised=True)
        return np.stack([x for x, _ in tfds.as_numpy(dataset)]).astype(np.float64)


def _sorted_rows(x):
    return sorted(tuple(row) for row in np.asarray(x).reshape(len(x), -1).round(3).tolist())


def test_bad_val_size_names_the_value():
    with pytest.raises(DatasetError, match="val_size=60"):
        mock_load("cifar10", val_size=60)
    with pytest.raises(DatasetError, match="2.5"):
        mock_load("cifar10", val_size=2.5)


def test_image_size_resizes():
    splits = mock_load("mnist", image_size=16)
    assert splits.input_shape == (16, 16, 1) and splits.x_test.shape[1:] == (16, 16, 1)


def test_unknown_and_non_image_datasets_are_refused():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar1000'"):
        load_dataset("cifar1000")
    with pytest.raises(DatasetError, match="imdb_reviews.*Image -> ClassLabel"):
        load_dataset("imdb_reviews")
    with pytest.raises(DatasetError, match="image_size applies to .*TFDS names, not to 'digits'"):
        load_dataset("digits", image_size=16)


def test_the_tfds_scheme_is_the_plain_name():
    plain = mock_load("mnist", val_size=10)
    scheme = mock_load("tfds:mnist", val_size=10)
    assert scheme.sizes == plain.sizes == {"train": N - 10, "val": 10, "test": N}
    np.testing.assert_array_equal(scheme.x_val, plain.x_val)


def test_download_and_prepare_starts_in_this_environment(tmp_path, monkeypatch):
    """docs/data.md's preparation path (download_and_prepare, as `tfds build` runs it) gets
    as far as asking for the files: it failed before that, with ModuleNotFoundError for
    importlib_resources, until setup.py listed it. The download itself needs the network
    and is not tested here."""
    class ReachedDownload(Exception):
        pass

    def record(self, url_or_urls, *args, **kwargs):
        raise ReachedDownload(url_or_urls)

    monkeypatch.setattr(tfds.download.DownloadManager, "download", record)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", record)
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    with pytest.raises(ReachedDownload) as reached:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
    assert "train-images-idx3-ubyte.gz" in str(reached.value)


def test_manual_dir_files_are_found_by_name_and_checked(tmp_path):
    """docs/data.md's offline path: files downloaded elsewhere, put in a manual_dir, are
    used instead of the network, and must be the originals (checksums are verified, which
    is why Debian's recompressed Fashion-MNIST is refused). Placeholder files stand in for
    the real ones, which this machine cannot download."""
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (manual / name).write_bytes(b"placeholder")
    builder = tfds.builder("mnist", data_dir=str(tmp_path / "data"))
    # NOTE: TFDS 4.9.10 exports no public name for this error.
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    with pytest.raises(NonMatchingChecksumError) as error:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert f"downloaded to {manual}" in str(error.value)


def test_offline_message_says_where_and_how(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "tfds build cifar10" in message
    assert "tfds.builder('cifar10', data_dir='DIR').download_and_prepare()" in message
    assert "ConnectionError" in message and "--data_dir" in message


@pytest.mark.parametrize("held", [True, False])
def test_offline_tfds_name_points_to_the_keras_copy_this_machine_has(tmp_path, monkeypatch,
                                                                    held):
    """--dataset=fashion_mnist (TFDS) right after installing Debian's copy: the message
    names keras:fashion_mnist, which reads that copy, instead of another machine."""
    from tfkd.data import keras_source

    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    monkeypatch.setattr(keras_source, "is_available", lambda name: held)
    with pytest.raises(DatasetError) as error:
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert ("--dataset=keras:fashion_mnist" in message) == held
    assert ("On a machine with internet" in message) == (not held)


def test_an_offline_machine_is_told_at_once_not_after_the_retries(tmp_path, monkeypatch):
    """TFDS retries a download ten times with back-off (220 s here offline); a download
    host without an address ends the load before TFDS starts. With a proxy set, TFDS
    is left to try."""
    import socket

    started = []

    def download(self, *args, **kwargs):
        started.append(self.name)
        raise ConnectionError("retries exhausted")

    def no_address(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download)
    monkeypatch.setattr(socket, "getaddrinfo", no_address)
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                     "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert started == []
    assert "www.cs.toronto.edu" in str(error.value) and "offline" in str(error.value)
    assert "--data_dir" in str(error.value)

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    with pytest.raises(DatasetError, match="retries exhausted"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert started == ["cifar10"]


# --- augmentation ---------------------------------------------------------------------------


def _epochs(dataset, n=2):
    return [np.concatenate([x for x, _ in dataset.as_numpy_iterator()]) for _ in range(n)]


def _is_crop_flip_of(augmented, image):
    h, w, _ = image.shape
    p = CROP_PADDING
    padded = np.pad(image, [(p, p), (p, p), (0, 0)])
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            window = padded[dy:dy + h, dx:dx + w]
            if np.array_equal(augmented, window) or np.array_equal(augmented, window[:, ::-1]):
                return True
    return False


def test_crop_flip_only_on_training_batches():
    splits = mock_load("cifar10", num_examples=40)
    x, y = splits.x_train[:32], splits.y_train[:32]
    train = make_tf_dataset(x, y, batch_size=8, seed=3, augment="crop_flip")
    first, second = _epochs(train)
    assert first.shape == x.shape
    assert not np.array_equal(first, x)  # augmented
    assert not np.array_equal(first, second)  # fresh draws each epoch
    assert all(_is_crop_flip_of(a, image) for a, image in zip(first, x))
    # Seeded: the same seed gives the same augmented epochs.
    np.testing.assert_array_equal(
        _epochs(make_tf_dataset(x, y, batch_size=8, seed=3, augment="crop_flip"), 1)[0], first)
    # Validation / test batches: no augmentation, identical every time.
    val = make_tf_dataset(splits.x_val, splits.y_val, batch_size=8)
    a, b = _epochs(val)
    np.testing.assert_array_equal(a, splits.x_val)
    np.testing.assert_array_equal(b, splits.x_val)


def test_crop_flip_draws_every_window_and_flip_uniformly():
    p = CROP_PADDING
    image = np.random.default_rng(0).normal(size=(6, 5, 2)).astype(np.float32)
    padded = np.pad(image, [(p, p), (p, p), (0, 0)])
    # Each of the (2p + 1)^2 windows, flipped or not, from the middle of its draw interval.
    grid = [(dy, dx, flip) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
            for flip in (0, 1)]
    draws = np.array([[(dy + 0.5) / (2 * p + 1), (dx + 0.5) / (2 * p + 1), 0.25 + 0.5 * (1 - f)]
                      for dy, dx, f in grid], np.float32)
    views = crop_flip(tf.constant(np.stack([image] * len(grid))), tf.constant(draws)).numpy()
    for (dy, dx, flip), view in zip(grid, views):
        window = padded[dy:dy + 6, dx:dx + 5]
        np.testing.assert_array_equal(view, window[:, ::-1] if flip else window)
    # The drawn numbers: uniform, so each offset has chance 1 / (2p + 1), a flip 1/2.
    x = np.zeros((1, 6, 5, 2), np.float32)
    u = _Views(x, tf.constant(x), "crop_flip", seed=0).table(key=0, size=90_000).numpy()
    offsets = np.minimum((u[:, :2] * (2 * p + 1)).astype(int), 2 * p)
    for column in offsets.T:
        np.testing.assert_allclose(np.bincount(column, minlength=2 * p + 1) / len(u),
                                   1 / (2 * p + 1), atol=0.005)
    assert abs((u[:, 2] < 0.5).mean() - 0.5) < 0.01


def test_augment_refuses_cached_teacher_logits_and_non_images():
    x = np.zeros((4, 8, 8, 1), np.float32)
    y = np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="online teachers"):
        make_tf_dataset(x, y, batch_size=2, augment="crop_flip",
                        teacher_logits=np.zeros((4, 10), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 40\)"):
        make_tf_dataset(np.zeros((4, 40), np.float32), y, batch_size=2, augment="crop_flip")
    with pytest.raises(ValueError, match="unknown augment 'mixup'"):
        make_tf_dataset(x, y, batch_size=2, augment="mixup")


def test_jitter_augmentation_is_seeded_in_range_and_photometric_only():
    splits = mock_load("cifar10", num_examples=40)
    x, y = splits.x_train[:16], splits.y_train[:16]
    first, second = _epochs(make_tf_dataset(x, y, batch_size=8, seed=1, augment="jitter"))
    assert first.shape == x.shape and not np.array_equal(first, x)
    assert not np.array_equal(first, second)
    assert first.min() >= x.min() - 1e-5 and first.max() <= x.max() + 1e-5
    again = _epochs(make_tf_dataset(x, y, batch_size=8, seed=1, augment="jitter"), 1)[0]
    np.testing.assert_array_equal(again, first)
    # Grey-scale images get brightness and contrast only.
    digits = mock_load("mnist", num_examples=24)
    gx = digits.x_train[:8]
    out = _epochs(make_tf_dataset(gx, digits.y_train[:8], batch_size=8, seed=0,
                                  augment="jitter"), 1)[0]
    assert out.shape == gx.shape


def test_loading_mutes_tfds_and_leaves_the_absl_loggers_level_as_it_was(monkeypatch):
    import logging as std_logging

    from absl import logging

    absl_logger = logging.get_absl_logger()
    during = []
    load = tfds_loader._load_tfds
    monkeypatch.setattr(tfds_loader, "_load_tfds", lambda *a, **k: (
        during.append(absl_logger.getEffectiveLevel()), load(*a, **k))[1])
    # NOTSET (no verbosity set: records reach the root logger's level) stays NOTSET.
    for level in (std_logging.NOTSET, std_logging.INFO):
        monkeypatch.setattr(absl_logger, "level", level)
        mock_load("mnist", num_examples=8)
        assert absl_logger.level == level
    assert min(during) >= std_logging.WARNING
