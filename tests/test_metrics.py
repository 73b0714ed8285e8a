"""tfkd.metrics: NumPy functions against hand-worked examples and independent computations;
Keras metrics against their NumPy twins, in compile(), under MirroredStrategy, and through
get_config."""

import itertools
import math

import keras
import numpy as np
import pytest
import scipy.special
import scipy.stats
import sklearn.metrics
import tensorflow as tf

from tfkd import metrics

NUM_CLASSES = 5


def random_problem(seed, n=200, c=NUM_CLASSES, scale=2.0):
    """Labels, logits and probabilities with a mix of right and wrong, (un)confident rows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    logits = scale * rng.normal(size=(n, c))
    logits[np.arange(n), labels] += rng.uniform(0, 3, size=n)  # better than chance
    return labels, logits, scipy.special.softmax(logits, axis=-1)


def miscalibrated_problem(seed, n=500, c=NUM_CLASSES):
    """Probabilities whose accuracy swings above and below confidence from bin to bin, so
    per-bin gaps have both signs (|sum of gaps| would then differ from the sum of |gaps|)."""
    rng = np.random.default_rng(seed)
    logits = 3.0 * rng.normal(size=(n, c))
    probs = scipy.special.softmax(logits, axis=-1)
    confidences = probs.max(axis=1)
    p_correct = np.clip(confidences + 0.3 * np.sin(12 * confidences), 0, 1)
    correct = rng.uniform(size=n) < p_correct
    wrong = (probs.argmax(axis=1) + rng.integers(1, c, size=n)) % c
    labels = np.where(correct, probs.argmax(axis=1), wrong)
    return labels, logits, probs


def reference_ece(labels, probs, num_bins):
    """Textbook loop (Guo et al. 2017): bins (lo, hi] from linspace, weighted |acc - conf|."""
    confidences = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, num_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidences > lo) & (confidences <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidences[in_bin].mean())
    return ece


def feed(metric, *arrays, batch_size=37):
    """Update a Keras metric batch by batch (uneven last batch) and return its result."""
    n = len(arrays[-1]) if len(arrays) > 1 else arrays[0].shape[1]
    for start in range(0, n, batch_size):
        if len(arrays) == 1:  # member outputs: batch along axis 1
            metric.update_state(arrays[0][:, start : start + batch_size].astype("float32"))
        else:
            metric.update_state(*(a[start : start + batch_size] for a in arrays))
    return float(metric.result())


# ----------------------------------------------------------------------------- NumPy


def test_softmax_matches_scipy_and_survives_huge_logits():
    _, logits, _ = random_problem(0)
    np.testing.assert_allclose(metrics.softmax(logits), scipy.special.softmax(logits, axis=-1))
    with np.errstate(over="raise"):
        np.testing.assert_allclose(metrics.softmax([[1000.0, 0.0], [-1000.0, -1000.0]]),
                                   [[1.0, 0.0], [0.5, 0.5]])


def test_accuracy_hand_example_and_sklearn():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]]
    assert metrics.accuracy([0, 1, 2, 1], probs) == 0.75
    labels, logits, probs = random_problem(1)
    expected = sklearn.metrics.accuracy_score(labels, probs.argmax(axis=1))
    assert 0.2 < expected < 0.95  # the data must not make the check trivial
    assert metrics.accuracy(labels, probs) == pytest.approx(expected)
    assert metrics.accuracy(labels, logits) == pytest.approx(expected)
    assert metrics.accuracy(tf.constant(labels), tf.constant(probs)) == pytest.approx(expected)


def test_negative_log_likelihood_hand_example_and_sklearn():
    nll = metrics.negative_log_likelihood([0, 1], [[0.5, 0.5], [0.1, 0.9]])
    assert nll == pytest.approx(-(math.log(0.5) + math.log(0.9)) / 2)
    labels, logits, probs = random_problem(2)
    expected = sklearn.metrics.log_loss(labels, probs, labels=range(NUM_CLASSES))
    assert metrics.negative_log_likelihood(labels, probs) == pytest.approx(expected, rel=1e-9)
    assert metrics.negative_log_likelihood(labels, logits, from_logits=True) == pytest.approx(
        expected, rel=1e-9
    )


def test_negative_log_likelihood_clips_zero_probability_at_eps():
    nll = metrics.negative_log_likelihood([1], [[1.0, 0.0]], eps=1e-6)
    assert nll == pytest.approx(-math.log(1e-6))


def test_ece_hand_example_and_interior_bin_edge():
    # 4 bins: (0, .25], (.25, .5], (.5, .75], (.75, 1]. Confidence 0.5 (wrong; argmax takes
    # class 0 on the tie) belongs to the second bin, 0.625 (right) to the third:
    # 1/2 * |0 - 0.5| + 1/2 * |1 - 0.625| = 0.4375. Putting 0.5 in the third bin would give
    # |0.5 - 0.5625| = 0.0625.
    labels, probs = [1, 0], [[0.5, 0.5], [0.625, 0.375]]
    assert metrics.expected_calibration_error(labels, probs, num_bins=4) == pytest.approx(0.4375)
    metric = metrics.ExpectedCalibrationError(num_bins=4)
    metric.update_state(np.array(labels), np.array(probs, "float32"))
    assert float(metric.result()) == pytest.approx(0.4375)


def test_ece_confidence_one_goes_to_last_bin():
    # One confidently wrong example: ECE = |0 - 1| = 1. Dropping it would give 0 (or nan).
    assert metrics.expected_calibration_error([1], [[1.0, 0.0]]) == pytest.approx(1.0)
    metric = metrics.ExpectedCalibrationError()
    metric.update_state(np.array([1]), np.array([[1.0, 0.0]], "float32"))
    assert float(metric.result()) == pytest.approx(1.0)


def calibrated_construction(all_correct=False):
    """Binary groups at confidence c with exactly a fraction c correct (c = 1.0 included)."""
    labels, probs = [], []
    for confidence, size in [(0.6, 10), (0.75, 4), (0.9, 10), (1.0, 3)]:
        num_correct = size if all_correct else round(confidence * size)
        probs += [[confidence, 1 - confidence]] * size
        labels += [0] * num_correct + [1] * (size - num_correct)
    return np.array(labels), np.array(probs)


def test_ece_of_perfectly_calibrated_construction_is_zero():
    labels, probs = calibrated_construction()
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    metric = metrics.ExpectedCalibrationError()
    metric.update_state(labels, probs.astype("float32"))
    assert float(metric.result()) == pytest.approx(0.0, abs=1e-6)
    # Control: all correct makes it overconfident-in-reverse by sum n_g / N * (1 - c_g).
    labels, probs = calibrated_construction(all_correct=True)
    expected = (10 * 0.4 + 4 * 0.25 + 10 * 0.1) / 27
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(expected)


@pytest.mark.parametrize("num_bins", [1, 3, 10, 15])
def test_ece_matches_reference_loop(num_bins):
    labels, logits, probs = miscalibrated_problem(3)
    expected = reference_ece(labels, probs, num_bins)
    overall_gap = abs(np.mean(probs.argmax(axis=1) == labels) - np.mean(probs.max(axis=1)))
    if num_bins > 1:
        assert expected > overall_gap + 0.02  # gaps of both signs: binning matters
    assert metrics.expected_calibration_error(labels, probs, num_bins) == pytest.approx(expected)
    assert metrics.expected_calibration_error(
        labels, logits, num_bins, from_logits=True
    ) == pytest.approx(expected)


def test_agreement_hand_example():
    a = [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]
    b = [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]
    assert metrics.agreement(a, b) == pytest.approx(2 / 3)
    assert metrics.agreement(b, a) == pytest.approx(2 / 3)
    assert metrics.agreement(a, a) == 1.0


def test_mean_kl_divergence_hand_example_and_scipy():
    p, q = [[0.5, 0.5], [1.0, 0.0]], [[0.9, 0.1], [0.5, 0.5]]
    expected = (0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1) + math.log(2.0)) / 2
    assert metrics.mean_kl_divergence(p, q) == pytest.approx(expected)
    _, logits_p, probs_p = random_problem(4)
    _, logits_q, probs_q = random_problem(5)
    expected = np.mean(scipy.stats.entropy(probs_p, probs_q, axis=1))
    assert metrics.mean_kl_divergence(probs_p, probs_q) == pytest.approx(expected)
    assert metrics.mean_kl_divergence(logits_p, logits_q, from_logits=True) == pytest.approx(
        expected
    )
    # KL is not symmetric: swapping p and q must change the value.
    assert metrics.mean_kl_divergence(probs_q, probs_p) != pytest.approx(expected, rel=1e-3)
    assert metrics.mean_kl_divergence(probs_p, probs_p) == pytest.approx(0.0, abs=1e-12)


def test_pairwise_disagreement_hand_example():
    # Top-1 per member on 2 examples: (0, 1), (0, 2), (1, 1). Pair disagreements:
    # (0,1) 1/2, (0,2) 1/2, (1,2) 2/2 -> mean 2/3.
    member_probs = np.eye(3)[[[0, 1], [0, 2], [1, 1]]]
    assert metrics.pairwise_disagreement(member_probs) == pytest.approx(2 / 3)


def test_pairwise_disagreement_of_two_members_is_one_minus_agreement():
    _, _, probs_a = random_problem(6)
    _, _, probs_b = random_problem(7)
    expected = 1 - metrics.agreement(probs_a, probs_b)
    assert 0 < expected < 1
    assert metrics.pairwise_disagreement(np.stack([probs_a, probs_b])) == pytest.approx(expected)


BAD_CALLS = {
    "accuracy 1-D probs": lambda: metrics.accuracy([0, 1], [0.3, 0.7]),
    "accuracy label count": lambda: metrics.accuracy([0, 1, 1], [[0.3, 0.7], [0.6, 0.4]]),
    "accuracy one-hot labels": lambda: metrics.accuracy(np.eye(2), [[0.3, 0.7], [0.6, 0.4]]),
    "nll label out of range": lambda: metrics.negative_log_likelihood([0, 2], np.eye(2)),
    "nll fractional labels": lambda: metrics.negative_log_likelihood([0.5, 1], np.eye(2)),
    "ece zero bins": lambda: metrics.expected_calibration_error([0, 1], np.eye(2), 0),
    "ece 3-D probs": lambda: metrics.expected_calibration_error([0], np.ones((1, 2, 2))),
    "agreement shapes": lambda: metrics.agreement(np.eye(2), np.eye(3)),
    "kl shapes": lambda: metrics.mean_kl_divergence(np.eye(2), np.ones((3, 2)) / 2),
    "disagreement one member": lambda: metrics.pairwise_disagreement(np.ones((1, 4, 3))),
    "disagreement 2-D": lambda: metrics.pairwise_disagreement(np.ones((4, 3))),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_numpy_functions_reject_bad_shapes(call):
    with pytest.raises(ValueError, match="shape|must"):
        call()


def test_bad_shape_message_names_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        metrics.agreement(np.eye(2), np.eye(2, 3))


# ----------------------------------------------------------------------------- Keras


@pytest.mark.parametrize("from_logits", [False, True])
def test_keras_nll_equals_numpy_twin(from_logits):
    labels, logits, probs = random_problem(8)
    preds = (logits if from_logits else probs).astype("float32")
    metric = metrics.NegativeLogLikelihood(from_logits=from_logits)
    expected = metrics.negative_log_likelihood(labels, probs)
    assert feed(metric, labels, preds) == pytest.approx(expected, rel=1e-5)
    assert metric.name == "negative_log_likelihood"


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("num_bins", [1, 15])
def test_keras_ece_equals_numpy_twin(from_logits, num_bins):
    labels, logits, probs = miscalibrated_problem(9, n=300)
    preds = (logits if from_logits else probs).astype("float32")
    metric = metrics.ExpectedCalibrationError(num_bins=num_bins, from_logits=from_logits)
    expected = metrics.expected_calibration_error(labels, probs, num_bins)
    assert expected > 0.01
    # Batched accumulation must give the ECE of all examples, not a mean of batch ECEs.
    assert feed(metric, labels, preds, batch_size=7) == pytest.approx(expected, abs=1e-5)


def test_keras_ece_accepts_column_labels_and_sample_weight():
    labels, _, probs = random_problem(10)
    weights = np.random.default_rng(0).integers(0, 3, size=len(labels))
    # Integer weights are equivalent to repeating examples.
    expected = metrics.expected_calibration_error(
        np.repeat(labels, weights), np.repeat(probs, weights, axis=0)
    )
    metric = metrics.ExpectedCalibrationError()
    metric.update_state(labels[:, None], probs.astype("float32"), sample_weight=weights)
    assert float(metric.result()) == pytest.approx(expected, abs=1e-5)


def test_keras_teacher_agreement_equals_numpy_twin():
    _, student_logits, student_probs = random_problem(11)
    _, teacher_logits, teacher_probs = random_problem(12)
    expected = metrics.agreement(student_probs, teacher_probs)
    assert 0 < expected < 1
    metric = metrics.TeacherAgreement()
    assert feed(metric, student_logits, teacher_logits) == pytest.approx(expected)
    metric.reset_state()
    assert feed(metric, student_probs, teacher_logits) == pytest.approx(expected)


def test_keras_pairwise_disagreement_equals_numpy_twin_and_pair_loop():
    member_probs = np.stack([random_problem(seed, scale=1.0)[2] for seed in range(13, 17)])
    preds = member_probs.argmax(axis=-1)
    loop = np.mean([np.mean(preds[i] != preds[j]) for i, j in itertools.combinations(range(4), 2)])
    assert metrics.pairwise_disagreement(member_probs) == pytest.approx(loop)
    assert 0 < loop < 1
    metric = metrics.PairwiseDisagreement()
    assert feed(metric, member_probs) == pytest.approx(loop, abs=1e-6)


def test_reset_state_zeroes_every_keras_metric():
    labels, logits, probs = random_problem(17)
    members = np.stack([probs, random_problem(18)[2]]).astype("float32")
    cases = [
        (metrics.NegativeLogLikelihood(), (labels, probs)),
        (metrics.ExpectedCalibrationError(), (labels, probs)),
        (metrics.TeacherAgreement(), (logits, probs)),
        (metrics.PairwiseDisagreement(), (members,)),
    ]
    for metric, args in cases:
        metric.update_state(*args)
        first = float(metric.result())
        assert first != 0.0
        metric.reset_state()
        assert all(not np.any(v.numpy()) for v in metric.variables), metric.name
        metric.update_state(*args)
        assert float(metric.result()) == pytest.approx(first), metric.name


@pytest.mark.parametrize(
    "make_call",
    [
        lambda: metrics.ExpectedCalibrationError().update_state(np.zeros(4), np.ones((4, 2, 2))),
        lambda: metrics.ExpectedCalibrationError().update_state(np.zeros(3), np.ones((4, 2))),
        lambda: metrics.ExpectedCalibrationError().update_state(np.zeros((4, 2)), np.ones((4, 2))),
        lambda: metrics.TeacherAgreement().update_state(np.ones((4, 3)), np.ones((4, 2))),
        lambda: metrics.TeacherAgreement().update_state(np.ones(4), np.ones(4)),
        lambda: metrics.PairwiseDisagreement().update_state(np.ones((1, 4, 3))),
        lambda: metrics.PairwiseDisagreement().update_state(np.ones((4, 3))),
        lambda: metrics.ExpectedCalibrationError(num_bins=0),
    ],
)
def test_keras_metrics_reject_bad_shapes(make_call):
    with pytest.raises(ValueError, match="shape|num_bins"):
        make_call()


METRIC_CONFIGS = [
    (metrics.NegativeLogLikelihood, {"from_logits": True, "name": "nll"}),
    (metrics.ExpectedCalibrationError, {"num_bins": 7, "from_logits": True}),
    (metrics.TeacherAgreement, {"name": "agree"}),
    (metrics.PairwiseDisagreement, {"name": "disagree"}),
]


@pytest.mark.parametrize("cls, kwargs", METRIC_CONFIGS)
def test_get_config_round_trip(cls, kwargs):
    metric = cls(**kwargs)
    config = metric.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    assert cls.from_config(config).get_config() == config
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(restored) is cls and restored.get_config() == config


def tiny_model(from_logits):
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(NUM_CLASSES, None if from_logits else "softmax")]
    )
    return model


@pytest.mark.parametrize("from_logits", [False, True])
def test_metrics_in_compile_fit_evaluate(from_logits, tmp_path):
    rng = np.random.default_rng(19)
    x = rng.normal(size=(90, 8)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=90)
    keras.utils.set_random_seed(0)
    model = tiny_model(from_logits)
    model.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=[
            metrics.NegativeLogLikelihood(from_logits=from_logits),
            metrics.ExpectedCalibrationError(num_bins=10, from_logits=from_logits),
        ],
    )
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["expected_calibration_error"]))
    results = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    preds = model.predict(x, verbose=0)
    probs = metrics.softmax(preds) if from_logits else preds
    assert results["negative_log_likelihood"] == pytest.approx(
        metrics.negative_log_likelihood(y, probs), rel=1e-4
    )
    assert results["expected_calibration_error"] == pytest.approx(
        metrics.expected_calibration_error(y, probs, num_bins=10), abs=1e-5
    )
    # The compiled metrics survive a .keras save and load.
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    reloaded = loaded.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert reloaded["expected_calibration_error"] == pytest.approx(
        results["expected_calibration_error"], abs=1e-6
    )


def test_metrics_sum_across_replicas_under_mirrored_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest should provide two logical CPUs"
    strategy = tf.distribute.MirroredStrategy(devices)
    assert strategy.num_replicas_in_sync == 2
    labels, logits, probs = random_problem(20, n=96)
    _, teacher_logits, teacher_probs = random_problem(21, n=96)
    members = np.stack([probs, teacher_probs, random_problem(22, n=96)[2]])
    with strategy.scope():
        ece = metrics.ExpectedCalibrationError(from_logits=True)
        agree = metrics.TeacherAgreement()
        disagree = metrics.PairwiseDisagreement()

    dataset = tf.data.Dataset.from_tensor_slices(
        (labels, logits.astype("float32"), teacher_logits.astype("float32"),
         np.moveaxis(members, 0, 1).astype("float32"))
    ).batch(16)

    @tf.function
    def step(batch):
        y, student, teacher, member_batch = batch
        ece.update_state(y, student)
        agree.update_state(student, teacher)
        disagree.update_state(tf.transpose(member_batch, [1, 0, 2]))

    for batch in strategy.experimental_distribute_dataset(dataset):
        strategy.run(step, args=(batch,))
    # Each replica saw half the data; a result from one replica alone would differ.
    assert float(ece.result()) == pytest.approx(
        metrics.expected_calibration_error(labels, probs), abs=1e-5
    )
    assert float(agree.result()) == pytest.approx(metrics.agreement(probs, teacher_probs))
    assert float(disagree.result()) == pytest.approx(
        metrics.pairwise_disagreement(members), abs=1e-6
    )
