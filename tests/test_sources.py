"""The data sources behind load_dataset: the registry, keras: (on real Fashion-MNIST when
Debian's dataset-fashion-mnist is installed), folder: and npz: (on generated files)."""

import gzip
import os

import numpy as np
import pytest

from tfkd.data import (SOURCES, DatasetError, accepted_forms, check_dataset_name, load_dataset,
                       register_source, registry)
from tfkd.data import keras_source

# .ci/run sets it, so that CI fails instead of skipping when the real data is missing.
REQUIRE_REAL_DATA = os.environ.get("TFKD_REQUIRE_REAL_DATA") == "1"


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


# --- the registry -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "mnist1d", "multiview", "keras:fashion_mnist",
                                  "keras:cifar100", "cifar10", "tfds:mnist", "cifar10:3.0.2"])
def test_check_dataset_name_accepts(name):
    check_dataset_name(name)


@pytest.mark.parametrize("name, named", [
    ("foo", "unknown dataset 'foo'; choose one of: digits, mnist1d, multiview, keras:NAME"),
    ("kears:mnist", "unknown dataset 'kears:mnist'"),
    ("", "unknown dataset ''"),
    ("keras:svhn", "no 'svhn'.*NAME one of: cifar10, cifar100, fashion_mnist, mnist"),
    ("keras:", "nothing after 'keras:'"),
    ("folder:/no/such/dir", "folder:/no/such/dir does not exist"),
    ("npz:/no/such.npz", "npz:/no/such.npz does not exist.*x_train, y_train, x_test, y_test"),
    ("tfds:cifar1000", "no dataset 'cifar1000'"),
])
def test_check_dataset_name_refuses_in_one_line(name, named):
    with pytest.raises(DatasetError, match=named) as error:
        check_dataset_name(name)
    _one_line(error)


def test_unknown_name_lists_every_registered_form():
    with pytest.raises(DatasetError) as error:
        check_dataset_name("foo")
    message = _one_line(error)
    for form in accepted_forms():
        assert form in message
    for form in ("keras:NAME", "folder:PATH", "npz:PATH", "TensorFlow Datasets"):
        assert form in message


def test_a_registered_source_is_selected_by_scheme_and_listed():
    calls = []

    def check(argument):
        if argument == "bad":
            raise DatasetError("toy: bad argument")

    @register_source("toy", form="toy:N", usage="toy:N (a test source)", check=check)
    def load_toy(argument, **kwargs):
        calls.append((argument, kwargs))
        return "splits"

    try:
        assert load_dataset("toy:3", split_seed=2) == "splits"
        assert calls == [("3", dict(split_seed=2, val_size=None, data_dir=None,
                                    image_size=None))]
        with pytest.raises(DatasetError, match="toy: bad argument"):
            check_dataset_name("toy:bad")
        with pytest.raises(DatasetError, match=r"toy:N \(a test source\)"):
            check_dataset_name("nope")
        with pytest.raises(DatasetError, match="image_size applies to .*not to 'toy:3'"):
            load_dataset("toy:3", image_size=8)
        with pytest.raises(ValueError, match="already registered"):
            register_source("toy", form="", usage="", check=check)(load_toy)
    finally:
        del SOURCES["toy"]
    assert "toy:N (a test source)" not in accepted_forms()


def test_check_dataset_name_reads_no_data(monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("check_dataset_name loaded data")

    monkeypatch.setattr(keras_source, "_missing", no_loading)
    monkeypatch.setitem(registry.DATASETS, "digits", no_loading)
    check_dataset_name("keras:fashion_mnist")
    check_dataset_name("digits")


def test_options_a_source_does_not_take_are_refused():
    with pytest.raises(DatasetError, match="data_dir applies to TFDS names, not to "
                                           "'keras:mnist'"):
        load_dataset("keras:mnist", data_dir="/tmp")
    with pytest.raises(DatasetError, match="image_size applies to keras:NAME.*not to 'digits'"):
        load_dataset("digits", image_size=16)


# --- keras: on real Fashion-MNIST ---------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_mnist():
    if not keras_source.is_available("fashion_mnist"):
        reason = (f"real Fashion-MNIST is neither in Keras's cache {keras_source.keras_cache_dir()}"
                  f" nor in {keras_source.DEBIAN_FASHION_MNIST}: "
                  "apt-get install -y dataset-fashion-mnist")
        if REQUIRE_REAL_DATA:
            pytest.fail(f"TFKD_REQUIRE_REAL_DATA=1 but {reason}")
        pytest.skip(reason)
    return load_dataset("keras:fashion_mnist", val_size=5000)


def test_real_fashion_mnist_splits(fashion_mnist):
    splits = fashion_mnist
    assert splits.name == "keras:fashion_mnist"
    assert splits.sizes == {"train": 60000 - 5000, "val": 5000, "test": 10000}
    assert splits.input_shape == (28, 28, 1) and splits.num_classes == 10
    # Facts of the real set that generated or mock data would not share: 6,000 training
    # and 1,000 test images per class.
    pool = np.concatenate([splits.y_train, splits.y_val])
    np.testing.assert_array_equal(np.bincount(pool), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(splits.y_test), [1000] * 10)
    np.testing.assert_allclose(splits.x_train.mean(), 0.0, atol=1e-4)
    np.testing.assert_allclose(splits.x_train.std(), 1.0, atol=1e-3)
    assert abs(splits.x_val.mean()) > 1e-4  # validation was not part of the statistics
    default = load_dataset("keras:fashion_mnist")
    assert default.sizes == {"train": 54000, "val": 6000, "test": 10000}


def test_a_small_model_learns_real_fashion_mnist(fashion_mnist):
    import keras

    splits = fashion_mnist
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(splits.input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(splits.num_classes)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(splits.x_train[:6000], splits.y_train[:6000], batch_size=64, epochs=3, verbose=0)
    _, accuracy = model.evaluate(splits.x_test[:3000], splits.y_test[:3000], verbose=0)
    assert accuracy > 0.75  # chance is 0.1; this MLP reaches ~0.8 in seconds


def test_tfkd_trains_and_evaluates_on_real_fashion_mnist(fashion_mnist, tmp_path):
    """The mode in-process, as the command runs it: a training slice of real images, the
    whole real validation and test splits, their sizes in the metrics record and table."""
    import json

    from tfkd import report
    from tfkd.config import Config
    from tfkd.modes import train
    from tfkd.workdir import Workdir

    config = Config(mode="train", dataset="keras:fashion_mnist", model="mlp", num_models=1,
                    epochs=2, train_size=3000, workdir=str(tmp_path))
    workdir = Workdir(tmp_path).create()
    (row,) = train.run(config, workdir)
    record = json.load(open(tmp_path / "metrics" / "member_0.json"))
    sizes = {k: record["row"][k] for k in ("train_examples", "val_examples", "test_examples")}
    assert sizes == {"train_examples": 3000, "val_examples": 6000, "test_examples": 10000}
    assert row["test_accuracy"] > 0.7  # on all 10,000 real test images; chance is 0.1
    assert "| 3000 / 6000 / 10000 |" in report.to_markdown([row])


# --- keras: cache, mirror and offline message, on a private Keras home ----------------------


def _write_idx(path, array):
    """The IDX format of the original MNIST files: magic, dimensions, bytes; gzipped."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def private_keras_home(tmp_path, monkeypatch):
    """Keras's cache in tmp_path, no network, and the Debian mirror elsewhere in tmp_path."""
    import urllib.error

    from keras.src.backend import config
    from keras.src.utils import file_utils

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))
    fetched = []

    def offline(url, *args, **kwargs):
        fetched.append(url)
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    mirror = tmp_path / "mirror"
    spec = keras_source.KERAS_DATASETS["fashion_mnist"]
    monkeypatch.setitem(keras_source.KERAS_DATASETS, "fashion_mnist",
                        keras_source.dataclasses.replace(spec, mirror=str(mirror)))
    return home / "datasets", mirror, fetched


def test_absent_keras_data_says_where_and_how_in_one_line(private_keras_home):
    cache, _, fetched = private_keras_home
    assert not keras_source.is_available("fashion_mnist")
    with pytest.raises(DatasetError) as error:
        load_dataset("keras:fashion_mnist")
    message = _one_line(error)
    assert fetched  # Keras tried to download, and failed
    assert f"not in Keras's cache {cache}" in message
    assert "no network in this test" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert (f"mkdir -p {cache}/fashion-mnist && cp /usr/share/datasets/fashion-mnist/"
            f"*-ubyte.gz {cache}/fashion-mnist/") in message


def test_the_local_mirror_fills_keras_cache(private_keras_home):
    cache, mirror, fetched = private_keras_home
    rng = np.random.default_rng(0)
    mirror.mkdir()
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28)),
              "train-labels-idx1-ubyte.gz": np.arange(30) % 10,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": np.arange(10)}
    for name, array in arrays.items():
        _write_idx(mirror / name, array)
    assert keras_source.is_available("fashion_mnist")
    splits = load_dataset("keras:fashion_mnist", val_size=5)
    assert not fetched  # read offline
    assert splits.sizes == {"train": 25, "val": 5, "test": 10}
    np.testing.assert_array_equal(splits.y_test, np.arange(10))
    for name in arrays:  # Keras's cache now holds the mirror's files, byte for byte
        assert (cache / "fashion-mnist" / name).read_bytes() == (mirror / name).read_bytes()
    assert not list((cache / "fashion-mnist").glob("*.partial"))
    # The test images survive as Keras read them, up to the affine standardisation.
    x = splits.x_test[..., 0].ravel()
    raw = arrays["t10k-images-idx3-ubyte.gz"].ravel()
    slope, offset = np.polyfit(x, raw, 1)
    np.testing.assert_allclose(slope * x + offset, raw, atol=1e-3)


def test_a_damaged_keras_cache_is_named(private_keras_home):
    cache, _, _ = private_keras_home
    (cache / "fashion-mnist").mkdir(parents=True)
    for name in keras_source.FASHION_MNIST_FILES:
        (cache / "fashion-mnist" / name).write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match=f"could not be read from {cache}.*delete") as error:
        load_dataset("keras:fashion_mnist")
    _one_line(error)


# --- folder: ------------------------------------------------------------------------------

CLASSES = ("cat", "dog", "emu")  # indices 0, 1, 2 in sorted order


def _write_images(directory, per_class, *, size=(8, 8), mode="L", seed=0):
    """Images whose mean intensity encodes the class; returns {path: pixels}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {}
    for label, name in enumerate(CLASSES):
        (directory / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            pixels = (rng.integers(0, 60, shape) + 90 * label).astype(np.uint8)
            path = directory / name / f"{i:03d}.png"
            Image.fromarray(pixels, mode=mode).save(path)
            written[str(path)] = pixels
    return written


def test_folder_with_carved_test_split(tmp_path):
    _write_images(tmp_path, 10)
    splits = load_dataset(f"folder:{tmp_path}")
    assert splits.name == f"folder:{tmp_path}"
    # 30 images: 20% (6) carved as test, 10% of the remaining 24 (2) as validation.
    assert splits.sizes == {"train": 22, "val": 2, "test": 6}
    assert splits.input_shape == (8, 8, 1) and splits.num_classes == 3
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int32
    np.testing.assert_allclose(splits.x_train.mean(), 0.0, atol=1e-5)
    # Labels follow the sorted class folders: the class is readable from the intensity.
    for split in ("train", "val", "test"):
        x, y = getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")
        order = np.argsort(x.mean(axis=(1, 2, 3)))
        assert list(y[order]) == sorted(y)
    again = load_dataset(f"folder:{tmp_path}")
    np.testing.assert_array_equal(again.x_test, splits.x_test)
    other = load_dataset(f"folder:{tmp_path}", split_seed=1)
    assert not np.array_equal(np.sort(other.x_test.mean(axis=(1, 2, 3))),
                              np.sort(splits.x_test.mean(axis=(1, 2, 3))))


def test_folder_with_train_and_test_keeps_the_given_test_split(tmp_path):
    train = _write_images(tmp_path / "train", 8, mode="RGB", seed=1)
    test = _write_images(tmp_path / "test", 4, mode="RGB", seed=2)
    splits = load_dataset(f"folder:{tmp_path}", val_size=3)
    assert splits.sizes == {"train": 21, "val": 3, "test": 12}
    assert splits.input_shape == (8, 8, 3)
    np.testing.assert_array_equal(splits.y_test, np.repeat([0, 1, 2], 4))
    # The test images are the files in test/, in order, standardised per channel.
    raw_test = np.stack(list(test.values())).astype(np.float64)
    for c in range(3):
        slope, offset = np.polyfit(splits.x_test[..., c].ravel(), raw_test[..., c].ravel(), 1)
        np.testing.assert_allclose(slope * splits.x_test[..., c] + offset, raw_test[..., c],
                                   atol=1e-3)
    assert len(train) == 24


def test_folder_image_size_resizes_mixed_sizes(tmp_path):
    _write_images(tmp_path, 5, size=(8, 8))
    _write_images(tmp_path, 1, size=(12, 10), seed=3)  # overwrites 000.png with another size
    with pytest.raises(DatasetError, match=r"images differ in size .*12x10.*image_size=N") as e:
        load_dataset(f"folder:{tmp_path}")
    _one_line(e)
    splits = load_dataset(f"folder:{tmp_path}", image_size=6)
    assert splits.input_shape == (6, 6, 1)


@pytest.mark.parametrize("layout, named", [
    ("train_only", "has a train/ sub-folder but no test/"),
    ("different_classes", r"train/ has classes \['cat', 'dog', 'emu'\] but test/ has "
                          r"\['cat', 'dog'\]"),
    ("empty_class", "class folder .*emu has no image"),
    ("no_classes", "has no class sub-folders; expected PATH/<class>/<image>"),
    ("not_an_image", "bad.png is not a readable image"),
])
def test_bad_folders_are_refused_in_one_line(tmp_path, layout, named):
    import shutil

    if layout == "train_only":
        _write_images(tmp_path / "train", 2)
    elif layout == "different_classes":
        _write_images(tmp_path / "train", 2)
        _write_images(tmp_path / "test", 2)
        shutil.rmtree(tmp_path / "test" / "emu")
    elif layout == "empty_class":
        _write_images(tmp_path, 2)
        for path in (tmp_path / "emu").iterdir():
            path.unlink()
    elif layout == "no_classes":
        (tmp_path / "loose.png").write_bytes(b"")
    elif layout == "not_an_image":
        _write_images(tmp_path, 2)
        (tmp_path / "dog" / "bad.png").write_text("not an image")
    with pytest.raises(DatasetError, match=named) as error:
        load_dataset(f"folder:{tmp_path}")
    _one_line(error)


def test_a_class_carved_wholly_into_test_is_refused(tmp_path):
    _write_images(tmp_path / "few", 6)
    for path in sorted((tmp_path / "few" / "emu").iterdir())[1:]:
        path.unlink()  # emu keeps one image
    # The test carving is stratified: emu's share of the 3 test images is 0.23 of an image,
    # so its one image stays in training whatever the seed.
    for seed in range(12):
        assert load_dataset(f"folder:{tmp_path / 'few'}", split_seed=seed).num_classes == 3
    # One image per class: the one test image takes a class's only example.
    _write_images(tmp_path / "single", 1)
    with pytest.raises(DatasetError, match="test has labels [012] that the training data "
                                           "does not have") as error:
        load_dataset(f"folder:{tmp_path / 'single'}", val_size=0.5)
    _one_line(error)


def test_folder_val_size_beyond_the_data_names_both_numbers(tmp_path):
    _write_images(tmp_path, 10)
    with pytest.raises(DatasetError, match="val_size=24 .*has 24 examples.*1 to 23") as error:
        load_dataset(f"folder:{tmp_path}", val_size=24)
    _one_line(error)


# --- npz: ---------------------------------------------------------------------------------


def _arrays(n_train=40, n_test=20, shape=(6, 6), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.integers(0, 256, (n_train,) + shape).astype(np.uint8),
                y_train=np.arange(n_train) % classes,
                x_test=rng.integers(0, 256, (n_test,) + shape).astype(np.uint8),
                y_test=np.arange(n_test) % classes)


def test_npz_loads_carves_and_standardises(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"][:, None]  # (n, 1) labels, as keras' CIFAR has them
    np.savez(tmp_path / "set.npz", **arrays, unused=np.zeros(3))
    splits = load_dataset(f"npz:{tmp_path / 'set.npz'}", val_size=0.25, split_seed=3)
    assert splits.sizes == {"train": 30, "val": 10, "test": 20}
    assert splits.input_shape == (6, 6, 1) and splits.num_classes == 4
    assert splits.y_val.dtype == np.int32
    np.testing.assert_allclose(splits.x_train.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(splits.x_train.std(), 1.0, atol=1e-4)
    # Train and validation partition x_train; the test split is x_test, in order.
    pool = np.concatenate([splits.x_train, splits.x_val])[..., 0].reshape(40, -1)
    slope, offset = np.polyfit(splits.x_test.ravel(), arrays["x_test"].ravel(), 1)
    restored = np.rint(slope * pool + offset)
    assert sorted(map(tuple, restored.tolist())) == sorted(
        map(tuple, arrays["x_train"].reshape(40, -1).astype(float).tolist()))
    np.testing.assert_array_equal(splits.y_test, arrays["y_test"])
    again = load_dataset(f"npz:{tmp_path / 'set.npz'}", val_size=0.25, split_seed=3)
    np.testing.assert_array_equal(again.x_val, splits.x_val)


def test_npz_feature_vectors_and_image_size(tmp_path):
    arrays = _arrays(shape=(5,))
    arrays["x_train"] = arrays["x_train"].astype(np.float64)
    arrays["x_test"] = arrays["x_test"].astype(np.float64)
    np.savez(tmp_path / "vectors.npz", **arrays)
    assert load_dataset(f"npz:{tmp_path / 'vectors.npz'}").input_shape == (5,)
    with pytest.raises(DatasetError, match=r"image_size applies to images .*\(40, 5\)"):
        load_dataset(f"npz:{tmp_path / 'vectors.npz'}", image_size=4)
    np.savez(tmp_path / "rgb.npz", **_arrays(shape=(6, 6, 3)))
    assert load_dataset(f"npz:{tmp_path / 'rgb.npz'}", image_size=4).input_shape == (4, 4, 3)


def _npz_error(tmp_path, **arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError) as error:
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    return _one_line(error)


def test_bad_npz_archives_are_refused_in_one_line(tmp_path):
    good = _arrays()
    renamed = dict(good)
    renamed["x_tst"] = renamed.pop("x_test")
    assert "has arrays x_train, y_train, y_test, x_tst; it needs x_train, y_train, x_test, " \
           "y_test (missing: x_test)" in _npz_error(tmp_path, **renamed)
    assert "test has labels 7 that the training data does not have (0..3)" in _npz_error(
        tmp_path, **dict(good, y_test=np.full(20, 7)))
    assert "training labels must be 0..3 with every class present; missing: 1" in _npz_error(
        tmp_path, **dict(good, y_train=np.array([0, 2, 3] * 13 + [0])))
    assert "y_train must hold integer class indices of shape (n,), got float64" in _npz_error(
        tmp_path, **dict(good, y_train=good["y_train"].astype(float)))
    assert "x_train has 40 examples but y_train has 39" in _npz_error(
        tmp_path, **dict(good, y_train=good["y_train"][:39]))
    assert "x_train examples have shape (6, 6) but x_test examples (5, 5)" in _npz_error(
        tmp_path, **dict(good, x_test=good["x_test"][:, :5, :5]))
    assert "y_test[1] is label -1; class indices start at 0" in _npz_error(tmp_path, **dict(good, y_test=-good["y_test"]))
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(DatasetError, match="text.npz is not a readable .npz archive") as error:
        load_dataset(f"npz:{tmp_path / 'text.npz'}")
    _one_line(error)
    np.save(tmp_path / "single.npy", good["x_train"])
    with pytest.raises(DatasetError, match="holds a single array, not a .npz archive"):
        load_dataset(f"npz:{tmp_path / 'single.npy'}")
    np.savez(tmp_path / "objects.npz", **dict(good, y_train=np.array([{}] * 40)))
    with pytest.raises(DatasetError, match="objects.npz: y_train holds Python objects .*unpickle"):
        load_dataset(f"npz:{tmp_path / 'objects.npz'}")


@pytest.mark.parametrize("val_size, named", [
    (40, "val_size=40 leaves no training or no validation example: the npz:.* training data "
         "has 40 examples, so val_size needs 1 to 39"),
    (0.001, "val_size=0.001 leaves no training or no validation example.*has 40 examples"),
    (41, "val_size=41 .*has 40 examples"),
])
def test_npz_val_size_names_both_numbers(tmp_path, val_size, named):
    np.savez(tmp_path / "set.npz", **_arrays())
    with pytest.raises(DatasetError, match=named):
        load_dataset(f"npz:{tmp_path / 'set.npz'}", val_size=val_size)
