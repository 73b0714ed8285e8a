"""--input_scaling: how image sources prepare their inputs, recorded like every data setting;
a teacher trained on inputs prepared otherwise is found by its score."""

import csv

import numpy as np
import pytest

from helpers.command import ok, tfkd
from tfkd.config import Config, ConfigError
from tfkd.data import DatasetError, load_dataset


def _digits_npz(path):
    """scikit-learn's digits as 8-bit images in an .npz (a source input_scaling applies to)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.round(data.images * 255 / 16).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    np.savez(path, x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:])
    return f"npz:{path}", x, y


def test_each_scaling_prepares_the_images_as_it_says(tmp_path):
    name, x, _ = _digits_npz(tmp_path / "digits.npz")
    auto = load_dataset(name)
    standardised = load_dataset(name, input_scaling="standardise")
    unit = load_dataset(name, input_scaling="unit")
    raw = load_dataset(name, input_scaling="none")
    np.testing.assert_array_equal(auto.x_train, standardised.x_train)
    assert abs(float(auto.x_train.mean())) < 1e-4 and abs(float(auto.x_train.std()) - 1) < 1e-3
    # The same examples, differently prepared.
    np.testing.assert_array_equal(unit.y_train, auto.y_train)
    np.testing.assert_allclose(raw.x_train, unit.x_train * 255, rtol=1e-6)
    assert unit.x_train.min() == 0.0 and unit.x_train.max() == 1.0
    assert set(np.unique(raw.x_test)) <= set(np.unique(x).astype(np.float32))


def test_scaling_is_refused_where_the_source_prepares_its_own():
    with pytest.raises(DatasetError, match="input_scaling applies to .*not to 'digits'"):
        load_dataset("digits", input_scaling="unit")
    with pytest.raises(ConfigError, match="input_scaling applies to"):
        Config(dataset="mnist1d", input_scaling="none")
    with pytest.raises(ConfigError, match="input_scaling"):
        Config(input_scaling="minmax")
    assert Config(dataset="digits", input_scaling="auto").input_scaling == "auto"


def test_a_teacher_of_other_inputs_is_warned_about_until_the_scaling_matches(tmp_path):
    name, _, _ = _digits_npz(tmp_path / "digits.npz")
    teachers = tmp_path / "teachers"
    ok(tfkd(f"--dataset={name}", "--input_scaling=unit", "--mode=train", "--model=cnn",
            "--num_models=1", "--epochs=8", f"--workdir={teachers}"))
    common = [f"--dataset={name}", "--mode=distill", "--model=mlp", "--num_models=1",
              "--epochs=1", "--allow_chance", f"--teacher_dir={teachers}"]
    # A new workdir takes the teachers' recorded scaling: the teacher scores as recorded.
    same = ok(tfkd(*common, f"--workdir={tmp_path / 'same'}"))
    assert "taken from" in same.stderr and "input_scaling=unit" in same.stderr
    assert "tfkd: warning: teacher" not in same.stderr
    # Inputs as stored (0..255): the teacher of [0, 1] images falls far below its record.
    other = ok(tfkd(*common, "--input_scaling=none", f"--workdir={tmp_path / 'other'}"))
    warning = [ln for ln in other.stderr.splitlines() if "tfkd: warning: teacher" in ln]
    assert len(warning) == 1 and "--input_scaling=unit" in warning[0], other.stderr[-2000:]
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path / "other" / "results.csv"))}
    kept = {r["name"]: r for r in csv.DictReader(open(tmp_path / "same" / "results.csv"))}
    assert float(rows["teacher_0"]["test_accuracy"]) < float(kept["teacher_0"]["test_accuracy"])
