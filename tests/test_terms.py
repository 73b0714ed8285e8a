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

    modules = {m.name for m in pkgutil.iter_modules(terms.__path__)
               if not m.name.startswith("_")} - {"base"}
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


# -- the command line: bad input is one line, exit 2, nothing written ------------------------

def _refused(result, *phrases):
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("tfkd: error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def _two_class_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "two.npz"
    np.savez(path, x_train=rng.normal(size=(200, 6)).astype("float32"),
             y_train=np.arange(200) % 2, x_test=rng.normal(size=(40, 6)).astype("float32"),
             y_test=np.arange(40) % 2)
    return path


@pytest.mark.parametrize("argv,phrases", [
    (["--distillation_loss=nope"], ["unknown distillation_loss 'nope'; choose one of:", "dkd"]),
    (["--distillation_loss=dkd", "--dkd_beta=-1"], ["dkd_beta must be", "got -1"]),
    (["--distillation_loss=kl", "--dkd_beta=2"],
     ["dkd_beta=2.0 is a setting of --distillation_loss=dkd, but this run's is 'kl'"]),
    (["--mode=distill", "--distillation_loss=ebkd", "--num_models=1"],
     ["distillation_loss=ebkd", "needs 2 or more teachers", "--num_models=1"]),
    (["--mode=self_distill", "--distillation_loss=camkd", "--num_models=2"],
     ["distillation_loss=camkd", "self-distillation students, of one teacher each"]),
    (["--mode=pipeline", "--distillation_loss=mt_kd", "--num_models=1"],
     ["distillation_loss=mt_kd", "needs 2 or more teachers", "--num_models=1"]),
])
def test_bad_method_settings_are_one_line_and_write_nothing(tmp_path, argv, phrases):
    from helpers.command import tfkd as run

    workdir = tmp_path / "w"
    _refused(run("--smoke", "--model=mlp", *argv, f"--workdir={workdir}"), *phrases)
    assert not workdir.exists()


@pytest.mark.parametrize("method", ["dkd", "nkd"])
def test_methods_undefined_for_two_classes_are_refused_before_anything_trains(tmp_path, method):
    from helpers.command import tfkd as run

    workdir = tmp_path / "w"
    _refused(run("--smoke", "--model=mlp", "--mode=pipeline", f"--distillation_loss={method}",
                 f"--dataset=npz:{_two_class_npz(tmp_path)}", f"--workdir={workdir}"),
             f"distillation_loss={method}", "needs 3 or more classes, the student has 2")
    assert not os.path.exists(workdir / "models")


# -- a batch-relational method under several replicas ------------------------------------------

class DISTByHalves(terms.DIST):
    """DIST whose intra-class relation is taken over each half of the batch and averaged:
    what the docs say DIST computes on 2 replicas of an evenly split batch."""

    def call(self, teacher, student, labels=None, epoch=None):
        half = 32  # of the test's batch of 64
        parts = [super(DISTByHalves, self).call({"logits": teacher["logits"][i:i + half]},
                                                {"logits": student["logits"][i:i + half]})
                 for i in (0, half)]
        return keras.ops.concatenate(parts, axis=0)


def _dist_step(strategy, term_class, x, y, teacher_weights):
    import tensorflow as tf

    with strategy.scope():
        student, teacher = _models(seeds=(5, 6))
        teacher.set_weights(teacher_weights)
        distiller = Distiller(student=student, teachers=teacher, alpha=0.5,
                              terms=[(term_class(beta=1.0, gamma=4.0, temperature=2.0), 1.0)])
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    distiller.fit(ds, epochs=1, verbose=0)
    return [w.numpy() for w in student.weights]


def test_dist_on_two_replicas_relates_each_replicas_share_of_the_batch(mirrored_strategy):
    import tensorflow as tf

    x, y = _data(64)
    teacher_weights = _models(seeds=(9,))[0].get_weights()
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    two = _dist_step(mirrored_strategy, terms.DIST, x, y, teacher_weights)
    halves = _dist_step(one, DISTByHalves, x, y, teacher_weights)
    whole = _dist_step(one, terms.DIST, x, y, teacher_weights)
    for a, b in zip(two, halves):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # ... which is not the update of the relation over the global batch.
    assert max(np.abs(a - b).max() for a, b in zip(two, whole)) > 1e-4


# -- BackupAndRestore resumes every method where it stopped ------------------------------------

class _Stop(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after:
            raise KeyboardInterrupt  # as a user's Ctrl-C, after the backup of this epoch


def _backup_run(name, backup_dir, stop_after=None):
    keras.utils.set_random_seed(0)
    student, t1, t2 = _models()
    x, y = _data(48)
    distiller = Distiller(student=student, teachers=[t1, t2], alpha=0.5, temperature=2.0,
                          distillation_loss=terms.from_settings(name, _settings(name)))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    callbacks = [keras.callbacks.BackupAndRestore(str(backup_dir))]
    if stop_after is not None:
        callbacks.append(_Stop(stop_after))
    distiller.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
    return [w.numpy() for w in distiller.trainable_weights]


def _settings(name):
    """The command line's defaults for method `name`, with schedules short enough to matter
    within 4 epochs."""
    from tfkd.config import Config

    own = {"dkd": {"dkd_warmup_epochs": 3}, "ctkd": {"ctkd_lambda_epochs": 3}}
    return Config(distillation_loss=name, temperature=2.0, **own.get(name, {}))


@pytest.mark.parametrize("name", terms.NAMES)
def test_backup_and_restore_resumes_every_method_to_the_uninterrupted_weights(tmp_path, name):
    whole = _backup_run(name, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _backup_run(name, tmp_path / "resumed", stop_after=1)
    resumed = _backup_run(name, tmp_path / "resumed")
    assert len(whole) == len(resumed)
    for a, b in zip(whole, resumed):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- each method against the NumPy computation of its paper's formula ------------------------

def _tensors(n=16, classes=7, teachers=3, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.normal(scale=3.0, size=(n, classes)).astype("float32")
    s = rng.normal(scale=3.0, size=(n, classes)).astype("float32")
    tm = rng.normal(scale=3.0, size=(n, teachers, classes)).astype("float32")
    y = rng.integers(0, classes, n)
    return t, s, tm, y


def _close(actual, expected, tol=1e-5):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_logit_methods_equal_their_papers_formulas(temperature):
    from helpers import reference_losses as ref

    t, s, _, y = _tensors()
    T = temperature
    _close(terms.KD(temperature=T)(t, s), ref.kd(t, s, T))
    _close(terms.KD(temperature=T, standardize=True)(t, s), ref.kd_ls(t, s, T, ddof=1))
    for epoch in (None, 0, 4, 30):  # tfkd's epochs count from 0, the paper's from 1
        _close(terms.DKD(alpha=0.5, beta=8.0, temperature=T, warmup_epochs=10)(
            t, s, labels=y, epoch=epoch),
            ref.dkd(t, s, y, T, 0.5, 8.0, epoch=None if epoch is None else epoch + 1,
                    warmup=10))
    _close(terms.NKD(gamma=1.5, temperature=T)(t, s, labels=y), ref.nkd(t, s, y, T, 1.5))
    dist = terms.DIST(beta=1.0, gamma=2.0, temperature=T)
    _close(float(dist.loss(t, s)), ref.dist(t, s, T, 1.0, 2.0))


def test_dkd_parts_and_the_papers_identity_per_example():
    from helpers import reference_losses as ref

    from tfkd.terms.dkd import dkd_parts

    t, s, _, y = _tensors()
    tckd, nckd, p_target = (np.asarray(v, np.float64) for v in dkd_parts(t, s, y, 3.0))
    ref_tckd, ref_nckd, ref_p = ref.dkd_parts(t, s, y, 3.0)
    _close(tckd, ref_tckd)
    _close(nckd, ref_nckd)
    _close(p_target, ref_p)
    # KD = TCKD + (1 - p_target) * NCKD (the paper's eq. 5), in tfkd's own computation.
    _close(np.asarray(terms.KD(temperature=3.0)(t, s)), tckd + (1 - p_target) * nckd)


def test_dkd_and_nkd_stay_finite_for_a_teacher_all_but_one_hot():
    t = np.full((4, 100), -50.0, np.float32)
    t[:, 0] = 50.0
    s = np.random.default_rng(1).normal(size=(4, 100)).astype("float32")
    for labels in (np.zeros(4, int), np.ones(4, int)):  # sure of the label, or of another
        for term in (terms.DKD(temperature=1.0), terms.NKD(temperature=1.0)):
            assert np.isfinite(np.asarray(term(t, s, labels=labels))).all()


def test_logit_standardization_ignores_scale_and_shift_per_example():
    t, s, _, _ = _tensors()
    a = np.random.default_rng(2).uniform(0.5, 3.0, size=(len(t), 1)).astype("float32")
    b = np.random.default_rng(3).normal(size=(len(t), 1)).astype("float32")
    for term in (terms.KD(temperature=2.0, standardize=True),
                 terms.DKD(temperature=2.0, standardize=True),
                 terms.DIST(temperature=2.0, standardize=True)):
        labels = np.arange(len(t)) % t.shape[1]
        _close(term(a * t + b, a * s - b, labels=labels), np.asarray(term(t, s, labels=labels)),
               tol=1e-4)
    assert not np.allclose(terms.KD(temperature=2.0)(2 * t, s), terms.KD(temperature=2.0)(t, s))


def test_multi_teacher_methods_equal_their_papers_formulas():
    from helpers import reference_losses as ref

    from tfkd.terms import camkd, ebkd

    _, s, tm, y = _tensors()
    _close(terms.MeanTeacherKD(temperature=2.0)(tm, s), ref.mt_mean(tm, s, 2.0))
    _close(terms.EntropyWeightedKD(temperature=2.0)(tm, s), ref.ebkd(tm, s, 2.0))
    _close(terms.ConfidenceWeightedKD(temperature=2.0)(tm, s, labels=y), ref.camkd(tm, s, y, 2.0))
    weights = np.asarray(camkd.ConfidenceWeightedKD().teacher_weights(tm, y))
    _close(weights, ref.camkd_weights(tm, y))
    _close(weights.sum(axis=1), np.ones(len(tm)))  # CA-MKD's weights sum to 1
    _close(np.asarray(ebkd.EntropyWeightedKD().teacher_weights(tm, y)), ref.ebkd_weights(tm))


def test_multi_teacher_methods_of_identical_teachers_are_kd():
    _, s, tm, y = _tensors()
    same = np.repeat(tm[:, :1], 4, axis=1)
    kd = np.asarray(terms.KD(temperature=3.0)(tm[:, 0], s))
    for cls in (terms.MeanTeacherKD, terms.EntropyWeightedKD, terms.ConfidenceWeightedKD):
        _close(cls(temperature=3.0)(same, s, labels=y), kd)


def test_a_multi_teacher_method_refuses_one_teacher():
    _, s, tm, y = _tensors()
    with pytest.raises(ValueError, match="needs 2 or more teachers, got 1"):
        terms.EntropyWeightedKD()(tm[:, :1], s)
    with pytest.raises(ValueError, match="reads each teacher's own logits"):
        terms.MeanTeacherKD()({"logits": tm[:, 0]}, s)


# -- from the command's fit path: every method from the teacher cache, views included ----------

@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_every_method_trains_from_the_cache_with_no_teacher_forward_pass(tmp_path, augment):
    """The command's plan for each method: no online teachers (the Distiller then has none
    to run), cached logits of each teacher for the methods that read them; and a student
    trains on that plan."""
    import dataclasses

    from helpers.teachers import cache_setup

    from tfkd.modes import fit

    config, splits, teachers, workdir = cache_setup(tmp_path, members=2, augment=augment,
                                                    epochs=2)
    for name in terms.NAMES:
        run = dataclasses.replace(config, distillation_loss=name, alpha=0.5)
        members = fit._reads_members(run)
        assert members == ("members" in terms.get(name).reads)
        plan = fit.plan_teachers(run, workdir, splits, teachers, seed=5, members=members)
        assert plan.online is None, name
        cached = plan.view_logits[0] if augment != "none" else plan.train_logits
        assert cached.shape[1:] == ((2, splits.num_classes) if members else
                                    (splits.num_classes,)), name
        student = fit.build_student(run, splits, 5, f"student_{name}")
        distiller = fit.make_distiller(run, splits, student, plan, alpha=0.5, seed=5)
        assert distiller.teachers is None
        train, val = fit.make_datasets(run, splits, 5, plan)
        logs = distiller.fit(train, validation_data=val, epochs=2,
                             steps_per_epoch=fit.steps_per_epoch(run, splits), verbose=0).history
        assert np.isfinite(logs["distillation_loss"]).all(), name


def test_a_pipeline_of_a_multi_teacher_method_leaves_out_the_chains_and_says_so(tmp_path):
    from helpers.command import ok
    from helpers.command import tfkd as run

    workdir = tmp_path / "w"
    result = ok(run("--smoke", "--model=mlp", "--mode=pipeline", "--distillation_loss=ebkd",
                    "--num_models=2", f"--workdir={workdir}"))
    assert "self_distill: left out: --distillation_loss=ebkd weighs several teachers" in (
        result.stderr)
    assert sorted(os.listdir(workdir / "models")) == ["distilled.keras", "member_0.keras",
                                                      "member_1.keras"]


def test_keras_tuner_searches_every_method(tmp_path):
    """A grid search over --tune_methods (every method), through the search's own
    HyperModel and teacher plan: each method is one trial, each trains and is scored."""
    import dataclasses

    import keras_tuner as kt
    from helpers.teachers import cache_setup

    from tfkd.modes import fit, tune

    config, splits, teachers, workdir = cache_setup(tmp_path, members=2, augment="none",
                                                    epochs=1)
    config = dataclasses.replace(config, mode="tune", tune_params=("distillation_loss",),
                                 tune_methods=terms.NAMES, alpha=0.5)
    plan = fit.plan_teachers(config, workdir, splits, teachers, seed=5,
                             members=fit._reads_members(config))
    assert plan.online is None and plan.train_logits.shape[1] == 2  # each teacher's
    tuner = kt.GridSearch(hypermodel=tune.DistillHyperModel(config, splits, seed=5, plan=plan),
                          objective=kt.Objective(tune.OBJECTIVE, direction="max"),
                          max_trials=len(terms.NAMES), directory=str(tmp_path / "search"),
                          project_name="methods")
    tuner.search()
    trials = tuner.oracle.trials.values()
    assert sorted(t.hyperparameters.values["distillation_loss"] for t in trials) == sorted(
        terms.NAMES)
    assert all(t.status == "COMPLETED" and np.isfinite(t.score) for t in trials)


def test_a_multi_teacher_method_fed_the_ensembles_cached_logits_says_what_it_lacks():
    x, y = _data(32)
    student, t1, t2 = _models()
    ensemble = (t1.predict(x, verbose=0) + t2.predict(x, verbose=0)) / 2
    distiller = Distiller(student=student, teachers=None, alpha=0.5, distillation_loss="camkd")
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"reads each teacher's own logits \(N, M, C\)"):
        distiller.fit(tfkd.with_teacher_logits(x, ensemble), y, batch_size=16, verbose=0)


def test_a_multi_teacher_method_with_one_teacher_is_refused_at_construction():
    student, teacher, _ = _models()
    with pytest.raises(ValueError, match="needs 2 or more teachers, got 1"):
        Distiller(student=student, teachers=teacher, distillation_loss="ebkd")


def test_fit_takes_its_callbacks_by_position_too():
    student, teacher, _ = _models()
    x, y = _data()
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    distiller = Distiller(student=student, teachers=teacher, alpha=0.5, terms=[EpochTerm()])
    distiller.compile(optimizer="sgd")
    logs = distiller.fit(x, y, 16, 2, 0, [record]).history
    assert seen == [0, 1] and logs["epoch_term_loss"] == [0.0, 1.0]


def test_teachers_given_with_terms_and_alpha_one_are_still_checked_on_the_first_batch():
    """alpha = 1 with terms= still learns from the teachers: their outputs are probed as
    with alpha < 1 (here a softmax teacher declared as logits)."""
    student, _, _ = _models()
    inputs = keras.Input((6,))
    softmax = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    # A softmax the constructor cannot see (a Lambda): only the first batch shows it.
    probabilities = keras.Model(inputs, keras.layers.Lambda(keras.ops.softmax)(softmax(inputs)))
    x, y = _data()
    distiller = Distiller(student=student, teachers=[probabilities], alpha=1.0,
                          terms=[terms.KD()], fold_teachers=False)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="outputs probabilities"):
        distiller.fit(x, y, batch_size=16, verbose=0)
