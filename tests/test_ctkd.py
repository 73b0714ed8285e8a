"""CTKD (tfkd.terms.ctkd): KD at a learned temperature that ascends the loss through a gradient
reversal on a cosine curriculum, checked against independent NumPy computations of the
authors' code (/work/shared/METHODS.md, "CTKD"), in a Distiller, saved, and resumed."""

import json
import math
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from helpers.command import ok, tfkd as run_tfkd
from tfkd import terms
from tfkd.distiller import Distiller
from tfkd.terms import ctkd as ctkd_lib


def _logits(seed, shape=(6, 5)):
    return np.random.default_rng(seed).normal(scale=3.0, size=shape).astype("float32")


def kd_numpy(t, s, temperature):
    """T^2 * KL(softmax(t / T) || softmax(s / T)) per example, in float64."""
    t, s = np.asarray(t, np.float64) / temperature, np.asarray(s, np.float64) / temperature
    log_p = t - np.log(np.exp(t - t.max(-1, keepdims=True)).sum(-1, keepdims=True)) - t.max(
        -1, keepdims=True)
    log_q = s - np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1, keepdims=True)) - s.max(
        -1, keepdims=True)
    return temperature ** 2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)


def temperature_numpy(theta, low=1.0, high=21.0):
    return low + (high - low) / (1.0 + math.exp(-theta))


def reference_lambda(epoch_from_one, decay_epochs=10):
    """The authors' CosineDecay(max_value=0, min_value=-1, num_loops=10).get_value(epoch),
    epochs counted from 1: the factor their reversal-free GRL multiplies theta's gradient by."""
    i = min(max(epoch_from_one, 0), decay_epochs)
    return (math.cos(i * math.pi / decay_epochs) + 1.0) * 0.5 * (0 - (-1)) + (-1)


def test_the_loss_is_kd_at_the_temperature_theta_gives():
    t, s = _logits(0), _logits(1)
    term = terms.CTKD(temperature=4.0, min_temperature=2.0, max_temperature=12.0)
    assert abs(term.temperature_now - 4.0) < 1e-5  # it starts where asked
    term.theta.assign(0.3)
    expected = kd_numpy(t, s, temperature_numpy(0.3, 2.0, 12.0))
    for epoch in (None, tf.constant(0, "int64"), tf.constant(30, "int64")):
        np.testing.assert_allclose(term(t, s, epoch=epoch), expected, rtol=1e-5, atol=1e-6)
    assert abs(term.temperature_now - temperature_numpy(0.3, 2.0, 12.0)) < 1e-5


def test_the_authors_start_is_theta_one():
    term = terms.CTKD(temperature=temperature_numpy(1.0))
    assert abs(float(term.theta.numpy()) - 1.0) < 1e-5
    assert abs(term.temperature_now - 15.621171) < 1e-4


def test_lambda_follows_the_authors_cosine_curriculum_from_epoch_zero():
    for epoch in range(14):
        # Their epoch e + 1 is the Distiller's epoch e; their lambda goes 0 -> -1 and their
        # reversal has no minus sign: tfkd's reversal of weight lambda is theirs negated.
        expected = -reference_lambda(epoch + 1)
        got = float(ctkd_lib.reversal_weight(tf.constant(epoch, "int64"), 1.0, 10))
        assert abs(got - expected) < 1e-6, epoch
    assert abs(float(ctkd_lib.reversal_weight(tf.constant(9, "int64"), 1.0, 10)) - 1.0) < 1e-7
    assert float(ctkd_lib.reversal_weight(tf.constant(0, "int64"), 1.0, 10)) < 0.03
    assert float(ctkd_lib.reversal_weight(tf.constant(2, "int64"), 0.5, 4)) == pytest.approx(
        0.5 * (1 - math.cos(math.pi * 3 / 4)) / 2)
    assert float(ctkd_lib.reversal_weight(tf.constant(0, "int64"), 0.7, 0)) == pytest.approx(0.7)
    assert float(ctkd_lib.reversal_weight(None, 0.7, 10)) == pytest.approx(0.7)


@pytest.mark.parametrize("epoch", [0, 4, 9, 20])
def test_theta_gets_minus_lambda_times_the_plain_gradient_and_the_student_the_plain_one(epoch):
    t, s = tf.constant(_logits(2)), tf.Variable(_logits(3))
    term = terms.CTKD(temperature=7.0)
    term.theta.assign(0.4)
    with tf.GradientTape(persistent=True) as tape:
        reversed_loss = term.loss(t, s, epoch=tf.constant(epoch, "int64"))
        # The same loss without the reversal: T from a plain variable.
        theta = tf.Variable(0.4)
        plain_loss = tf.reduce_mean(terms.base.soft_target_kl(
            t, s, 1.0 + 20.0 * tf.sigmoid(theta)))
    weight = -reference_lambda(epoch + 1)
    plain = float(tape.gradient(plain_loss, theta))
    assert abs(plain) > 1e-4  # a gradient to compare
    np.testing.assert_allclose(float(tape.gradient(reversed_loss, term.theta)), -weight * plain,
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(tape.gradient(reversed_loss, s), tape.gradient(plain_loss, s),
                               rtol=1e-6, atol=1e-9)
    assert float(reversed_loss) == pytest.approx(float(plain_loss), rel=1e-6)


def test_one_sgd_step_moves_the_temperature_up_the_kd_loss():
    """With lambda > 0 the temperature ascends the loss the student descends: theta's SGD
    update is +lr * lambda * weight * dKD/dtheta, dKD/dtheta by central differences in
    float64 at the student's outputs before the step."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 5, 32)
    cached = _logits(5, (32, 5))
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(
        5, kernel_initializer=keras.initializers.GlorotUniform(7))])
    term = terms.CTKD(temperature=3.0, lambda_max=0.5, lambda_epochs=0)
    distiller = Distiller(student=student, teachers=None, alpha=0.25, terms=[(term, 0.75)])
    lr = 0.1
    distiller.compile(optimizer=keras.optimizers.SGD(lr))
    before = float(term.theta.numpy())
    s = student.predict(x, verbose=0)

    def kd(theta):
        return kd_numpy(cached, s, temperature_numpy(theta)).mean()

    h = 1e-4
    slope = (kd(before + h) - kd(before - h)) / (2 * h)
    assert abs(slope) > 1e-3
    distiller.fit(tfkd.with_teacher_logits(x, cached), y, batch_size=32, epochs=1, verbose=0)
    step = float(term.theta.numpy()) - before
    np.testing.assert_allclose(step, lr * 0.5 * 0.75 * slope, rtol=1e-3)
    assert kd(before + step) > kd(before)  # the KD loss went up along theta's step


def test_it_trains_in_a_distiller_on_cached_logits_and_logs_the_temperature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 4, 64)
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(
        4, kernel_initializer=keras.initializers.GlorotUniform(1))])
    cached = 3.0 * teacher.predict(x, verbose=0)
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(
        4, kernel_initializer=keras.initializers.GlorotUniform(2))])
    distiller = Distiller(student=student, teachers=None, alpha=0.5, temperature=4.0,
                          distillation_loss="ctkd")
    term = distiller.terms[0]
    assert isinstance(term, terms.CTKD) and term.temperature_now == pytest.approx(4.0)
    assert any(v is term.theta for v in distiller.trainable_weights)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05))
    data = tfkd.with_teacher_logits(x, cached)
    history = distiller.fit(data, y, batch_size=16, epochs=4, verbose=0).history
    assert np.isfinite(history["distillation_loss"]).all()
    logged = history["distillation_temperature"]  # each epoch's mean over its steps
    assert len(logged) == 4 and len(set(logged)) == 4
    assert abs(term.temperature_now - 4.0) > 0.05  # it moved
    # One step per epoch: the logged value is the temperature after that step.
    history = distiller.fit(data, y, batch_size=64, epochs=1, verbose=0).history
    assert history["distillation_temperature"] == [pytest.approx(term.temperature_now, rel=1e-6)]


def test_save_and_load_keep_theta(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(
        4, kernel_initializer=keras.initializers.GlorotUniform(2))])
    distiller = Distiller(student=student, teachers=None, alpha=0.5, temperature=9.0,
                          distillation_loss=terms.CTKD(temperature=9.0, min_temperature=2.0,
                                                       max_temperature=30.0, lambda_epochs=3))
    distiller.compile(optimizer=keras.optimizers.Adam(0.05))
    distiller.fit(tfkd.with_teacher_logits(x, _logits(1, (32, 4))), rng.integers(0, 4, 32),
                  epochs=2, verbose=0)
    theta = float(distiller.terms[0].theta.numpy())
    assert abs(distiller.terms[0].temperature_now - 9.0) > 1e-3
    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    term = loaded.terms[0]
    assert isinstance(term, terms.CTKD)
    assert (term.min_temperature, term.max_temperature, term.lambda_epochs) == (2.0, 30.0, 3)
    assert float(term.theta.numpy()) == theta


@pytest.mark.parametrize("arguments,message", [
    (dict(temperature=30.0), "temperature=30 must lie strictly between min_temperature=1 and "
                             "max_temperature=21"),
    (dict(temperature=1.0), "temperature=1 must lie strictly between"),
    (dict(temperature=3.0, min_temperature=5.0, max_temperature=2.0),
     "min_temperature=5 must be below max_temperature=2"),
    (dict(lambda_max=-1.0), "lambda_max must be a finite number >= 0"),
    (dict(lambda_epochs=1.5), "lambda_epochs must be a whole number >= 0"),
])
def test_the_class_refuses_a_temperature_outside_its_range(arguments, message):
    with pytest.raises(ValueError, match=message):
        terms.CTKD(**arguments)


@pytest.mark.parametrize("args,named", [
    (["--temperature=30"], "temperature=30 must lie strictly between ctkd_min_temperature=1 "
                           "and ctkd_max_temperature=21"),
    (["--ctkd_min_temperature=4"], "temperature=4 must lie strictly between "
                                   "ctkd_min_temperature=4"),
    (["--ctkd_min_temperature=8", "--ctkd_max_temperature=6"],
     "ctkd_min_temperature=8 must be below ctkd_max_temperature=6"),
    (["--ctkd_max_temperature=0"], "ctkd_max_temperature must be a number in (0, 10000]"),
    (["--ctkd_lambda_epochs=-1"], "ctkd_lambda_epochs must be a whole number >= 0"),
    # A search's trials start at its temperatures: T = 1 would be refused mid-search.
    (["--mode=tune"], "tune_temperature='1.0,20.0' must lie strictly between "
                      "ctkd_min_temperature=1 and ctkd_max_temperature=21"),
])
def test_the_command_refuses_them_in_one_line(tmp_path, args, named):
    result = run_tfkd(f"--workdir={tmp_path / 'run'}", "--smoke", "--distillation_loss=ctkd",
                      *args)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfkd: error:")]
    assert len(errors) == 1 and named in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_the_settings_make_the_term_and_other_methods_ignore_the_range():
    from tfkd.config import Config

    config = Config(distillation_loss="ctkd", temperature=15.5, ctkd_min_temperature=2.0,
                    ctkd_max_temperature=40.0, ctkd_lambda_max=0.5, ctkd_lambda_epochs=3)
    term = terms.from_settings("ctkd", config)
    assert (term.temperature, term.min_temperature, term.max_temperature, term.lambda_max,
            term.lambda_epochs) == (15.5, 2.0, 40.0, 0.5, 3)
    Config(distillation_loss="kl", temperature=30.0)  # the range is CTKD's alone
    Config(distillation_loss="ctkd", mode="tune", tune_temperature=(2.0, 20.0))
    Config(distillation_loss="ctkd", mode="tune", temperature=50.0,  # not used: searched
           tune_temperature=(2.0, 20.0))


# -- the command: trains, and resumes after SIGKILL exactly -----------------------------------

DISTILL = ["--dataset=digits", "--model=mlp", "--num_models=1", "--epochs=8",
           "--distillation_loss=ctkd", "--temperature=15.62", "--ctkd_lambda_epochs=3",
           "--optimizer=sgd", "--learning_rate=0.05"]


@pytest.mark.slow  # three runs of the command, 45 s on 2 busy cores
def test_a_ctkd_student_killed_mid_fit_resumes_as_an_uninterrupted_run(tmp_path):
    from test_reliability import saved_epoch, stop_when
    from test_faults import assert_same_weights
    import subprocess
    import sys

    from helpers.command import ROOT, process_env

    members = tmp_path / "members"
    ok(run_tfkd("--mode=train", "--dataset=digits", "--model=mlp", "--num_models=1",
                "--epochs=4", f"--workdir={members}"))

    def start(workdir):
        return subprocess.Popen(
            [sys.executable, "-m", "tfkd", "--mode=distill", *DISTILL, "--deterministic",
             f"--teacher_dir={members}", f"--workdir={workdir}"], env=process_env(), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference = tmp_path / "reference"
    clean = start(reference)
    _, stderr = clean.communicate(timeout=600)
    assert clean.returncode == 0, stderr[-2000:]
    killed = tmp_path / "killed"
    code, _ = stop_when(start(killed), lambda: saved_epoch(str(killed), "distilled") >= 3,
                        signal.SIGKILL)
    assert code == -signal.SIGKILL
    resumed = start(killed)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-2000:]
    assert "distilled: resuming after epoch" in stderr
    assert_same_weights(str(killed), str(reference))
    history = json.load(open(killed / "metrics" / "distilled.json"))["history"]
    expected = json.load(open(reference / "metrics" / "distilled.json"))["history"]
    # The learned temperature of every epoch, bit for bit: theta resumed with the student.
    assert history == expected and len(history["distillation_temperature"]) == 8
    assert len(set(history["distillation_temperature"])) == 8
