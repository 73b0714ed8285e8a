"""BatchNorm folded into the teachers' convolutions: the same outputs, fewer layers, kept fresh."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import cache, folding
from tfkd.ensemble import for_inference


def randomize_batch_norm(model, seed=0):
    """Moving statistics and affine weights far from their initial 0/1, so a fold that
    mishandles any of them shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([
                rng.uniform(0.5, 2.0, w.shape) if "variance" in w.path or "gamma" in w.path
                else rng.normal(0.0, 0.5, w.shape) for w in layer.weights])
    return model


def batch_norms(model):
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def assert_same_outputs(model, folded, x):
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("name, shape, left", [
    ("cnn", (28, 28, 1), 0),       # conv-BN-ReLU blocks: every BatchNorm folds
    ("cnn", (40, 2), 0),           # the 1-D CNN
    ("wrn16_1", (32, 32, 3), 7),   # pre-activation: only each block's inner conv-BN folds
])
def test_folded_architectures_compute_the_same_function(name, shape, left):
    model = randomize_batch_norm(tfkd.build_model(name, shape, 10, seed=0))
    x = np.random.default_rng(1).normal(size=(16,) + shape).astype("float32")
    folded = folding.fold(model, x[:4])
    assert folded is not None
    assert batch_norms(folded.folded) == left < batch_norms(model)
    assert_same_outputs(model, folded.folded, x)
    assert not folded.folded.trainable


def test_sequential_conv_and_dense_fold_and_other_batch_norms_stay():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    bn = keras.layers.BatchNormalization(name="bn_after_conv")(conv)
    # conv's output is also read by the shortcut: folding would change what it adds.
    shortcut = keras.layers.Conv2D(4, 3, name="read_twice")(inputs)
    shared_bn = keras.layers.BatchNormalization(name="bn_read_twice")(shortcut)
    h = keras.layers.Add()([bn, shared_bn, shortcut])
    activated = keras.layers.Conv2D(4, 1, activation="relu", name="relu_conv")(h)
    h = keras.layers.BatchNormalization(name="bn_after_relu")(activated)
    h = keras.layers.GlobalAveragePooling2D()(h)
    functional = randomize_batch_norm(keras.Model(inputs, keras.layers.Dense(3)(h)))
    sequential = randomize_batch_norm(keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, use_bias=True, name="c"),
        keras.layers.BatchNormalization(name="c_bn"), keras.layers.ReLU(),
        keras.layers.Flatten(), keras.layers.Dense(5, name="d"),
        keras.layers.BatchNormalization(center=False, name="d_bn"), keras.layers.Dense(3)]))
    x = np.random.default_rng(2).normal(size=(8, 8, 8, 3)).astype("float32")
    for model, pairs in ((functional, {"conv": "bn_after_conv"}),
                         (sequential, {"c": "c_bn", "d": "d_bn"})):
        folded = folding.fold(model, x[:2])
        assert folded.pairs == pairs
        assert_same_outputs(model, folded.folded, x)


def test_models_without_a_foldable_pair_are_used_as_given():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)
            self.bn = keras.layers.BatchNormalization()
            self.out = keras.layers.Dense(2)

        def call(self, x, training=False):
            h = self.bn(self.conv(x), training=training)
            return self.out(keras.ops.mean(h, axis=(1, 2)))

    x = np.zeros((2, 8, 8, 1), "float32")
    subclassed = Subclassed()
    subclassed(x)
    mlp = tfkd.build_model("mlp", (8,), 3, seed=0)
    assert folding.fold(subclassed, x) is None
    assert folding.fold(mlp, np.zeros((2, 8), "float32")) is None
    assert for_inference(mlp, np.zeros((2, 8), "float32")) == (mlp, [])


def test_a_fold_that_changes_the_outputs_is_refused(monkeypatch):
    model = randomize_batch_norm(tfkd.build_model("cnn", (8, 8, 1), 3, seed=0))
    right = folding.copy_weights

    def wrong(model, folded, pairs):
        right(model, folded, pairs)
        layer = folded.get_layer(next(iter(pairs)))
        layer.set_weights([layer.kernel.numpy() * 1.5, layer.bias.numpy()])

    monkeypatch.setattr(folding, "copy_weights", wrong)
    assert folding.fold(model, np.ones((2, 8, 8, 1), "float32")) is None


def test_refresh_follows_changed_teacher_weights():
    model = randomize_batch_norm(tfkd.build_model("cnn", (8, 8, 1), 3, seed=0))
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 1)).astype("float32")
    folded = folding.fold(model, x)
    randomize_batch_norm(model, seed=7)
    assert np.abs(np.asarray(model(x)) - np.asarray(folded.folded(x))).max() > 1e-2
    folded.refresh()
    assert_same_outputs(model, folded.folded, x)


def trained_teachers(shape, count=2):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(128,) + shape).astype("float32")
    y = rng.integers(0, 4, 128)
    teachers = []
    for i in range(count):
        teacher = tfkd.build_model("cnn", shape, 4, seed=i, model_name=f"teacher_{i}")
        teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(x, y, epochs=1, batch_size=32, verbose=0)
        teachers.append(teacher)
    return teachers, x, y


def test_distiller_with_folded_teachers_trains_as_with_the_teachers_as_given(tmp_path):
    teachers, x, y = trained_teachers((8, 8, 1))
    history = {}
    for fold in (True, False):
        keras.utils.set_random_seed(5)
        distiller = tfkd.Distiller(student=tfkd.build_model("cnn", (8, 8, 1), 4, seed=9),
                                   teachers=teachers, alpha=0.2, fold_teachers=fold)
        distiller.compile("adam")
        history[fold] = distiller.fit(x, y, epochs=2, batch_size=32, shuffle=False,
                                      validation_data=(x, y), verbose=0).history
        assert len(distiller._inference.folds) == (2 if fold else 0)
    for key, values in history[False].items():
        np.testing.assert_allclose(history[True][key], values, rtol=1e-4, atol=1e-6, err_msg=key)

    # The folded copy is not part of the Distiller's weights, and follows the teachers'
    # weights when load_weights brings them back.
    assert tfkd.Distiller.from_config(distiller.get_config()).fold_teachers is False
    keras.utils.set_random_seed(5)
    distiller = tfkd.Distiller(student=tfkd.build_model("cnn", (8, 8, 1), 4, seed=9),
                               teachers=teachers, alpha=0.2)
    distiller.compile("adam")
    count = len(distiller.weights)
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert len(distiller.weights) == count
    for teacher in teachers:  # weights the folded copy, made by fit, has not seen
        randomize_batch_norm(teacher, seed=11)
    path = str(tmp_path / "distiller.weights.h5")
    distiller.save_weights(path)
    distiller.load_weights(path)
    assert_same_outputs(distiller.teachers, distiller._inference.teachers, x[:16])


def test_cached_logits_from_folded_teachers_equal_the_teachers_own():
    teachers, x, _ = trained_teachers((8, 8, 1))
    ensemble = tfkd.Ensemble(teachers)
    folded = cache.predict_logits(ensemble, x, fold=True)
    np.testing.assert_allclose(folded, cache.predict_logits(ensemble, x), rtol=1e-4,
                               atol=1e-5)
