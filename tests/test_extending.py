"""docs/extending.md's examples run as written: each method's loss against NumPy, trained in
a Distiller; and a logit method is one file (written into a copy of the package, the
command takes it by name). The examples register their classes in a scratch registry here,
so they do not leak into the real one for the tests that follow."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import make_tiny_cnn
from helpers.command import ROOT
from helpers.examples import markdown_example
from tfkd import terms
from tfkd.distiller import Distiller
from tfkd.terms import base

PAGE = "docs/extending.md"


@pytest.fixture
def example(monkeypatch):
    """A function running an example of the page: its namespace. What it registers (the
    term registry, Keras's serializables) is taken back after the test."""
    monkeypatch.setattr(base, "REGISTRY", dict(base.REGISTRY))
    custom = keras.saving.get_custom_objects()
    before = dict(custom)

    def run(name):
        namespace = {"__name__": f"extending_example_{name}"}
        exec(compile(markdown_example(PAGE, name), f"{PAGE} example {name}", "exec"), namespace)
        return namespace

    yield run
    custom.clear()
    custom.update(before)


def log_softmax(z, t):
    z = np.asarray(z, np.float64) / t
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def reverse_kl(teacher, student, t):
    """T^2 * sum_c q_c (log q_c - log p_c), q the student's softened distribution."""
    log_p, log_q = log_softmax(teacher, t), log_softmax(student, t)
    return t * t * (np.exp(log_q) * (log_q - log_p)).sum(axis=-1)


def attention_transfer(teacher_map, student_map, p=2.0):
    """Zagoruyko & Komodakis: ||a_s - a_t||^2 / (H W), a = vec(mean_c |F|^p) / its norm."""
    def attention(f):
        a = (np.abs(np.asarray(f, np.float64)) ** p).mean(axis=-1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=-1, keepdims=True)
    return ((attention(student_map) - attention(teacher_map)) ** 2).mean(axis=-1)


def dense_models(classes=5, seeds=(1, 2)):
    def model(seed):
        inputs = keras.Input((6,))
        h = keras.layers.Dense(16, activation="relu",
                               kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
        return keras.Model(inputs, keras.layers.Dense(
            classes, kernel_initializer=keras.initializers.GlorotUniform(seed + 7))(h))
    return [model(seed) for seed in seeds]


def test_the_logit_example_is_reverse_kl_and_trains_in_a_distiller(example):
    ReverseKD = example("logit_method")["ReverseKD"]
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(2, 16, 5)) * 3
    term = ReverseKD(temperature=2.0)
    np.testing.assert_allclose(term(t, s), reverse_kl(t, s, 2.0), rtol=1e-5, atol=1e-6)
    assert ReverseKD.from_config(term.get_config()).temperature == 2.0
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        ReverseKD(temperature=0)

    student, teacher = dense_models()
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 5, 64)
    distiller = Distiller(student=student, teachers=teacher, alpha=0.0, terms=[(term, 1.0)])
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))  # nothing moves: values compare
    logged = distiller.fit(x, y, epochs=1, batch_size=64, verbose=0).history["reverse_kl_loss"]
    expected = reverse_kl(teacher.predict(x, verbose=0), student.predict(x, verbose=0), 2.0)
    np.testing.assert_allclose(logged[0], expected.mean(), rtol=1e-5)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    losses = distiller.fit(x, y, epochs=20, batch_size=16, verbose=0).history["reverse_kl_loss"]
    assert losses[-1] < 0.5 * losses[0]  # the student moves towards the teacher


def test_the_feature_example_is_attention_transfer_and_trains_in_a_distiller(example):
    AttentionTransfer = example("feature_method")["AttentionTransfer"]
    rng = np.random.default_rng(1)
    t_map, s_map = rng.normal(size=(2, 4, 5, 5, 3)).astype("float32")
    term = AttentionTransfer("conv")
    as_tensor = keras.ops.convert_to_tensor  # a Keras layer takes tensors in a dict, not arrays
    np.testing.assert_allclose(
        term({"layers": {"conv": as_tensor(t_map)}}, {"layers": {"conv": as_tensor(s_map)}}),
        attention_transfer(t_map, s_map), rtol=1e-5, atol=1e-8)

    digits = __import__("sklearn.datasets", fromlist=["load_digits"]).load_digits()
    x = (digits.images[:128] / 16.0).astype("float32")[..., None]
    y = digits.target[:128].astype("int32")
    student, teacher = make_tiny_cnn(1), make_tiny_cnn(2)
    with pytest.raises(ValueError, match="the student has no layer named 'nope'; its layers"):
        Distiller(student=student, teachers=teacher, terms=[AttentionTransfer("nope")])
    distiller = Distiller(student=student, teachers=teacher, alpha=1.0,
                          terms=[(term, 1000.0)])
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logged = distiller.fit(x, y, epochs=1, batch_size=128, verbose=0).history
    maps = [keras.Model(m.input, m.get_layer("conv").output).predict(x, verbose=0)
            for m in (teacher, student)]
    np.testing.assert_allclose(logged["at_loss"][0], attention_transfer(*maps).mean(),
                               rtol=1e-4)
    np.testing.assert_allclose(logged["loss"][0],
                               logged["student_loss"][0] + 1000.0 * logged["at_loss"][0],
                               rtol=1e-5)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    losses = distiller.fit(x, y, epochs=15, batch_size=32, verbose=0).history["at_loss"]
    assert losses[-1] < 0.5 * losses[0]  # the student's attention moves towards the teacher's


def tfkd_of(package, *args):
    """The command of the package copy at `package`, in a subprocess (a process imports a
    package once: the copy must be the only tfkd it sees)."""
    env = {**os.environ, "PYTHONPATH": str(package), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "tfkd", *args], capture_output=True,
                            text=True, env=env, cwd=package, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_method_is_its_file_and_its_settings_for_the_command(tmp_path):
    """The page's claims: `tfkd/terms/<name>.py` alone makes --distillation_loss=<name>; a
    feature method adds its layer setting to config.py, and its teacher runs for its layers
    while the cache serves the logits. The examples are written into a copy of the package,
    whose command trains with them."""
    package = tmp_path / "package"
    shutil.copytree(os.path.join(ROOT, "tfkd"), package / "tfkd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "tfkd" / "terms" / "reverse_kl.py").write_text(
        markdown_example(PAGE, "logit_method"))
    (package / "tfkd" / "terms" / "at.py").write_text(markdown_example(PAGE, "feature_method"))
    config = package / "tfkd" / "config.py"
    text = config.read_text()
    group = "    # --- method: each distillation method's own settings"
    assert text.count(group) == 1
    config.write_text(text.replace(group, markdown_example(PAGE, "feature_setting") + group))

    runs = {"reverse_kl": ("--model=mlp", "--temperature=2"),
            "at": ("--model=cnn", "--at_layer=last_conv")}
    for method, extra in runs.items():
        workdir = tmp_path / method
        tfkd_of(package, "--mode=pipeline", "--smoke", "--num_models=1", *extra,
                f"--distillation_loss={method}", f"--workdir={workdir}")
        record = json.load(open(workdir / "metrics" / "distilled.json"))
        assert record["settings"]["distillation_loss"] == method
    assert record["settings"]["at_layer"] == "last_conv"
    assert "reverse_kl" not in terms.NAMES  # and the real package is as it was
