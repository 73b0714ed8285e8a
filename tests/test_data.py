"""Tests of tfkd.data: the embedded datasets' splits and the tf.data pipeline."""

import random

import numpy as np
import pytest

from tfkd.data import (DATASETS, DatasetError, Splits, load_dataset, make_tf_dataset,
                       register_dataset)
from tfkd.data import embedded

SIZES = {"digits": (1077, 360, 360), "mnist1d": (3500, 500, 1000)}
SHAPES = {"digits": (8, 8, 1), "mnist1d": (40, 1)}


@pytest.fixture(scope="module", params=sorted(SIZES))
def splits(request):
    return load_dataset(request.param)


def _sorted_rows(x, y):
    """Rows of (x, y) in a canonical order, so that two multisets of examples compare equal."""
    rows = np.concatenate([x.reshape(len(x), -1), y[:, None].astype(x.dtype)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_shapes_dtypes_and_sizes(splits):
    assert splits.num_classes == 10
    assert splits.input_shape == SHAPES[splits.name]
    sizes = tuple(len(getattr(splits, f"x_{s}")) for s in ("train", "val", "test"))
    assert sizes == SIZES[splits.name]
    for s in ("train", "val", "test"):
        x, y = getattr(splits, f"x_{s}"), getattr(splits, f"y_{s}")
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == splits.input_shape and y.shape == (len(x),)
        # every class present, nothing outside [0, num_classes)
        assert set(np.unique(y)) == set(range(splits.num_classes))


def test_splits_are_fixed_and_independent_of_global_rngs(splits):
    np.random.seed(1)
    random.seed(1)
    first = load_dataset(splits.name)
    np.random.seed(2)
    random.seed(2)
    second = load_dataset(splits.name, split_seed=0)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
        np.testing.assert_array_equal(getattr(first, field), getattr(splits, field))
    other = load_dataset(splits.name, split_seed=1)
    assert not np.array_equal(other.y_train, splits.y_train)


def test_stratified(splits):
    def proportions(y):
        return np.bincount(y, minlength=splits.num_classes) / len(y)

    train = proportions(splits.y_train)
    np.testing.assert_allclose(proportions(splits.y_val), train, atol=0.01)
    if splits.name == "digits":  # mnist1d's test split is given, not drawn by us
        np.testing.assert_allclose(proportions(splits.y_test), train, atol=0.01)


def test_digits_splits_partition_the_source():
    from sklearn.datasets import load_digits

    splits = load_dataset("digits")
    source = load_digits()
    assert splits.x_train.min() == 0.0 and splits.x_train.max() == 1.0
    x = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    y = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    # Equal as multisets: no example is lost or used twice (digits has duplicate images,
    # so a set comparison would not do).
    np.testing.assert_array_equal(
        _sorted_rows(x, y),
        _sorted_rows((source.images / 16.0).astype(np.float32), source.target),
    )


def test_digits_val_size():
    splits = load_dataset("digits", val_size=0.5)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (718, 719, 360)


def test_mnist1d_standardised_with_train_statistics_only():
    splits = load_dataset("mnist1d")
    raw_x, _, raw_x_test, _ = embedded._generate_mnist1d()
    z_train = splits.x_train.astype(np.float64)
    assert abs(z_train.mean()) < 1e-5 and abs(z_train.std() - 1.0) < 1e-5
    # Recover the affine map from the test split; it must map train and validation back
    # onto the generated training pool, one to one. Together with the line above, that
    # proves all splits share one map whose constants are the train split's statistics.
    z_test = splits.x_test.astype(np.float64).ravel()
    std, mean = np.polyfit(z_test, raw_x_test.ravel(), 1)
    np.testing.assert_allclose(std * z_test + mean, raw_x_test.ravel(), atol=1e-5)
    pool = std * np.concatenate([splits.x_train, splits.x_val])[..., 0] + mean
    distances = (
        (pool**2).sum(1)[:, None] + (raw_x**2).sum(1)[None, :] - 2 * pool @ raw_x.T
    )
    nearest = distances.argmin(1)
    assert distances[np.arange(len(pool)), nearest].max() < 1e-6
    assert len(np.unique(nearest)) == len(raw_x)  # disjoint train / validation
    # Statistics over the whole pool (train + validation) would differ measurably.
    assert abs(np.concatenate([splits.x_train, splits.x_val]).std() - 1.0) > 1e-4


def test_mnist1d_generation_leaves_global_rngs_alone():
    embedded._generate_mnist1d.cache_clear()
    np.random.seed(7)
    random.seed(7)
    load_dataset("mnist1d")  # generates afresh; mnist1d reseeds the global RNGs internally
    drawn = np.random.rand(), random.random()
    np.random.seed(7)
    random.seed(7)
    assert drawn == (np.random.rand(), random.random())


def test_unknown_dataset_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown dataset 'foo'; choose one of: digits, mnist1d.*cifar10"):
        load_dataset("foo")


def test_bad_val_size():
    with pytest.raises(ValueError, match="1.5"):
        load_dataset("digits", val_size=1.5)


@pytest.mark.parametrize("name, val_size, named", [
    ("digits", 1437, "val_size=1437 holds out 1437 of 1437 examples.*10 to 1427"),
    ("digits", 5000, "val_size=5000 holds out 5000 of 1437 examples"),
    ("digits", 0.001, "val_size=0.001 holds out 2 of 1437 examples.*10 to 1427"),
    ("mnist1d", 4000, "val_size=4000 holds out 4000 of 4000 examples"),
    ("multiview", 6000, "val_size=6000 leaves no training .*has 6000 examples.*1 to 5999"),
])
def test_val_size_beyond_the_training_data_names_both_numbers(name, val_size, named):
    with pytest.raises(DatasetError, match=named):
        load_dataset(name, val_size=val_size)


def test_sizes(splits):
    assert splits.sizes == dict(zip(("train", "val", "test"), SIZES[splits.name]))


def test_register_dataset():
    @register_dataset("tiny_test_only")
    def load_tiny(*, split_seed, val_size):
        x = np.zeros((2, 3), np.float32)
        y = np.array([0, 1], np.int32)
        return Splits("tiny_test_only", 2, (3,), x, y, x, y, x, y)

    try:
        assert load_dataset("tiny_test_only").input_shape == (3,)
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("tiny_test_only")(load_tiny)
    finally:
        del DATASETS["tiny_test_only"]


def test_splits_validates_dtypes():
    x = np.zeros((2, 3), np.float64)
    y = np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match="float64"):
        Splits("bad", 2, (3,), x, y, x, y, x, y)


# --- make_tf_dataset -----------------------------------------------------------------------


def _indexed_examples(n=50):
    """x and teacher logits both carry the example index, so pairing can be checked."""
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1)
    y = (np.arange(n) % 5).astype(np.int32)
    teacher_logits = np.stack([np.arange(n), y], axis=1).astype(np.float32)
    return x, y, teacher_logits


def test_plain_batches():
    x, y, _ = _indexed_examples()
    batches = list(make_tf_dataset(x, y, batch_size=16).as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    dropped = list(make_tf_dataset(x, y, batch_size=16, drop_remainder=True))
    assert len(dropped) == 3


def test_teacher_logits_stay_with_their_examples_through_shuffles():
    x, y, teacher_logits = _indexed_examples()
    dataset = make_tf_dataset(
        x, y, batch_size=16, shuffle=True, seed=3, teacher_logits=teacher_logits
    )
    orders = []
    for _ in range(2):
        seen = []
        for features, labels in dataset.as_numpy_iterator():
            assert set(features) == {"inputs", "teacher_logits"}
            np.testing.assert_array_equal(features["inputs"][:, 0], features["teacher_logits"][:, 0])
            np.testing.assert_array_equal(labels, features["teacher_logits"][:, 1])
            seen.append(features["inputs"][:, 0])
        order = np.concatenate(seen)
        np.testing.assert_array_equal(np.sort(order), np.arange(len(x)))  # each once
        orders.append(order)
    assert not np.array_equal(orders[0], np.arange(len(x)))  # shuffled
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
    again = make_tf_dataset(x, y, batch_size=16, shuffle=True, seed=3, teacher_logits=teacher_logits)
    first = np.concatenate([f["inputs"][:, 0] for f, _ in again.as_numpy_iterator()])
    np.testing.assert_array_equal(first, orders[0])  # the seed fixes the order


def test_repeat():
    x, y, _ = _indexed_examples(10)
    batches = list(make_tf_dataset(x, y, batch_size=4, repeat=True).take(7))
    assert len(batches) == 7


@pytest.mark.parametrize("batch_size", [0, -4, 2.5])
def test_bad_batch_size(batch_size):
    x, y, _ = _indexed_examples(10)
    with pytest.raises(ValueError, match=f"batch_size.*{batch_size}"):
        make_tf_dataset(x, y, batch_size=batch_size)


def test_misaligned_teacher_logits():
    x, y, teacher_logits = _indexed_examples(10)
    with pytest.raises(ValueError, match="teacher_logits has 9 rows"):
        make_tf_dataset(x, y, batch_size=4, teacher_logits=teacher_logits[:9])


def test_memory_mapped_teacher_logits_stream_the_same_batches(tmp_path):
    from tfkd.data import make_tf_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=50).astype(np.int32)
    logits = rng.normal(size=(50, 3)).astype(np.float16)
    np.save(tmp_path / "cache.npy", logits)
    mapped = np.load(tmp_path / "cache.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    in_memory = make_tf_dataset(x, y, batch_size=8, shuffle=True, seed=3,
                                teacher_logits=np.asarray(logits))
    streamed = make_tf_dataset(x, y, batch_size=8, shuffle=True, seed=3, teacher_logits=mapped)
    for epoch in range(2):  # reshuffled alike each epoch
        for (fa, ya), (fb, yb) in zip(in_memory, streamed, strict=True):
            np.testing.assert_array_equal(fa["inputs"].numpy(), fb["inputs"].numpy())
            np.testing.assert_array_equal(fa["teacher_logits"].numpy(),
                                          fb["teacher_logits"].numpy())
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())
            assert fb["teacher_logits"].dtype == "float32"


def test_pipelines_leave_tf_data_autotuning_off():
    """Autotuning made every `fit` wait up to seconds for its thread after the last step
    (see `tfkd.data.pipeline.prefetched`)."""
    from tfkd.data import augmented_views

    x = np.zeros((6, 4, 4, 1), np.float32)
    y = np.zeros(6, np.int64)
    for dataset in (make_tf_dataset(x, y, batch_size=4),
                    make_tf_dataset(x, y, batch_size=4, augment="crop_flip", epochs=2),
                    augmented_views(x, augment="crop_flip", augment_seed=0, epoch=0)):
        assert dataset.options().autotune.enabled is False
