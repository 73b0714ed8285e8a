"""Tests of tfkd.models: the registry, seeding, and the models' shape contract."""

import random

import keras
import numpy as np
import pytest

from tfkd.data import load_dataset, make_tf_dataset
from tfkd.models import MODELS, build_model, register_model

INPUT_SHAPES = [(8, 8, 1), (40, 1)]


def _weights(model):
    return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("input_shape", INPUT_SHAPES)
def test_outputs_logits_and_named_layers(name, input_shape):
    model = build_model(name, input_shape, 7, seed=0)
    x = np.random.default_rng(0).normal(size=(5,) + input_shape).astype(np.float32)
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (5, 7)
    # logits, not probabilities
    assert model.get_layer("logits").activation is keras.activations.linear
    assert not np.allclose(logits.sum(axis=1), 1.0)
    features = keras.Model(model.input, model.get_layer("features").output)
    assert features(x).shape[0] == 5
    assert model.layers[-1].name == "logits"


def test_cnn_picks_the_convolution_rank():
    assert isinstance(build_model("cnn", (8, 8, 1), 10).get_layer("last_conv"), keras.layers.Conv2D)
    assert isinstance(build_model("cnn", (40, 1), 10).get_layer("last_conv"), keras.layers.Conv1D)
    # Grad-CAM needs a spatial map at the last convolution, even on 8x8 inputs
    assert build_model("cnn", (8, 8, 1), 10).get_layer("last_conv_act").output.shape[1:3] == (2, 2)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_same_seed_same_weights_different_seed_different(name):
    first = _weights(build_model(name, (8, 8, 1), 10, seed=3))
    keras.utils.set_random_seed(123)  # global state must not matter
    second = _weights(build_model(name, (8, 8, 1), 10, seed=3))
    other = _weights(build_model(name, (8, 8, 1), 10, seed=4))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    kernels = [(a, c) for a, c in zip(first, other) if a.ndim > 1]
    assert kernels and all(not np.array_equal(a, c) for a, c in kernels)
    # equally shaped layers of one model must not share initial values either
    model = build_model("mlp", (16,), 10, seed=0, hidden_units=(16, 16))
    np.testing.assert_raises(
        AssertionError, np.testing.assert_array_equal,
        model.get_layer("dense0").get_weights()[0][:, :10], model.get_layer("logits").get_weights()[0],
    )


def test_seeded_build_leaves_global_rngs_alone():
    def draws():
        return random.random(), np.random.rand(), float(keras.random.uniform(()))

    keras.utils.set_random_seed(11)
    expected = draws()
    keras.utils.set_random_seed(11)
    build_model("cnn", (8, 8, 1), 10, seed=0)
    assert draws() == expected


def test_unseeded_builds_differ():
    a, b = (_weights(build_model("mlp", (8, 8, 1), 10)) for _ in range(2))
    assert not np.array_equal(a[0], b[0])


def test_models_have_distinct_names_and_compose():
    members = [build_model("cnn", (8, 8, 1), 10, seed=s) for s in range(2)]
    assert members[0].name != members[1].name
    inputs = keras.Input((8, 8, 1))
    ensemble = keras.Model(inputs, keras.layers.Average()([m(inputs) for m in members]))
    assert ensemble(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)


def test_kwargs_reach_the_builder():
    model = build_model("mlp", (40, 1), 3, hidden_units=(32, 8))
    assert model.get_layer("features").units == 8
    model = build_model("cnn", (40, 1), 3, filters=(4, 8), feature_units=5, batch_norm=False)
    assert model.get_layer("features").units == 5
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in model.layers)


def test_unknown_model_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'resnet9000'; choose one of: cnn, mlp"):
        build_model("resnet9000", (8, 8, 1), 10)


@pytest.mark.parametrize(
    "input_shape, num_classes, seed, message",
    [
        ((8, 8, 1), 1, None, "num_classes.*1"),
        ((8, 8, 1), 2.0, None, "num_classes.*2.0"),
        ((8, 8, 1, 1), 10, None, r"rank.*\(8, 8, 1, 1\)"),
        ((64,), 10, None, r"rank.*\(64,\)"),
        ((0, 8, 1), 10, None, r"input_shape.*\(0, 8, 1\)"),
        ((8, 8, 1), 10, -1, "seed.*-1"),
    ],
)
def test_bad_arguments(input_shape, num_classes, seed, message):
    with pytest.raises(ValueError, match=message):
        build_model("cnn", input_shape, num_classes, seed=seed)


def test_register_model():
    @register_model("linear_test_only")
    def build_linear(input_shape, num_classes, *, seeds, name):
        inputs = keras.Input(input_shape)
        h = keras.layers.Flatten(name="features")(inputs)
        logits = keras.layers.Dense(num_classes, kernel_initializer=seeds.glorot(), name="logits")(h)
        return keras.Model(inputs, logits, name=name)

    try:
        assert build_model("linear_test_only", (3,), 2, seed=0).output.shape == (None, 2)
    finally:
        del MODELS["linear_test_only"]


def test_save_and_load_round_trip(tmp_path):
    model = build_model("cnn", (8, 8, 1), 10, seed=0)
    path = tmp_path / "cnn.keras"
    model.save(path)
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6
    )


def test_cnn_learns_digits():
    splits = load_dataset("digits")
    model = build_model("cnn", splits.input_shape, splits.num_classes, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train = make_tf_dataset(splits.x_train, splits.y_train, batch_size=64, shuffle=True, seed=0)
    val = make_tf_dataset(splits.x_val, splits.y_val, batch_size=256)
    # shuffle=False: the dataset shuffles itself; Keras would only warn it ignores shuffle.
    history = model.fit(train, validation_data=val, epochs=5, shuffle=False, verbose=0)
    assert history.history["val_accuracy"][-1] > 0.85
