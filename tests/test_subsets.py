"""Subsets of the data are stratified by class: --train_size, --smoke, --analysis_examples and
the carving of validation (and of test, for a folder without test/), on data stored in
class order as a folder or a sorted .npz is."""

import json

import numpy as np
import pytest
from PIL import Image

from helpers.command import ok, tfkd
from tfkd.config import Config
from tfkd.data import load_dataset
from tfkd.data.arrays import carve, stratified_subset
from tfkd.modes.inputs import load_splits


def test_display_names_drop_the_path_of_path_sources():
    from tfkd.data.registry import display_name

    assert display_name("folder:/home/me/photos/") == "folder:photos"
    assert display_name("npz:/data/sets/sorted.npz") == "npz:sorted.npz"
    for name in ("digits", "keras:fashion_mnist", "cifar10", "tfds:svhn_cropped"):
        assert display_name(name) == name


def _within_one_of_share(y_all, chosen):
    """Each class's count in `chosen` is within one example of count * n_c / n."""
    classes, sizes = np.unique(y_all, return_counts=True)
    counts = np.array([np.sum(chosen == c) for c in classes])
    share = len(chosen) * sizes / len(y_all)
    return np.all(np.abs(counts - share) < 1), counts, share


@pytest.mark.parametrize("case", range(40))
def test_stratified_subset_keeps_every_class_share(case):
    rng = np.random.default_rng(case)
    classes = int(rng.integers(2, 12))
    sizes = rng.integers(1, 60, classes)
    y = np.repeat(np.arange(classes), sizes)  # class order, imbalanced
    count = int(rng.integers(0, len(y) + 1))
    index = stratified_subset(y, count, seed=case)
    assert len(index) == count and len(np.unique(index)) == count
    good, counts, share = _within_one_of_share(y, y[index])
    assert good, (counts, share)
    np.testing.assert_array_equal(index, stratified_subset(y, count, seed=case))


def test_the_first_examples_of_a_subset_span_the_classes():
    y = np.repeat(np.arange(5), 40)
    index = stratified_subset(y, 50, seed=3)
    # Equal quotas: every run of 5 holds one example of each class.
    for start in range(0, 50, 5):
        assert sorted(y[index[start:start + 5]]) == [0, 1, 2, 3, 4]


def test_carve_partitions_and_stratifies_both_parts():
    y = np.repeat(np.arange(4), [30, 10, 50, 7])
    held, kept = carve(y, 20, seed=1)
    assert sorted(np.concatenate([held, kept]).tolist()) == list(range(len(y)))
    assert _within_one_of_share(y, y[held])[0] and _within_one_of_share(y, y[kept])[0]
    assert not np.array_equal(held, carve(y, 20, seed=2)[0])


def _sorted_npz(path, classes=3, per_class=60, test_per_class=30):
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(classes), per_class)
    y_test = np.repeat(np.arange(classes), test_per_class)
    x_train = rng.integers(0, 256, (len(y_train), 6, 6)).astype(np.uint8)
    x_test = rng.integers(0, 256, (len(y_test), 6, 6)).astype(np.uint8)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


def _sorted_folder(root, classes=3, per_class=20):
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((6, 6), 40 * c + i, np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"class_{c}" / f"{i:03d}.png")
    return f"folder:{root}"


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_class_sorted_data_gives_stratified_splits_and_subsets(tmp_path, kind):
    dataset = (_sorted_npz(tmp_path / "sorted.npz") if kind == "npz"
               else _sorted_folder(tmp_path / "images"))
    whole = load_dataset(dataset)
    for split in ("train", "val", "test"):
        y = getattr(whole, f"y_{split}")
        assert np.ptp(np.bincount(y, minlength=3)) <= 1, (split, np.bincount(y))
    splits = load_splits(Config(dataset=dataset, model="mlp", train_size=10))
    assert np.ptp(np.bincount(splits.y_train, minlength=3)) <= 1
    # The same examples every time: every model of a workdir trains on one subset.
    again = load_splits(Config(dataset=dataset, model="mlp", train_size=10))
    np.testing.assert_array_equal(again.x_train, splits.x_train)
    x, y = splits.sample("test", 7)
    assert len(y) == 7 and np.ptp(np.bincount(y, minlength=3)) <= 1
    smoke = load_splits(Config(dataset=dataset, model="mlp", smoke=True, batch_size=4))
    for split in ("train", "val", "test"):
        counts = np.bincount(getattr(smoke, f"y_{split}"), minlength=3)
        assert np.ptp(counts) <= 1, (split, counts)


def test_analysis_examples_are_stratified(tmp_path):
    dataset = _sorted_npz(tmp_path / "sorted.npz", per_class=40, test_per_class=20)
    workdir = tmp_path / "run"
    common = [f"--dataset={dataset}", "--model=cnn", "--num_models=1", "--epochs=1",
              "--analysis_examples=9", "--pgd_steps=1", "--allow_chance",
              f"--workdir={workdir}"]
    ok(tfkd("--mode=train", *common))
    ok(tfkd("--mode=distill", *common))
    # Titles name a path source by its last part, not the absolute path.
    assert (workdir / "results.md").read_text().splitlines()[0] == "## npz:sorted.npz / cnn"
    ok(tfkd("--mode=analyze", *common))
    analysis = json.load(open(workdir / "analysis.json"))
    assert analysis["examples"] == 9
    assert analysis["examples_per_class"] == [3, 3, 3]
