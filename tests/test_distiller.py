"""Invariants of the Distiller, checked on scikit-learn's digits."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_tiny_cnn

import tfkd
from tfkd import terms as terms_lib
from tfkd.distiller import Distiller, Hint, with_teacher_logits

BATCH = 32


def trained_teachers(digits, seeds=(1, 2, 3), epochs=2):
    x, y = digits
    teachers = []
    for seed in seeds:
        model = make_tiny_cnn(seed)
        model.compile(optimizer=keras.optimizers.Adam(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:512], y[:512], epochs=epochs, batch_size=64, verbose=0, shuffle=False)
        teachers.append(model)
    return teachers


@pytest.fixture(scope="module")
def teachers(digits):
    return trained_teachers(digits)


def feature_hint(weight):
    return Hint(teacher_layer="features", student_layer="features", weight=weight)


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def one_sgd_step(model, x, y, **compile_kwargs):
    model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kwargs)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)


# -- alpha = 1 is plain cross-entropy ------------------------------------------


def test_alpha_one_is_plain_cross_entropy_loss_and_gradients(digits, teachers):
    x, y = digits
    xb, yb = x[:BATCH], y[:BATCH]
    student = make_tiny_cnn(7, batch_norm=False)
    distiller = Distiller(student=student, teachers=teachers, alpha=1.0, temperature=3.0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    with tf.GradientTape(persistent=True) as tape:
        logits = student(xb, training=True)
        reference = ce(yb, logits)
        terms = distiller._loss_terms(yb, {"logits": logits}, {"logits": teachers[0](xb)}, None)
    np.testing.assert_array_equal(terms["loss"].numpy(), reference.numpy())
    for g_ref, g in zip(tape.gradient(reference, student.trainable_weights),
                        tape.gradient(terms["loss"], student.trainable_weights)):
        np.testing.assert_array_equal(g.numpy(), g_ref.numpy())


def test_alpha_one_fit_equals_plain_keras_fit(digits):
    x, y = digits
    xb, yb = x[:BATCH], y[:BATCH]
    plain, student = make_tiny_cnn(7), make_tiny_cnn(7)
    one_sgd_step(plain, xb, yb, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    one_sgd_step(Distiller(student=student, teachers=None, alpha=1.0), xb, yb)
    for w_plain, w in zip(weights_of(plain), weights_of(student)):
        np.testing.assert_allclose(w, w_plain, rtol=1e-6, atol=1e-7)
    assert not np.allclose(weights_of(student)[0], weights_of(make_tiny_cnn(7))[0])


# -- the teachers never change -------------------------------------------------


def test_teacher_weights_bit_identical_after_fit(digits, teachers):
    x, y = digits
    before = [weights_of(t) for t in teachers]
    distiller = Distiller(student=make_tiny_cnn(8), teachers=teachers, alpha=0.3, temperature=4.0,
                          hint=feature_hint(0.5))
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    distiller.fit(x[:256], y[:256], batch_size=BATCH, epochs=2, verbose=0)
    for t, w_before in zip(teachers, before):
        assert not t.trainable
        for a, b in zip(w_before, weights_of(t)):
            np.testing.assert_array_equal(a, b)
    teacher_ids = {id(v) for t in teachers for v in t.weights}
    assert not teacher_ids & {id(v) for v in distiller.trainable_weights}


# -- the KD loss against NumPy ---------------------------------------------------


@pytest.mark.parametrize("average", ["logits", "probabilities"])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_equals_numpy(digits, teachers, average, temperature):
    x, y = digits
    xb, yb = x[:BATCH], y[:BATCH]
    student = make_tiny_cnn(9, batch_norm=False)  # predict() must match the training-mode forward
    distiller = Distiller(student=student, teachers=teachers, alpha=0.0, temperature=temperature,
                          teacher_average=average)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.fit(xb, yb, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history

    member = np.stack([t.predict(xb, verbose=0) for t in teachers])
    if average == "logits":
        teacher_logits = member.mean(axis=0)
        p = np.exp(log_softmax(teacher_logits / temperature))
    else:
        # Average of the members' tempered distributions is NOT what is used:
        # the ensemble's probability average is taken first, then tempered.
        mean_probs = np.exp(log_softmax(member)).mean(axis=0)
        p = np.exp(log_softmax(np.log(mean_probs) / temperature))
    s_logits = student.predict(xb, verbose=0)
    log_q = log_softmax(s_logits / temperature)
    expected = temperature**2 * np.mean(np.sum(p * (np.log(p) - log_q), axis=-1))
    np.testing.assert_allclose(logs["distillation_loss"][0], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"][0], expected, rtol=1e-5)
    ce = -np.mean(log_softmax(s_logits)[np.arange(BATCH), yb])
    np.testing.assert_allclose(logs["student_loss"][0], ce, rtol=1e-5)
    agreement = np.mean(s_logits.argmax(-1) == member.mean(0).argmax(-1)) if average == "logits" \
        else np.mean(s_logits.argmax(-1) == mean_probs.argmax(-1))
    np.testing.assert_allclose(logs["teacher_agreement"][0], agreement)


def test_probability_mse_and_mixture_equal_numpy(digits, teachers):
    x, y = digits
    xb, yb = x[:BATCH], y[:BATCH]
    student = make_tiny_cnn(9, batch_norm=False)  # predict() must match the training-mode forward
    distiller = Distiller(student=student, teachers=teachers[0], alpha=0.25, temperature=2.0,
                          distillation_loss="probability_mse")
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.fit(xb, yb, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history
    p = np.exp(log_softmax(teachers[0].predict(xb, verbose=0) / 2.0))
    s_logits = student.predict(xb, verbose=0)
    q = np.exp(log_softmax(s_logits / 2.0))
    mse = np.mean((p - q) ** 2)
    ce = -np.mean(log_softmax(s_logits)[np.arange(BATCH), yb])
    np.testing.assert_allclose(logs["distillation_loss"][0], mse, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"][0], 0.25 * ce + 0.75 * mse, rtol=1e-5)


def test_hint_loss_equals_numpy(digits, teachers):
    x, y = digits
    xb, yb = x[:BATCH], y[:BATCH]
    student = make_tiny_cnn(9, batch_norm=False)  # predict() must match the training-mode forward
    distiller = Distiller(student=student, teachers=teachers, alpha=0.5,
                          hint=feature_hint(2.0))
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.fit(xb, yb, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history
    feats = lambda m: keras.Model(m.inputs, m.get_layer("features").output).predict(xb, verbose=0)  # noqa: E731
    adapted = distiller.hint_adapter(feats(student)).numpy()
    expected = np.mean((adapted - feats(teachers[0])) ** 2)
    np.testing.assert_allclose(logs["hint_loss"][0], expected, rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"][0],
        0.5 * logs["student_loss"][0] + 0.5 * logs["distillation_loss"][0] + 2.0 * expected,
        rtol=1e-5)


# -- precomputed teacher logits ---------------------------------------------------


def test_cached_teacher_logits_give_same_loss_and_update(digits, teachers):
    x, y = digits
    xs, ys = x[:128], y[:128]
    cached = tfkd.Ensemble(teachers).predict(xs, verbose=0)
    results = []
    for inputs, teacher_arg in ((xs, teachers), (with_teacher_logits(xs, cached), None)):
        student = make_tiny_cnn(11)
        distiller = Distiller(student=student, teachers=teacher_arg, alpha=0.3, temperature=4.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
        history = distiller.fit(inputs, ys, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        results.append((history.history, weights_of(student)))
    (online, w_online), (cache, w_cache) = results
    for key in ("loss", "distillation_loss", "student_loss", "teacher_agreement"):
        np.testing.assert_allclose(cache[key], online[key], rtol=1e-5)
    for a, b in zip(w_online, w_cache):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_hint_with_cached_logits_equals_online_teachers(digits, teachers):
    """With a hint the first teacher still runs (for its features) next to cached logits;
    the training must be the one fully online teachers give."""
    x, y = digits
    xs, ys = x[:128], y[:128]
    cached = tfkd.Ensemble(teachers).predict(xs, verbose=0)
    results = []
    for inputs in (xs, with_teacher_logits(xs, cached)):
        student = make_tiny_cnn(12)
        distiller = Distiller(student=student, teachers=teachers, alpha=0.3, temperature=4.0,
                              hint=feature_hint(0.5), seed=0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
        history = distiller.fit(inputs, ys, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        results.append((history.history, weights_of(student)))
    (online, w_online), (cache, w_cache) = results
    assert online["hint_loss"][-1] > 0
    for key in ("loss", "distillation_loss", "student_loss", "hint_loss"):
        np.testing.assert_allclose(cache[key], online[key], rtol=1e-5)
    for a, b in zip(w_online, w_cache):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cached_logits_through_tf_data(digits, teachers):
    x, y = digits
    cached = tfkd.Ensemble(teachers).predict(x[:64], verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((with_teacher_logits(x[:64], cached), y[:64])).batch(16)
    distiller = Distiller(student=make_tiny_cnn(3), teachers=None, alpha=0.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    history = distiller.fit(ds, epochs=1, verbose=0).history
    assert history["distillation_loss"][0] > 0


def test_no_teachers_and_no_cache_is_a_clear_error(digits):
    x, y = digits
    distiller = Distiller(student=make_tiny_cnn(3), teachers=None, alpha=0.5)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="teacher_logits"):
        distiller.fit(x[:32], y[:32], verbose=0)


# -- tf.distribute -----------------------------------------------------------------


def _one_step_weights(strategy, digits, teacher_weights, alpha, hint, method="kl"):
    x, y = digits
    with strategy.scope():
        teachers = []
        for seed, weights in zip((1, 2), teacher_weights):
            teacher = make_tiny_cnn(seed)
            teacher.set_weights(weights)
            teachers.append(teacher)
        # No BatchNorm in the student: per-replica batch statistics would make
        # the forward pass itself differ between 1 and 2 replicas.
        student = make_tiny_cnn(5, batch_norm=False)
        distiller = Distiller(student=student, teachers=teachers, alpha=alpha, temperature=2.0,
                              hint=hint, seed=0, distillation_loss=method)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    ds = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(64)
    history = distiller.fit(ds, epochs=1, verbose=0).history
    return weights_of(student), history


# Every method whose loss is per example (the batch-relational ones have tests of their own).
PER_EXAMPLE = [name for name in terms_lib.NAMES if not terms_lib.get(name).relational]


@pytest.mark.parametrize("alpha,hint,method", [
    (0.0, None, "kl"), (0.5, None, "kl"), (0.5, feature_hint(1.0), "kl"),
    *[(0.5, None, name) for name in PER_EXAMPLE if name != "kl"]])
def test_mirrored_two_replicas_equal_one_device(digits, teachers, mirrored_strategy, alpha, hint,
                                                method):
    teacher_weights = [weights_of(t) for t in teachers[:2]]
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    two = mirrored_strategy
    assert two.num_replicas_in_sync == 2
    w1, h1 = _one_step_weights(one, digits, teacher_weights, alpha, hint, method)
    w2, h2 = _one_step_weights(two, digits, teacher_weights, alpha, hint, method)
    moved = max(np.abs(a - b).max() for a, b in zip(w1, weights_of(make_tiny_cnn(5, batch_norm=False))))
    assert moved > 1e-3  # the step did something measurable
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for key in h1:
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-5)


def test_jit_compile_on_one_device(digits, teachers):
    x, y = digits
    distiller = Distiller(student=make_tiny_cnn(4), teachers=teachers, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
    history = distiller.fit(x[:128], y[:128], batch_size=BATCH, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][1] < history["loss"][0]


# -- call, config, saving -----------------------------------------------------------


def test_call_returns_student_output_and_evaluate_reports_student(digits, teachers):
    x, y = digits
    student = make_tiny_cnn(6)
    distiller = Distiller(student=student, teachers=teachers, alpha=0.5)
    distiller.compile(optimizer="adam")
    np.testing.assert_array_equal(distiller(x[:16]).numpy(), student(x[:16]).numpy())
    result = distiller.evaluate(x[:64], y[:64], verbose=0, return_dict=True)
    s_logits = student.predict(x[:64], verbose=0)
    ce = -np.mean(log_softmax(s_logits)[np.arange(64), y[:64]])
    np.testing.assert_allclose(result["loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], np.mean(s_logits.argmax(-1) == y[:64]))


def test_get_config_round_trip(teachers):
    distiller = Distiller(student=make_tiny_cnn(6), teachers=teachers, alpha=0.2, temperature=3.0,
                          distillation_loss="probability_mse", teacher_average="probabilities",
                          hint=feature_hint(0.1))
    clone = Distiller.from_config(distiller.get_config())
    assert (clone.alpha, clone.temperature, clone.hint) == (0.2, 3.0, distiller.hint)
    assert type(clone.distillation_loss).__name__ == "ProbabilityMatching"
    assert clone.teachers.average == "probabilities"
    assert len(clone.teachers.members) == len(teachers)


def test_saved_student_loads_without_tfkd(digits, teachers, tmp_path):
    x, y = digits
    student = make_tiny_cnn(12)
    distiller = Distiller(student=student, teachers=teachers, alpha=0.5)
    distiller.compile(optimizer="adam")
    distiller.fit(x[:128], y[:128], epochs=1, verbose=0)
    path = tmp_path / "student.keras"
    distiller.student.save(path)
    np.save(tmp_path / "x.npy", x[:50])
    np.save(tmp_path / "expected.npy", student.predict(x[:50], verbose=0))
    script = textwrap.dedent(f"""
        import sys, numpy as np, keras
        model = keras.saving.load_model({str(path)!r})
        out = model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)
        np.testing.assert_array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))
        assert not any(m.startswith("tfkd") for m in sys.modules), "tfkd was imported"
        print("OK")
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    ({"alpha": 1.5}, "alpha must be in \\[0, 1\\].*1.5"),
    ({"alpha": -0.1}, "alpha must be in \\[0, 1\\].*-0.1"),
    ({"temperature": 0.0}, "temperature must be a number > 0.*0.0"),
    ({"temperature": -2}, "temperature must be a number > 0.*-2"),
    ({"distillation_loss": "cosine"}, "unknown distillation loss 'cosine'.*dkd.*kl.*probability_mse"),
    ({"teacher_average": "median"}, "unknown teacher_average 'median'.*logits, probabilities"),
])
def test_bad_arguments_raise_clear_errors(teachers, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Distiller(student=make_tiny_cnn(0), teachers=teachers, **kwargs)


def test_empty_teacher_list():
    with pytest.raises(ValueError, match="teachers is an empty list"):
        Distiller(student=make_tiny_cnn(0), teachers=[], alpha=0.5)


def test_teachers_with_other_number_of_classes():
    with pytest.raises(ValueError, match="teacher 0 predicts 5 classes but the student predicts 10"):
        Distiller(student=make_tiny_cnn(0), teachers=[make_tiny_cnn(1, num_classes=5)])


def test_teachers_with_other_input_shape():
    with pytest.raises(ValueError, match=r"teacher 1 takes inputs of shape \(16, 16, 1\)"):
        Distiller(student=make_tiny_cnn(0),
                  teachers=[make_tiny_cnn(1), make_tiny_cnn(2, input_shape=(16, 16, 1))])


def test_hint_layer_missing(teachers):
    with pytest.raises(ValueError, match="the student has no layer named 'nope'"):
        Distiller(student=make_tiny_cnn(0), teachers=teachers,
                  hint=Hint(teacher_layer="features", student_layer="nope"))


def test_keras_callbacks_know_metric_directions(digits, teachers):
    x, y = digits
    distiller = Distiller(student=make_tiny_cnn(6), teachers=teachers, alpha=0.5)
    distiller.compile(optimizer="adam")
    checkpoint = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=10)
    history = distiller.fit(x[:128], y[:128], validation_data=(x[128:192], y[128:192]),
                            epochs=2, verbose=0, callbacks=[checkpoint])
    assert checkpoint.monitor_op is not None and len(history.history["val_accuracy"]) == 2


def test_compile_refuses_a_loss(teachers):
    distiller = Distiller(student=make_tiny_cnn(6), teachers=teachers)
    with pytest.raises(ValueError, match="builds its own loss"):
        distiller.compile(optimizer="adam", loss="mse")


# -- alpha outside [0, 1] ------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.5, -0.25])
def test_alpha_outside_unit_interval_needs_extrapolate(digits, teachers, alpha):
    x, y = digits
    xb, yb = x[:BATCH], y[:BATCH]
    student = make_tiny_cnn(7, batch_norm=False)
    with pytest.raises(ValueError, match="extrapolate=True"):
        Distiller(student=student, teachers=teachers, alpha=alpha)
    distiller = Distiller(student=student, teachers=teachers, alpha=alpha, extrapolate=True,
                          temperature=2.0)
    logits, teacher_logits = student(xb), distiller.teachers(xb)
    terms = distiller._loss_terms(yb, {"logits": logits}, {"logits": teacher_logits}, None)
    # Both terms keep their (possibly negative) weights.
    expected = (alpha * terms["student_loss"].numpy()
                + (1 - alpha) * terms["distillation_loss"].numpy())
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-6)
    assert Distiller.from_config(distiller.get_config()).alpha == alpha


def test_alpha_one_with_cached_teacher_logits_trains(digits, teachers):
    """Cached logits fed to an alpha = 1 Distiller (a self-distillation step whose estimated
    alpha is 1) are ignored, not an error."""
    x, y = digits
    student = make_tiny_cnn(7)
    distiller = Distiller(student=student, teachers=None, alpha=1.0)
    distiller.compile(optimizer="adam")
    logits = teachers[0].predict(x[:64], verbose=0)
    distiller.fit(with_teacher_logits(x[:64], logits), y[:64], batch_size=32, epochs=1,
                  verbose=0)
