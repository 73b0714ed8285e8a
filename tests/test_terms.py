"""Distillation terms (tfkd.terms): the registry, the Distiller's use of terms, saved files of
earlier versions, and each method against an independent NumPy computation of its paper's
formula (tests/helpers/reference_losses.py)."""

import os

import keras
import numpy as np
import pytest

import tfkd
from tfkd import terms
from tfkd.distiller import Distiller

DATA = os.path.join(os.path.dirname(__file__), "data")


# -- files saved before terms (tfkd c52b635) still load ----------------------------------------

@pytest.mark.parametrize("kind", ["kd", "hint"])
def test_distillers_saved_before_terms_load_with_every_weight(kind):
    x = np.load(os.path.join(DATA, "distiller_c52b635_inputs.npy"))
    expected = np.load(os.path.join(DATA, "distiller_c52b635_expected.npz"))
    distiller = keras.saving.load_model(os.path.join(DATA, f"distiller_c52b635_{kind}.keras"))
    np.testing.assert_allclose(distiller.student.predict(x, verbose=0), expected[kind],
                               rtol=1e-5, atol=1e-6)
    if kind == "hint":
        np.testing.assert_array_equal(distiller.hint_adapter.kernel.numpy(),
                                      expected["adapter_kernel"])
        assert distiller._term_logs == ("distillation_loss", "hint_loss")
    assert int(distiller.optimizer.iterations.numpy()) == 2  # its saved state loaded
    # It trains on: the optimizer's saved state matched its variables.
    y = np.arange(len(x)) % 3
    history = distiller.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert np.isfinite(history["loss"][0])


# -- the registry --------------------------------------------------------------------------

def test_the_registry_is_the_package_and_every_method_registers_its_own_name():
    import pkgutil

    from tfkd.config import choices_of

    modules = {m.name for m in pkgutil.iter_modules(terms.__path__)} - {"base"}
    assert set(terms.NAMES) == modules - {"hint"}  # the hint is added by --hint_layer
    assert choices_of("distillation_loss") == terms.NAMES
    for name in modules:
        cls = terms.get(name)
        assert cls.key == name and issubclass(cls, terms.Term)
        assert getattr(terms, cls.__name__) is cls  # from tfkd.terms import DKD
    with pytest.raises(ValueError, match="unknown distillation method 'nope'; choose one of: "):
        terms.get("nope")


def test_every_method_setting_names_an_argument_of_its_method():
    import inspect

    from tfkd.config import FIELDS

    for name in terms.NAMES:
        cls = terms.get(name)
        arguments = inspect.signature(cls.__init__).parameters
        for setting, argument in cls.settings.items():
            assert setting in FIELDS and argument in arguments, (name, setting)
            methods = FIELDS[setting].metadata["methods"]
            assert not methods or name in methods, (name, setting)
    for setting, field in FIELDS.items():  # and a method setting is read by its methods
        for name in field.metadata["methods"]:
            assert setting in terms.get(name).settings, (setting, name)


# -- the Distiller with terms ----------------------------------------------------------------

def _models(classes=4, seeds=(1, 2, 3)):
    def model(seed):
        inputs = keras.Input((6,))
        h = keras.layers.Dense(8, activation="relu", name="features",
                               kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
        out = keras.layers.Dense(classes,
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 7))(h)
        return keras.Model(inputs, out)
    return [model(seed) for seed in seeds]


def _data(n=32, classes=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, classes, n)


def test_dkd_refuses_two_classes_where_it_is_undefined():
    student, teacher = _models(classes=2, seeds=(1, 2))
    with pytest.raises(ValueError, match="DKD needs 3 or more classes, the student has 2"):
        Distiller(student=student, teachers=teacher, distillation_loss="dkd")
    with pytest.raises(ValueError, match="DKD needs 3 or more classes"):
        terms.DKD()(np.zeros((2, 2)), np.zeros((2, 2)), labels=np.zeros(2, int))


def test_terms_list_trains_weighted_and_logs_each_term():
    student, t1, t2 = _models()
    x, y = _data()
    dkd = terms.DKD(beta=2.0, temperature=2.0, warmup_epochs=0)
    kd = terms.KD(temperature=3.0)
    distiller = Distiller(student=student, teachers=[t1, t2], alpha=0.25,
                          terms=[(dkd, 0.5), kd])
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))  # nothing moves: values compare
    logs = distiller.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    assert {"dkd_loss", "kl_loss", "student_loss"} <= set(logs)
    assert "distillation_loss" not in logs  # terms= replaces the shortcut
    teacher = {"logits": distiller.teachers(x)}
    s = student(x)
    expected = {"dkd_loss": float(dkd.loss(teacher, s, labels=y)),
                "kl_loss": float(kd.loss(teacher, s))}
    for name, value in expected.items():
        np.testing.assert_allclose(logs[name][0], value, rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"][0], 0.25 * logs["student_loss"][0] + 0.5 * expected["dkd_loss"]
        + expected["kl_loss"], rtol=1e-5)
    clone = Distiller.from_config(distiller.get_config())
    assert [(type(t).__name__, w) for t, w in clone._explicit_terms] == [("DKD", 0.5), ("KD", 1.0)]
    assert clone.terms[0].beta == 2.0


def test_every_method_trains_from_cached_logits_with_no_teacher_model():
    """teachers=None: a forward pass of the teachers is impossible, so what trains here
    trains from the cache alone (each teacher's logits, (N, M, C), for methods that read
    them)."""
    x, y = _data(64)
    student_models = _models(seeds=(11, 12, 13))
    t1, t2, _ = _models()
    members = np.stack([t1.predict(x, verbose=0), t2.predict(x, verbose=0)], axis=1)
    for name, student in zip(terms.NAMES, _models(seeds=range(20, 20 + len(terms.NAMES)))):
        cls = terms.get(name)
        if "layers" in cls.reads:  # a feature method reads a teacher model's layers
            continue
        cached = members if "members" in cls.reads else members.mean(axis=1)
        distiller = Distiller(student=student, teachers=None, alpha=0.5, distillation_loss=name)
        distiller.compile(optimizer="adam")
        logs = distiller.fit(tfkd.with_teacher_logits(x, cached), y, batch_size=16, epochs=2,
                             verbose=0).history
        assert np.isfinite(logs["distillation_loss"]).all(), name


class EpochTerm(terms.Term):
    """A loss equal to the epoch the training loop is in."""

    def call(self, teacher, student, labels=None, epoch=None):
        return keras.ops.zeros_like(student["logits"][:, 0]) + keras.ops.cast(epoch, "float32")


def test_terms_read_the_training_loops_epoch_also_when_a_fit_resumes():
    student, teacher, _ = _models()
    x, y = _data()
    distiller = Distiller(student=student, teachers=teacher, alpha=0.5, terms=[EpochTerm()])
    distiller.compile(optimizer="sgd")
    logs = distiller.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    assert logs["epoch_term_loss"] == [0.0, 1.0, 2.0]
    resumed = distiller.fit(x, y, epochs=5, initial_epoch=3, batch_size=16, verbose=0).history
    assert resumed["epoch_term_loss"] == [3.0, 4.0]
