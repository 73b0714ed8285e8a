"""Tests of tfkd.analysis: inheritance metrics, Grad-CAM, adversarial transfer, invariance."""

import keras
import numpy as np
import pytest
from conftest import make_tiny_cnn

from tfkd import metrics as metrics_lib
from tfkd.analysis import adversarial, figures, gradcam, inheritance, invariance, stats
from tfkd.models import build_model


def _train(model, x, y, epochs, learning_rate=1e-2):
    keras.utils.set_random_seed(0)
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def digit_models(digits):
    """A trained teacher and an independently trained student on digits (no BatchNorm)."""
    x, y = digits
    teacher = _train(make_tiny_cnn(0, batch_norm=False), x[:1200], y[:1200], epochs=8)
    student = _train(make_tiny_cnn(1, batch_norm=False), x[:1200], y[:1200], epochs=8)
    return teacher, student


@pytest.fixture(scope="module")
def held_out(digits):
    x, y = digits
    return x[1200:1500], y[1200:1500]


def _clone(model):
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


# ----------------------------------------------------------------------------- inheritance


def test_compare_matches_numpy():
    rng = np.random.default_rng(0)
    teacher_logits = rng.normal(size=(50, 4)) * 3
    student_logits = teacher_logits + rng.normal(size=(50, 4))
    labels = rng.integers(0, 4, 50)

    result = inheritance.compare(teacher_logits, student_logits, labels)

    def probs(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = probs(teacher_logits), probs(student_logits)
    expected_kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    expected_agreement = np.mean(teacher_logits.argmax(1) == student_logits.argmax(1))
    assert result["agreement"] == pytest.approx(expected_agreement)
    assert result["kl_teacher_student"] == pytest.approx(expected_kl, rel=1e-9)
    assert result["teacher_nll"] == pytest.approx(
        -np.mean(np.log(p[np.arange(50), labels])), rel=1e-9
    )
    assert result["student_ece"] == pytest.approx(
        metrics_lib.expected_calibration_error(labels, q)
    )
    assert 0 < result["agreement"] < 1


def test_compare_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(5, 3\) and \(5, 4\)"):
        inheritance.compare(np.zeros((5, 3)), np.zeros((5, 4)), np.zeros(5, int))


def test_property_table_rows():
    rows = inheritance.property_table({"a": 1, "b": 2, "c": 0}, {"b": 3, "a": 4})
    assert rows == [("a", 1.0, 4.0), ("b", 2.0, 3.0)]
    with pytest.raises(ValueError, match="c"):
        inheritance.property_table({"a": 1}, {"a": 2}, keys=["a", "c"])


# ----------------------------------------------------------------------------- Grad-CAM


def _quadrant_task(n, seed):
    """16x16 noise images; a bright bar in the top-left quadrant, horizontal for class 0 and
    vertical for class 1, is the only thing that carries the label."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.5, (n, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 2, n).astype("int32")
    offsets = rng.integers(1, 7, n)
    for image, label, offset in zip(x, y, offsets):
        if label == 0:
            image[offset, 1:7, 0] = 1.0
        else:
            image[1:7, offset, 0] = 1.0
    return x, y


def test_grad_cam_highlights_the_informative_quadrant():
    x, y = _quadrant_task(768, seed=0)
    model = build_model("cnn", (16, 16, 1), 2, seed=0, filters=(8, 16), feature_units=16)
    _train(model, x, y, epochs=6)
    x_test, y_test = _quadrant_task(128, seed=1)
    assert metrics_lib.accuracy(y_test, model(x_test, training=False).numpy()) > 0.95

    maps = gradcam.grad_cam(model, x_test)

    assert maps.shape == (128, 16, 16) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    informative = maps[:, :8, :8].mean()
    others = [maps[:, :8, 8:].mean(), maps[:, 8:, :8].mean(), maps[:, 8:, 8:].mean()]
    assert informative > 3 * max(others), (informative, others)


def test_grad_cam_defaults_to_the_predicted_class(digit_models, held_out):
    teacher, _ = digit_models
    x = held_out[0][:16]
    predicted = teacher(x, training=False).numpy().argmax(1)
    np.testing.assert_allclose(
        gradcam.grad_cam(teacher, x), gradcam.grad_cam(teacher, x, class_index=predicted)
    )
    # One int explains that class for every example.
    np.testing.assert_allclose(
        gradcam.grad_cam(teacher, x, class_index=3),
        gradcam.grad_cam(teacher, x, class_index=np.full(16, 3)),
    )
    with pytest.raises(ValueError, match="class_index"):
        gradcam.grad_cam(teacher, x, class_index=10)


def test_find_last_conv_layer():
    assert gradcam.find_last_conv_layer(build_model("cnn", (8, 8, 1), 10, seed=0)) == (
        "last_conv_act"
    )
    assert gradcam.find_last_conv_layer(make_tiny_cnn(0)).startswith("re_lu")
    with pytest.raises(ValueError, match="'mlp'"):
        gradcam.find_last_conv_layer(build_model("mlp", (8, 8, 1), 10, seed=0))


def test_grad_cam_on_a_sequential_model_with_valid_padding():
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
         keras.layers.Flatten(), keras.layers.Dense(3)],
        name="sequential_cnn",
    )
    assert gradcam.find_last_conv_layer(model) == "conv"
    maps = gradcam.grad_cam(model, np.random.default_rng(0).uniform(size=(4, 8, 8, 1)))
    assert maps.shape == (4, 8, 8)  # the 6x6 feature maps are upsampled to the input


def test_grad_cam_on_a_sequential_model_loaded_from_keras_file(tmp_path):
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
         keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1))
    maps = gradcam.grad_cam(loaded, x)
    assert maps.shape == (4, 8, 8) and maps.max() == pytest.approx(1.0)
    np.testing.assert_allclose(maps, gradcam.grad_cam(model, x), rtol=1e-5, atol=1e-6)


def test_grad_cam_on_signals():
    model = build_model("cnn", (40, 1), 10, seed=0)
    x = np.random.default_rng(0).normal(size=(5, 40, 1)).astype("float32")
    maps = gradcam.grad_cam(model, x, batch_size=2)
    assert maps.shape == (5, 40)
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_grad_cam_rejects_bad_layer():
    model = build_model("cnn", (8, 8, 1), 10, seed=0)
    x = np.zeros((2, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="'nope'"):
        gradcam.grad_cam(model, x, layer_name="nope")
    with pytest.raises(ValueError, match="'logits'"):
        gradcam.grad_cam(model, x, layer_name="logits")


def test_map_similarity():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(4, 6, 6))
    np.testing.assert_allclose(gradcam.map_similarity(a, 2 * a + 1), 1.0)
    np.testing.assert_allclose(gradcam.map_similarity(a, -a), -1.0)
    expected = [np.corrcoef(a[i].ravel(), a[(i + 1) % 4].ravel())[0, 1] for i in range(4)]
    np.testing.assert_allclose(gradcam.map_similarity(a, np.roll(a, -1, axis=0)), expected)
    constant = np.full((2, 6, 6), 0.1)
    np.testing.assert_array_equal(gradcam.map_similarity(constant, constant), [1.0, 1.0])
    np.testing.assert_array_equal(gradcam.map_similarity(constant, a[:2]), [0.0, 0.0])
    assert gradcam.mean_map_similarity(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(4, 6, 6\) and \(4, 36\)"):
        gradcam.map_similarity(a, a.reshape(4, 36))


# ----------------------------------------------------------------------------- adversarial


def test_fgsm_raises_loss_within_ball_and_clip(digit_models, held_out):
    teacher, _ = digit_models
    x, y = held_out
    epsilon = 0.1
    x_adv = adversarial.fgsm(teacher, x, y, epsilon, clip=(0.0, 1.0))

    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.max(np.abs(x_adv - x)) <= epsilon + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    before = adversarial.cross_entropy(teacher, x, y).mean()
    after = adversarial.cross_entropy(teacher, x_adv, y).mean()
    assert after > before + 0.5, (before, after)
    # epsilon 0 changes nothing.
    np.testing.assert_array_equal(adversarial.fgsm(teacher, x, y, 0.0), x)


def test_pgd_at_least_as_strong_as_fgsm(digit_models, held_out):
    teacher, _ = digit_models
    x, y = held_out
    epsilon = 0.1
    fgsm_loss = adversarial.cross_entropy(
        teacher, adversarial.fgsm(teacher, x, y, epsilon, clip=(0.0, 1.0)), y
    ).mean()
    x_pgd = adversarial.pgd(teacher, x, y, epsilon, steps=10, clip=(0.0, 1.0), seed=0)

    assert np.max(np.abs(x_pgd - x)) <= epsilon + 1e-6
    assert x_pgd.min() >= 0.0 and x_pgd.max() <= 1.0
    assert adversarial.cross_entropy(teacher, x_pgd, y).mean() >= fgsm_loss
    np.testing.assert_array_equal(
        x_pgd, adversarial.pgd(teacher, x, y, epsilon, steps=10, clip=(0.0, 1.0), seed=0)
    )


def test_attacks_on_standardised_data(digit_models, held_out):
    teacher, _ = digit_models
    x, y = held_out
    x = (x - 0.3) / 0.4  # no longer in [0, 1]
    clip = (float(x.min()), float(x.max()))
    epsilon = 0.25
    for x_adv in (
        adversarial.fgsm(teacher, x, y, epsilon, clip=clip),
        adversarial.pgd(teacher, x, y, epsilon, steps=3, clip=clip, seed=1, batch_size=64),
    ):
        assert np.max(np.abs(x_adv - x)) <= epsilon + 1e-6
        assert x_adv.min() >= clip[0] and x_adv.max() <= clip[1]
    with pytest.raises(ValueError, match="clip"):
        adversarial.fgsm(teacher, x, y, epsilon, clip=(0.0, 1.0))


def test_attacks_reject_bad_arguments(digit_models, held_out):
    teacher, _ = digit_models
    x, y = held_out
    with pytest.raises(ValueError, match="epsilon.*-0.1"):
        adversarial.fgsm(teacher, x, y, -0.1)
    with pytest.raises(ValueError, match="steps.*0"):
        adversarial.pgd(teacher, x, y, 0.1, steps=0)
    with pytest.raises(ValueError, match="step_size"):
        adversarial.pgd(teacher, x, y, 0.1, steps=2, step_size=-1.0)
    with pytest.raises(ValueError, match=r"\(300,\).*\(299,\)"):
        adversarial.fgsm(teacher, x, y[:-1], 0.1)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        adversarial.fgsm(teacher, x, np.full_like(y, 10), 0.1)
    with pytest.raises(ValueError, match="attack"):
        adversarial.transfer(teacher, {"s": teacher}, x, y, 0.1, attack="cw")


def test_transfer(digit_models, held_out):
    teacher, student = digit_models
    x, y = held_out
    result = adversarial.transfer(
        teacher, {"itself": _clone(teacher), "independent": student}, x, y, epsilon=0.1,
        steps=5, clip=(0.0, 1.0), seed=0,
    )
    assert result["num_teacher_fooled"] > 20
    assert 0.0 < result["teacher_fooled"] <= 1.0
    assert result["teacher_fooled"] == pytest.approx(
        result["num_teacher_fooled"] / result["num_teacher_correct"]
    )
    # The identical student is fooled by every example that fools the teacher.
    assert result["transfer"]["itself"] == 1.0
    assert result["num_transfer_examples"]["itself"] == result["num_teacher_fooled"]
    assert 0.0 <= result["transfer"]["independent"] <= 1.0
    assert 0 < result["num_transfer_examples"]["independent"] <= result["num_teacher_fooled"]

    fgsm_result = adversarial.transfer(
        teacher, {"itself": teacher}, x, y, epsilon=0.1, attack="fgsm", clip=(0.0, 1.0)
    )
    assert fgsm_result["transfer"]["itself"] == 1.0


def test_transfer_rejects_incompatible_students(digit_models, held_out):
    teacher, _ = digit_models
    x, y = held_out
    with pytest.raises(ValueError, match="five"):
        adversarial.transfer(teacher, {"five": make_tiny_cnn(2, num_classes=5)}, x, y, 0.1)


# ----------------------------------------------------------------------------- invariance


def test_jitter_grey_scale(digits):
    x = digits[0][:64]
    jittered = invariance.jitter(x, seed=3)
    assert jittered.shape == x.shape and jittered.dtype == np.float32
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0
    assert not np.allclose(jittered, x)
    np.testing.assert_array_equal(jittered, invariance.jitter(x, seed=3))
    assert not np.allclose(jittered, invariance.jitter(x, seed=4))
    np.testing.assert_array_equal(invariance.jitter(x, 0, 0, 0, 0, seed=3), x)
    # Brightness alone scales each image by one factor in [0.6, 1.4].
    bright = invariance.jitter(x, brightness=0.4, contrast=0, seed=3)
    lit = x > 0.2
    ratios = [np.unique(np.round(b[m] / i[m], 4)) for b, i, m in zip(bright, x, lit & (bright < 1))]
    assert all(len(r) == 1 and 0.6 <= r[0] <= 1.4 for r in ratios)


def test_jitter_colour_and_signals():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(6, 8, 8, 3)).astype("float32")
    only_hue = invariance.jitter(images, 0, 0, 0, hue=0.2, seed=0)
    assert only_hue.shape == images.shape and not np.allclose(only_hue, images)
    # A hue rotation keeps each pixel's value (max over channels).
    np.testing.assert_allclose(only_hue.max(-1), images.max(-1), atol=1e-5)
    np.testing.assert_array_equal(invariance.jitter(images, 0, 0, 0, 0), images)

    signals = rng.normal(size=(6, 40, 1)).astype("float32")
    value_range = (float(signals.min()), float(signals.max()))
    jittered = invariance.jitter(signals, seed=0, value_range=value_range)
    assert jittered.shape == signals.shape
    assert value_range[0] <= jittered.min() and jittered.max() <= value_range[1]


def test_jitter_rejects_bad_arguments(digits):
    x = digits[0][:4]
    with pytest.raises(ValueError, match="brightness.*-0.1"):
        invariance.jitter(x, brightness=-0.1)
    with pytest.raises(ValueError, match="hue.*0.7"):
        invariance.jitter(x, hue=0.7)
    with pytest.raises(ValueError, match="value_range"):
        invariance.jitter(x * 2, value_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="4 channels"):
        invariance.jitter(np.zeros((2, 8, 8, 4), "float32"))


def test_consistency(digit_models, held_out):
    teacher, _ = digit_models
    x = held_out[0][:100]
    assert invariance.consistency(teacher, x, n_views=2, brightness=0, contrast=0) == 1.0
    strong = invariance.consistency(teacher, x, n_views=3, brightness=0.9, contrast=0.9, seed=1)
    assert 0.0 <= strong < 1.0
    assert strong == invariance.consistency(
        teacher, x, n_views=3, brightness=0.9, contrast=0.9, seed=1
    )
    with pytest.raises(ValueError, match="n_views"):
        invariance.consistency(teacher, x, n_views=0)


# ----------------------------------------------------------------------------- figures


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_property_chart(tmp_path):
    rows = [("agreement", 0.9, 0.8), ("cam similarity", 0.7, 0.4), ("transfer", 0.6, 0.3)]
    path = figures.plot_property_table(rows, tmp_path / "sub" / "properties.png")
    assert _is_png(path) and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="rows"):
        figures.plot_property_table([("a", 1.0)], tmp_path / "bad.png")


def test_gradcam_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 8, 8, 1))
    maps = {name: rng.uniform(size=(3, 8, 8)) for name in figures.GRID_COLUMNS}
    path = figures.plot_gradcam_grid(images, maps, tmp_path / "grid.png")
    assert _is_png(path) and path.stat().st_size > 1000

    signals = rng.normal(size=(2, 40, 1))
    maps_1d = {name: rng.uniform(size=(2, 40)) for name in figures.GRID_COLUMNS}
    assert _is_png(figures.plot_gradcam_grid(signals, maps_1d, tmp_path / "grid_1d.png"))
    with pytest.raises(ValueError, match="'teacher'"):
        figures.plot_gradcam_grid(images, {"teacher": maps["teacher"][:2]}, tmp_path / "x.png")


def test_gradcam_grid_has_a_colour_bar_and_the_classes():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 8, 8, 1))
    maps = {name: rng.uniform(size=(3, 8, 8)) for name in figures.GRID_COLUMNS}
    predictions = {"teacher": np.array([1, 2, 3]), "distilled": np.array([1, 0, 3]),
                   "independent": np.array([4, 2, 3])}
    figure = figures.gradcam_figure(images, maps, labels=np.array([1, 2, 5]),
                                    predictions=predictions)
    bars = [axes for axes in figure.axes if "Grad-CAM" in axes.get_ylabel()]
    assert len(bars) == 1  # one colour bar, for every map
    grid = [axes for axes in figure.axes if axes not in bars]
    labels = [axes.get_xlabel() for axes in grid]
    assert labels[:4] == ["true: 1", "predicted: 1", "predicted: 1", "predicted: 4"]
    assert labels[8:] == ["true: 5", "predicted: 3", "predicted: 3", "predicted: 3"]
    named = figures.gradcam_figure(images, maps, labels=np.array([1, 2, 5]),
                                   class_names=[f"c{i}" for i in range(6)])
    assert named.axes[0].get_xlabel() == "true: c1"
    with pytest.raises(ValueError, match="no maps"):
        figures.gradcam_figure(images, maps, predictions={"other": np.zeros(3)})


# ----------------------------------------------------------------------------- statistics


def test_wilson_interval_by_hand():
    # Wilson's score interval, written out: centre (k + z²/2) / (n + z²), half-width
    # z / (n + z²) * sqrt(k (n - k) / n + z² / 4).
    z = 1.959963984540054
    for k, n in [(0, 3), (39, 128), (64, 64), (7, 10)]:
        centre = (k + z * z / 2) / (n + z * z)
        half = z / (n + z * z) * np.sqrt(k * (n - k) / n + z * z / 4)
        low, high = stats.wilson_interval(k, n)
        assert low == pytest.approx(centre - half, abs=1e-9)
        assert high == pytest.approx(centre + half, abs=1e-9)
    assert stats.wilson_interval(0, 0) == (None, None)


def test_rate_counts_its_population():
    cell = stats.rate([True, False, True, True], population=[True, True, False, True])
    assert (cell["count"], cell["of"], cell["value"]) == (2, 3, 2 / 3)
    assert cell["ci95"] == list(stats.wilson_interval(2, 3))
    empty = stats.proportion(0, 0)
    assert empty["value"] is None and empty["ci95"] == [None, None]


def test_mean_interval_covers_the_mean_and_narrows_with_examples():
    rng = np.random.default_rng(0)
    small = stats.mean_interval(rng.normal(size=50), seed=1)
    large = stats.mean_interval(rng.normal(size=5000), seed=1)
    for cell in (small, large):
        assert cell["ci95"][0] < cell["value"] < cell["ci95"][1]
    assert np.diff(large["ci95"]) < np.diff(small["ci95"]) / 5
    assert large["ci95"][0] < 0 < large["ci95"][1]  # the true mean, 0
    assert stats.mean_interval(np.ones(10), weight=3) == {"value": 1.0, "of": 30,
                                                           "ci95": [1.0, 1.0]}


def test_paired_test_over_seeds_is_scipys_ttest_rel():
    from scipy import stats as scipy_stats

    a, b = np.array([0.91, 0.88, 0.93]), np.array([0.85, 0.86, 0.88])
    test = stats.paired_mean_test(a - b, alternative="two-sided")
    assert test["p"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert test["n"] == 3 and test["mean"] == pytest.approx(np.mean(a - b))
    assert stats.paired_mean_test([0.1])["p"] is None  # one seed: no test
    assert stats.paired_mean_test([-0.1, -0.1], alternative="less")["p"] == 0.0
    assert stats.spread([0.5, None, 0.7]) == f"0.6000 ± {np.std([0.5, 0.7], ddof=1):.4f}"


def test_summarize_pairs_each_distilled_student_with_its_own_control():
    from tfkd.modes import analyze

    def cell(value):
        return {"value": value}

    table = [
        {"property": "agreement", "teacher": None, "skipped": None,
         "students": {"distilled": cell(0.9), "independent": cell(0.8),
                      "distilled_6": cell(0.7), "independent_6": cell(0.75)}},
        {"property": "PGD transfer", "teacher": cell(0.5), "skipped": None,
         "students": {"distilled": cell(None), "independent": cell(0.4),
                      "distilled_6": cell(0.3), "independent_6": cell(0.1)}},
        {"property": "Grad-CAM", "teacher": None, "students": None, "skipped": "no map"},
    ]
    pairs = [(5, "distilled", "independent"), (6, "distilled_6", "independent_6")]
    agreement, pgd, gradcam_row = analyze.summarize(table, pairs)
    assert [p["difference"] for p in agreement["per_seed"]] == [pytest.approx(0.1),
                                                                pytest.approx(-0.05)]
    assert agreement["distilled"] == pytest.approx(0.8)
    assert agreement["difference"] == pytest.approx(0.025)
    assert agreement["paired_test"]["n"] == 2
    # No example to score: no difference for that seed, and no test from one seed.
    assert pgd["teacher"] == 0.5 and pgd["per_seed"][0]["difference"] is None
    assert pgd["difference"] == pytest.approx(0.2) and pgd["paired_test"] is None
    assert gradcam_row["skipped"] == "no map" and gradcam_row["distilled"] is None


def test_display_name_drops_the_path():
    from tfkd.data import display_name

    assert display_name("npz:/home/me/data/signals.npz") == "npz:signals.npz"
    assert display_name("folder:/srv/pets/") == "folder:pets"
    assert display_name("keras:fashion_mnist") == "keras:fashion_mnist"
    assert display_name("digits") == "digits"
