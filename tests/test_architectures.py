"""Tests of the CIFAR architectures: ResNet-18/50 and Wide ResNets (tfkd/models/{resnet,wrn}.py)."""

import keras
import numpy as np
import pytest

from tfkd.models import MODELS, build_model

NAMES = ["resnet18", "resnet50", "wrn", "wrn28_10", "wrn16_4", "wrn16_1"]

# Thin variants of every family, a fraction of a second to build, for the seeding tests.
TINY = [
    ("wrn16_1", {}),
    ("wrn", {"depth": 10, "width": 2, "dropout": 0.3}),
    ("resnet18", {"width": 8}),
    ("resnet50", {"width": 4}),
]


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize(
    "name, published",
    [
        # Zagoruyko & Komodakis 2016, Table 1: "36.5M"; the common PyTorch port counts
        # 36,479,194. BatchNorm moving statistics are buffers in PyTorch, hence trainable only.
        ("wrn28_10", 36_479_194),
        # kuangliu/pytorch-cifar's ResNet18 and ResNet50.
        ("resnet18", 11_173_962),
        ("resnet50", 23_520_842),
    ],
)
def test_parameter_counts_match_published(name, published):
    model = build_model(name, (32, 32, 3), 10, seed=0)
    # Counts match the references exactly today; 0.5% leaves room for harmless variants.
    assert _trainable_count(model) == pytest.approx(published, rel=5e-3)


def test_wrn28_10_is_the_default_wrn():
    # 640-wide features (64 * k) and the same count as the named variant.
    model = build_model("wrn", (32, 32, 3), 10)
    assert model.get_layer("features").output.shape == (None, 640)
    assert _trainable_count(model) == 36_479_194


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("input_shape", [(32, 32, 3), (28, 28, 1), (8, 8, 1)])
def test_outputs_logits_and_named_layers(name, input_shape):
    model = build_model(name, input_shape, 7, seed=0)
    x = np.random.default_rng(0).normal(size=(2,) + input_shape).astype(np.float32)
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (2, 7)
    assert np.all(np.isfinite(logits))
    assert model.layers[-1].name == "logits"
    assert model.get_layer("logits").activation is keras.activations.linear
    # "features" is the pooled vector right before the logits
    assert model.layers[-2].name == "features"
    assert isinstance(model.get_layer("features"), keras.layers.GlobalAveragePooling2D)
    # Grad-CAM's map: rank 4, rectified, feeding the pooling
    act = model.get_layer("last_conv_act")
    assert isinstance(act, keras.layers.ReLU) and len(act.output.shape) == 4
    assert model.get_layer("features").input is act.output


@pytest.mark.parametrize("name, side", [("resnet18", 4), ("resnet50", 4), ("wrn16_1", 8)])
def test_last_conv_act_resolution_on_cifar(name, side):
    # ResNets downsample 3 times (32 -> 4), Wide ResNets twice (32 -> 8), no stem pooling.
    shape = build_model(name, (32, 32, 3), 10).get_layer("last_conv_act").output.shape
    assert shape[1:3] == (side, side)


def test_wrn_projection_reads_the_preactivated_input():
    model = build_model("wrn16_1", (8, 8, 1), 10)
    # stage 1 keeps 16 channels at stride 1: identity; stage 2 doubles them: projection
    assert "stage1_block1_proj_conv" not in [l.name for l in model.layers]
    proj = model.get_layer("stage2_block1_proj_conv")
    assert proj.input is model.get_layer("stage2_block1_relu1").output
    assert proj.kernel.shape == (1, 1, 16, 32)


def test_resnet_projections_where_shape_changes():
    names = {l.name for l in build_model("resnet18", (8, 8, 1), 10, width=8).layers}
    assert {f"stage{s}_block1_proj_conv" for s in (2, 3, 4)} <= names
    assert "stage1_block1_proj_conv" not in names  # 64 -> 64 at stride 1: identity
    # bottlenecks expand 4x, so even stage 1's first block projects
    names = {l.name for l in build_model("resnet50", (8, 8, 1), 10, width=4).layers}
    assert "stage1_block1_proj_conv" in names and "stage1_block2_proj_conv" not in names


@pytest.mark.parametrize("name, kwargs", TINY)
def test_same_seed_same_weights_different_seed_different(name, kwargs):
    first = _weights(build_model(name, (8, 8, 1), 10, seed=3, **kwargs))
    keras.utils.set_random_seed(123)  # global state must not matter
    second = _weights(build_model(name, (8, 8, 1), 10, seed=3, **kwargs))
    other = _weights(build_model(name, (8, 8, 1), 10, seed=4, **kwargs))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    kernels = [(a, c) for a, c in zip(first, other) if a.ndim > 1]
    assert kernels and all(not np.array_equal(a, c) for a, c in kernels)


def test_equally_shaped_layers_get_distinct_initial_weights():
    model = build_model("resnet18", (8, 8, 1), 10, seed=0, width=8)
    a = model.get_layer("stage1_block1_conv2").get_weights()[0]
    b = model.get_layer("stage1_block2_conv2").get_weights()[0]
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_seeded_dropout_is_reproducible():
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)

    def train_mode_output(seed):
        model = build_model("wrn", (8, 8, 1), 10, seed=seed, depth=10, width=1, dropout=0.5)
        return keras.ops.convert_to_numpy(model(x, training=True))

    np.testing.assert_array_equal(train_mode_output(1), train_mode_output(1))


@pytest.mark.parametrize("name, kwargs", [("wrn16_1", {}), ("resnet18", {"width": 8})])
def test_tiny_variant_fits_random_labels(name, kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 4, size=32).astype(np.int32)
    model = build_model(name, (8, 8, 1), 4, seed=0, **kwargs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Tracing the train step costs 3-5 s on CPU, more than these few steps take eagerly.
        run_eagerly=True,
    )
    losses = [float(model.train_on_batch(x, y)) for _ in range(8)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


def test_kwargs_reach_the_layers():
    model = build_model("wrn", (8, 8, 1), 5, depth=16, width=2, dropout=0.3, bn_momentum=0.99)
    dropouts = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
    assert len(dropouts) == 6 and all(l.rate == 0.3 for l in dropouts)  # one per block
    assert all(l.momentum == 0.99 for l in model.layers
               if isinstance(l, keras.layers.BatchNormalization))
    assert model.get_layer("features").output.shape == (None, 128)  # 64 * width
    assert not any(isinstance(l, keras.layers.Dropout)
                   for l in build_model("wrn16_1", (8, 8, 1), 5).layers)
    assert build_model("resnet18", (8, 8, 1), 5, width=8).get_layer(
        "features").output.shape == (None, 64)  # 8 * width
    assert build_model("resnet50", (8, 8, 1), 5, width=4).get_layer(
        "features").output.shape == (None, 128)  # 4 * 8 * width
    bn = build_model("resnet18", (8, 8, 1), 5, width=8, bn_momentum=0.5).get_layer("stem_bn")
    assert bn.momentum == 0.5


def test_save_and_load_round_trip(tmp_path):
    model = build_model("wrn", (8, 8, 1), 10, seed=0, depth=10, width=1, dropout=0.3)
    path = tmp_path / "wrn.keras"
    model.save(path)
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-6,
    )


def test_all_names_registered():
    assert set(NAMES) <= set(MODELS)


@pytest.mark.parametrize("depth", [27, 4, 22.0, True, "28"])
def test_bad_depth_names_the_value(depth):
    with pytest.raises(ValueError, match=rf"depth = 6n \+ 4.*depth={depth!r}"):
        build_model("wrn", (32, 32, 3), 10, depth=depth)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("input_shape", [(40, 1), (8, 8, 1, 1)])
def test_bad_rank_names_the_value(name, input_shape):
    with pytest.raises(ValueError, match=rf"rank 3.*input_shape={input_shape!r}".replace(
            "(", r"\(").replace(")", r"\)")):
        build_model(name, input_shape, 10)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("wrn", {"width": 0}, "width=0"),
        ("resnet18", {"width": 2.5}, "width=2.5"),
        ("resnet50", {"width": -1}, "width=-1"),
        ("wrn", {"dropout": 1.0}, "dropout=1.0"),
        ("wrn16_1", {"dropout": -0.1}, "dropout=-0.1"),
    ],
)
def test_bad_kwargs_name_the_value(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, (8, 8, 1), 10, **kwargs)
