"""Tests of the multi-view generator (tfkd.data.multiview) and its two models
(tfkd.models.patchnet): generator statistics, seeding, and the models' invariants."""

import dataclasses
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfkd.data import Splits
from tfkd.data.multiview import MultiViewConfig, load_multiview, make_multiview
from tfkd.models import MODELS, build_model
from tfkd.models.patchnet import smoothed_relu

SMALL = MultiViewConfig(
    num_classes=4, dim=16, num_patches=8, patches_per_feature=2, noise_features=2,
    multi_view_fraction=0.7, train_size=1000, val_size=200, test_size=400,
)
# Without Gaussian noise every projection on a feature is exactly the weight put there.
NOISELESS = dataclasses.replace(SMALL, noise_std=0.0)


def _projections(data, split):
    """(n, P, k, 2): each patch projected on each feature."""
    return np.einsum("npd,cld->npcl", getattr(data, split).x.astype(np.float64), data.features)


# --- the generator ----------------------------------------------------------------------


def test_shapes_and_dtypes():
    data = make_multiview(SMALL, seed=0)
    assert data.features.shape == (4, 2, 16)
    for split, n in (("train", 1000), ("val", 200), ("test", 400)):
        part = getattr(data, split)
        assert part.x.shape == (n, 8, 16) and part.x.dtype == np.float32
        assert part.y.shape == (n,) and part.y.dtype == np.int32
        assert part.single_view.dtype == bool and part.single_view.shape == (n,)
        assert set(np.unique(part.y)) == set(range(4))
        # strong_view is -1 exactly on multi-view samples
        np.testing.assert_array_equal(part.strong_view == -1, ~part.single_view)


def test_features_are_orthonormal():
    for config in (SMALL, MultiViewConfig(), MultiViewConfig(num_classes=32, dim=64)):
        flat = make_multiview(dataclasses.replace(config, train_size=1, val_size=1, test_size=1),
                              seed=3).features.reshape(2 * config.num_classes, config.dim)
        np.testing.assert_allclose(flat @ flat.T, np.eye(2 * config.num_classes), atol=1e-6)


def test_single_view_fraction_matches_config():
    config = dataclasses.replace(SMALL, train_size=8000)
    data = make_multiview(config, seed=1)
    for split in ("train", "val", "test"):
        mask = getattr(data, split).single_view
        # four binomial standard deviations
        tolerance = 4 * np.sqrt(0.3 * 0.7 / len(mask))
        assert abs(mask.mean() - 0.3) < tolerance, (split, mask.mean())
    # single-view samples show either view equally often
    strong = data.train.strong_view[data.train.single_view]
    assert abs(strong.mean() - 0.5) < 4 * np.sqrt(0.25 / len(strong))


def test_view_and_noise_weights_as_configured():
    data = make_multiview(NOISELESS, seed=2)
    c = NOISELESS
    proj = _projections(data, "train")  # (n, P, k, 2)
    n = len(data.train.y)
    rows = np.arange(n)
    jitter = (1 - c.weight_jitter, 1 + c.weight_jitter)

    def patches_in(values, weight):
        """How many of each sample's patches carry `weight` (within the jitter)."""
        return ((values >= weight * jitter[0] - 1e-5) & (values <= weight * jitter[1] + 1e-5)
                ).sum(axis=1)

    single, strong = data.train.single_view, data.train.strong_view
    for view in (0, 1):
        own = proj[rows, :, data.train.y, view]  # (n, P)
        weak = single & (strong != view)
        assert (patches_in(own[~weak], c.view_weight) == c.patches_per_feature).all()
        assert (patches_in(own[weak], c.weak_view_weight) == c.patches_per_feature).all()
        # every other patch has nothing of this view
        assert ((np.abs(own) > 1e-5).sum(axis=1) == c.patches_per_feature).all()

    # feature noise: exactly `noise_features` other-class features, each on its own patches
    other = np.ones((n, c.num_classes), bool)
    other[rows, data.train.y] = False
    others = proj.transpose(0, 2, 3, 1)[other]  # (n * (k - 1), 2, P)
    shown = (np.abs(others) > 1e-5).any(axis=-1).reshape(n, c.num_classes - 1, 2)
    assert (shown.sum(axis=(1, 2)) == c.noise_features).all()
    counts = patches_in(others.reshape(-1, c.num_patches), c.noise_feature_weight)
    assert set(np.unique(counts)) == {0, c.patches_per_feature}
    # each patch carries at most one feature
    assert ((np.abs(proj) > 1e-5).sum(axis=(2, 3)) <= 1).all()


def test_gaussian_noise_is_isotropic_with_the_configured_scale():
    # NOTE: noise_std only scales the noise draw, so one seed places the same features on the
    # same patches whatever noise_std: the difference is the noise alone.
    config = dataclasses.replace(SMALL, noise_std=0.5)
    noisy, clean = make_multiview(config, seed=4), make_multiview(NOISELESS, seed=4)
    noise = noisy.train.x.astype(np.float64) - clean.train.x
    assert abs(noise.mean()) < 0.01
    # each coordinate has std noise_std / sqrt(dim), so a patch's noise has norm ~noise_std
    np.testing.assert_allclose(noise.std(axis=(0, 1)), 0.5 / np.sqrt(SMALL.dim), rtol=0.05)
    np.testing.assert_allclose(np.linalg.norm(noise, axis=-1).mean(), 0.5, rtol=0.05)
    np.testing.assert_array_equal(noisy.train.y, clean.train.y)


def test_same_seed_same_data_other_seed_other_data():
    first, second = make_multiview(SMALL, seed=5), make_multiview(SMALL, seed=5)
    other = make_multiview(SMALL, seed=6)
    np.testing.assert_array_equal(first.features, second.features)
    for split in ("train", "val", "test"):
        a, b = getattr(first, split), getattr(second, split)
        for field in ("x", "y", "single_view", "strong_view"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(first.train.x, other.train.x)
    # the test set depends on neither train_size nor val_size
    resized = make_multiview(dataclasses.replace(SMALL, train_size=300, val_size=50), seed=5)
    np.testing.assert_array_equal(resized.test.x, first.test.x)
    # with their sum fixed, moving samples between train and val only moves the boundary
    moved = make_multiview(dataclasses.replace(SMALL, train_size=900, val_size=300), seed=5)
    np.testing.assert_array_equal(moved.train.x, first.train.x[:900])
    np.testing.assert_array_equal(moved.val.x[100:], first.val.x)


@pytest.mark.parametrize("changes, named", [
    ({"num_classes": 1}, "num_classes"),
    ({"dim": 7}, "dim=7"),
    ({"num_patches": 7}, "num_patches=7"),
    ({"multi_view_fraction": 1.5}, "1.5"),
    ({"weak_view_weight": 1.0}, "weak_view_weight"),
    ({"noise_features": 7}, "noise_features"),
    ({"noise_std": -0.1}, "-0.1"),
    ({"weight_jitter": 1.0}, "weight_jitter"),
    ({"train_size": 0}, "train_size"),
    ({"patches_per_feature": True}, "patches_per_feature"),
])
def test_bad_config_names_the_value(changes, named):
    with pytest.raises(ValueError, match=named):
        dataclasses.replace(SMALL, **changes)


def test_bad_seed_raises():
    with pytest.raises(ValueError, match="-1"):
        make_multiview(SMALL, seed=-1)


def test_loader_returns_splits():
    splits = load_multiview(split_seed=0, config=SMALL)
    assert isinstance(splits, Splits)
    assert splits.input_shape == (8, 16) and splits.num_classes == 4
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (1000, 200, 400)
    data = make_multiview(SMALL, seed=0)
    np.testing.assert_array_equal(splits.x_test, data.test.x)
    resplit = load_multiview(split_seed=0, val_size=0.5, config=SMALL)
    assert (len(resplit.x_train), len(resplit.x_val)) == (600, 600)
    assert len(load_multiview(split_seed=0, val_size=100, config=SMALL).x_val) == 100
    np.testing.assert_array_equal(resplit.x_test, splits.x_test)
    with pytest.raises(ValueError, match="val_size.*1200"):
        load_multiview(val_size=1200, config=SMALL)
    # the default config builds
    assert load_multiview().input_shape == MultiViewConfig().input_shape


# --- the models -------------------------------------------------------------------------

MODEL_NAMES = ["patch_net", "random_features"]
SHAPE = SMALL.input_shape


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_smoothed_relu_matches_its_formula():
    q, rho = 4, 2.0
    inputs = keras.Input((1,))
    f = keras.Model(inputs, smoothed_relu(inputs, power=q, threshold=rho, name="act"))
    z = np.linspace(-3, 6, 901, dtype=np.float32)[:, None]
    expected = np.where(z <= 0, 0.0,
                        np.where(z <= rho, z ** q / (q * rho ** (q - 1)), z - (1 - 1 / q) * rho))
    np.testing.assert_allclose(_predict(f, z), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_outputs_logits_and_named_layers(name):
    assert name in MODELS
    model = build_model(name, SHAPE, 4, seed=0)
    x = make_multiview(SMALL, seed=0).test.x[:5]
    assert _predict(model, x).shape == (5, 4)
    assert model.layers[-1].name == "logits"
    features = keras.Model(model.input, model.get_layer("features").output)
    assert features(x).shape[0] == 5
    with pytest.raises(ValueError, match="input_shape"):
        build_model(name, (8, 8, 1), 4, seed=0)


def test_patch_net_logit_is_the_sum_of_its_class_neurons():
    model = build_model("patch_net", SHAPE, 4, seed=0, neurons_per_class=3)
    x = make_multiview(SMALL, seed=0).test.x[:6]
    features = keras.ops.convert_to_numpy(
        keras.Model(model.input, model.get_layer("features").output)(x))
    np.testing.assert_allclose(_predict(model, x), features.reshape(6, 4, 3).sum(-1), rtol=1e-5)
    assert len(model.trainable_weights) == 1  # only the neurons


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_weights(name):
    first = _weights(build_model(name, SHAPE, 4, seed=3))
    keras.utils.set_random_seed(99)  # global state must not matter
    second = _weights(build_model(name, SHAPE, 4, seed=3))
    other = _weights(build_model(name, SHAPE, 4, seed=4))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    kernels = [(a, c) for a, c in zip(first, other) if a.ndim > 1]
    assert kernels and all(not np.array_equal(a, c) for a, c in kernels)


def test_patch_net_is_invariant_to_patch_order():
    model = build_model("patch_net", SHAPE, 4, seed=0)
    x = make_multiview(SMALL, seed=0).test.x[:8]
    permuted = x[:, np.random.default_rng(0).permutation(SHAPE[0])]
    np.testing.assert_allclose(_predict(model, permuted), _predict(model, x), rtol=1e-5,
                               atol=1e-6)


def test_random_features_first_layer_never_changes():
    data = make_multiview(SMALL, seed=0)
    model = build_model("random_features", SHAPE, 4, seed=0)
    neurons = _weights(model.get_layer("neurons"))
    head = _weights(model.get_layer("logits"))
    assert not model.get_layer("neurons").trainable
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.train.x[:256], data.train.y[:256], batch_size=64, epochs=3, verbose=0)
    for before, after in zip(neurons, model.get_layer("neurons").get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(not np.allclose(b, a) for b, a in zip(head, model.get_layer("logits").get_weights()))


def test_patch_net_learns_the_views():
    data = make_multiview(SMALL, seed=0)
    model = build_model("patch_net", SHAPE, 4, seed=0)
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.train.x, data.train.y, batch_size=32, epochs=4, verbose=0)
    accuracy = (_predict(model, data.test.x).argmax(1) == data.test.y).mean()
    assert accuracy > 0.6, accuracy  # chance is 0.25


_LOAD_SCRIPT = """
import sys
import keras
import numpy as np
model = keras.models.load_model(sys.argv[1])
assert not any(m == "tfkd" or m.startswith("tfkd.") for m in sys.modules), "tfkd was imported"
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]), training=False)))
print(model.get_layer("neurons").trainable)
"""


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_saved_model_loads_without_tfkd(name, tmp_path):
    model = build_model(name, SHAPE, 4, seed=0)
    x = make_multiview(SMALL, seed=0).test.x[:16]
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    # In-process round trip.
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(_predict(loaded, x), _predict(model, x))
    assert loaded.get_layer("neurons").trainable == (name == "patch_net")
    # And in a fresh interpreter that never imports tfkd (the repository is not on the path).
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(tmp_path / "model.keras"),
         str(tmp_path / "x.npy"), str(tmp_path / "out.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(name == "patch_net")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), _predict(model, x), rtol=1e-6)
