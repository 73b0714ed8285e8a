"""Ensemble: averaging in logit and probability space, saving, evaluation."""

import keras
import numpy as np
import pytest
from conftest import make_tiny_cnn

import tfkd
from tfkd import metrics


@pytest.fixture(scope="module")
def members():
    return [make_tiny_cnn(seed) for seed in (1, 2, 3)]


def test_logit_average(digits, members):
    x, _ = digits
    logits = np.stack([m.predict(x[:20], verbose=0) for m in members])
    out = tfkd.Ensemble(members).predict(x[:20], verbose=0)
    np.testing.assert_allclose(out, logits.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_probability_average_returns_log_mean_probability(digits, members):
    x, _ = digits
    probs = np.stack([metrics.softmax(m.predict(x[:20], verbose=0)) for m in members])
    out = tfkd.Ensemble(members, average="probabilities").predict(x[:20], verbose=0)
    np.testing.assert_allclose(metrics.softmax(out), probs.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.exp(out), probs.mean(axis=0), rtol=1e-5, atol=1e-7)


def test_save_and_load(digits, members, tmp_path):
    x, _ = digits
    ensemble = tfkd.Ensemble(members, average="probabilities")
    path = tmp_path / "ensemble.keras"
    ensemble.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, tfkd.Ensemble) and loaded.average == "probabilities"
    np.testing.assert_allclose(loaded.predict(x[:20], verbose=0),
                               ensemble.predict(x[:20], verbose=0), rtol=1e-6)


def test_load_from_member_files(digits, members, tmp_path):
    x, _ = digits
    paths = []
    for i, m in enumerate(members):
        paths.append(tmp_path / f"m{i}.keras")
        m.save(paths[-1])
    loaded = tfkd.Ensemble.load(paths)
    np.testing.assert_allclose(loaded.predict(x[:20], verbose=0),
                               tfkd.Ensemble(members).predict(x[:20], verbose=0), rtol=1e-6)


def test_evaluate_with_keras_and_members_report(digits, members):
    x, y = digits
    ensemble = tfkd.Ensemble(members)
    ensemble.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"])
    keras_result = ensemble.evaluate(x, y, verbose=0, return_dict=True)
    report = ensemble.evaluate_members(x, y)
    assert len(report["members"]) == 3
    np.testing.assert_allclose(report["ensemble"]["accuracy"], keras_result["accuracy"], atol=1e-6)
    np.testing.assert_allclose(report["ensemble"]["nll"], keras_result["loss"], rtol=1e-4)
    logits = np.stack([m.predict(x, verbose=0) for m in members])
    assert report["disagreement"] == pytest.approx(metrics.pairwise_disagreement(logits))
    assert report["members"][1]["accuracy"] == pytest.approx(metrics.accuracy(y, logits[1]))
    np.testing.assert_allclose(report["logits"], ensemble.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_bad_members():
    with pytest.raises(ValueError, match="at least one member"):
        tfkd.Ensemble([])
    with pytest.raises(ValueError, match="unknown average 'median'"):
        tfkd.Ensemble([make_tiny_cnn(1)], average="median")
    with pytest.raises(ValueError, match="ensemble member 1 predicts 3 classes"):
        tfkd.Ensemble([make_tiny_cnn(1), make_tiny_cnn(2, num_classes=3)])


@pytest.mark.parametrize("average", ["logits", "probabilities"])
def test_members_that_output_probabilities(digits, members, average):
    x, y = digits
    softmax_members = []
    for m in members:
        probs = keras.layers.Softmax()(m.outputs[0])
        softmax_members.append(keras.Model(m.inputs, probs))
    with pytest.raises(ValueError, match="ensemble member 0 ends in a softmax"):
        tfkd.Ensemble(softmax_members, average=average)
    from_probs = tfkd.Ensemble(softmax_members, average=average, member_outputs="probabilities")
    from_logits = tfkd.Ensemble(members, average=average)
    np.testing.assert_allclose(metrics.softmax(from_probs.predict(x[:20], verbose=0)),
                               metrics.softmax(from_logits.predict(x[:20], verbose=0)),
                               rtol=1e-4, atol=1e-6)
    report = from_probs.evaluate_members(x[:200], y[:200])
    assert report["ensemble"]["accuracy"] == pytest.approx(
        from_logits.evaluate_members(x[:200], y[:200])["ensemble"]["accuracy"])
