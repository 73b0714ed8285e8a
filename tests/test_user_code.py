"""tfkd in a user's own Keras code: their models, tf.data, Keras callbacks, keras-tuner.

Public API only (`import tfkd`), as a user would write it. Teachers are Sequential models
saved to and loaded from .keras files, students are functional or Sequential models.
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from helpers.examples import markdown_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKUP_SCRIPT = os.path.join(ROOT, "tests", "helpers", "user_backup_restore.py")
# Subprocesses import this checkout's tfkd, not whichever one is installed.
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}


def sequential_teacher(seed, classes=10, softmax=False):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(classes, activation="softmax" if softmax else None),
    ])


def functional_student(seed, feature_name="features"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(16, activation="relu", name=feature_name)(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def batches(x, y, batch_size=64):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


@pytest.fixture(scope="module")
def teacher_files(digits, tmp_path_factory):
    """Two trained Sequential teachers that output logits, saved as .keras files."""
    x, y = digits
    folder = tmp_path_factory.mktemp("teachers")
    paths = []
    for seed in (1, 2):
        teacher = sequential_teacher(seed)
        teacher.compile(optimizer=keras.optimizers.Adam(1e-2),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(x[:512], y[:512], epochs=3, batch_size=64, verbose=0)
        paths.append(str(folder / f"teacher{seed}.keras"))
        teacher.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def teachers(teacher_files):
    return tfkd.Ensemble([keras.saving.load_model(p) for p in teacher_files])


# -- built without a build() call ------------------------------------------------------


def test_distiller_is_built_and_checkpoints_without_a_build_call(digits, teachers, tmp_path):
    x, y = digits
    distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers, alpha=0.5)
    assert distiller.built
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    checkpoint = str(tmp_path / "epoch{epoch}.weights.h5")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not yet been built.*")
        distiller.fit(batches(x[:256], y[:256]), epochs=2, verbose=0, callbacks=[
            keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True)])
        distiller.save(tmp_path / "distiller.keras")
    assert os.path.exists(tmp_path / "epoch2.weights.h5")

    fresh = tfkd.Distiller(student=functional_student(5), teachers=teachers, alpha=0.5)
    fresh.load_weights(tmp_path / "epoch2.weights.h5")
    np.testing.assert_allclose(fresh.predict(x[:32], verbose=0),
                               distiller.predict(x[:32], verbose=0), rtol=1e-5, atol=1e-6)


def test_unbuilt_student_and_teacher_are_built_from_the_first_batch(digits, tmp_path):
    x, y = digits
    # Sequential models without an Input: nothing is known until data arrives.
    student = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    teacher = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    distiller = tfkd.Distiller(student=student, teacher=teacher, alpha=0.5)
    assert not distiller.built
    distiller.compile(optimizer="adam")
    distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(str(tmp_path / "w.weights.h5"), save_weights_only=True),
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert distiller.built and student.built and teacher.built
    assert os.path.exists(tmp_path / "w.weights.h5")


# -- keras-tuner ------------------------------------------------------------------------


def test_keras_tuner_random_search_over_a_users_hypermodel(digits, teachers, tmp_path):
    x, y = digits
    train, val = batches(x[:384], y[:384]), batches(x[1200:1400], y[1200:1400])

    class StudentSearch(keras_tuner.HyperModel):
        def build(self, hp):
            distiller = tfkd.Distiller(student=functional_student(3), teachers=teachers,
                                       alpha=hp.Float("alpha", 0.1, 0.9),
                                       temperature=hp.Choice("temperature", [2.0, 4.0]))
            distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
            return distiller

    tuner = keras_tuner.RandomSearch(StudentSearch(), objective="val_accuracy", max_trials=2,
                                     directory=str(tmp_path), project_name="kd", seed=0)
    tuner.search(train, validation_data=val, epochs=2, verbose=0)
    statuses = [trial.status for trial in tuner.oracle.trials.values()]
    assert statuses == ["COMPLETED", "COMPLETED"]
    best = tuner.get_best_models(1)[0]
    result = best.evaluate(val, return_dict=True, verbose=0)
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert result["accuracy"] == pytest.approx(best_trial.score, abs=1e-6)


# -- BackupAndRestore across two processes ------------------------------------------------


def test_backup_and_restore_resumes_in_a_fresh_process(teacher_files, tmp_path):
    def run(stop_after, record):
        return subprocess.run(
            [sys.executable, BACKUP_SCRIPT, teacher_files[0], str(tmp_path / "backup"),
             str(tmp_path / record), str(stop_after)],
            env=ENV, capture_output=True, text=True, timeout=300)

    first = run(2, "first.json")
    assert first.returncode == 3, first.stderr[-3000:]  # killed after epoch 2 of 4
    second = run(0, "second.json")
    assert second.returncode == 0, second.stderr[-3000:]
    first, second = (json.load(open(tmp_path / name)) for name in ("first.json", "second.json"))
    assert first["epochs"] == [0, 1]
    assert second["epochs"] == [2, 3] and second["history_length"] == 2
    # The second process starts from the first one's weights and optimizer state.
    assert second["first_step"] == 2 * 8  # 512 examples in batches of 64, two epochs
    assert second["first_weights"] == pytest.approx(first["last_weights"], rel=1e-6)


# -- arguments by keyword ------------------------------------------------------------------


def test_swapped_or_positional_arguments_are_refused(teachers):
    student = functional_student(0)
    with pytest.raises(TypeError, match="by keyword"):
        tfkd.Distiller(student, teachers)
    with pytest.raises(ValueError, match="student is a tfkd.Ensemble"):
        tfkd.Distiller(student=teachers, teachers=student)
    with pytest.raises(ValueError, match="student is a list of models"):
        tfkd.Distiller(student=list(teachers.members), teachers=student)
    with pytest.raises(ValueError, match="student is also one of the teachers"):
        tfkd.Distiller(student=student, teachers=[student])
    with pytest.raises(ValueError, match="teachers= or teacher=, not both"):
        tfkd.Distiller(student=student, teacher=teachers.members[0], teachers=teachers)
    # Core Keras's name for one teacher.
    distiller = tfkd.Distiller(student=student, teacher=teachers.members[0])
    assert distiller.teachers.members == [teachers.members[0]]
    assert not teachers.members[0].trainable and student.trainable


def test_hint_layers_are_named_by_keyword(digits, teachers):
    x, y = digits
    with pytest.raises(TypeError):
        tfkd.Hint("conv2d", "features")
    teacher = teachers.members[0]
    conv = next(layer.name for layer in teacher.layers if "conv" in layer.name)
    # The teacher's layer exists only in the teacher, the student's only in the student.
    hint = tfkd.Hint(teacher_layer=conv, student_layer="student_conv")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="student_conv")(inputs)
    student = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    distiller = tfkd.Distiller(student=student, teachers=teacher, hint=hint)
    distiller.compile(optimizer="adam")
    history = distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0).history
    assert history["hint_loss"][0] > 0


# -- loading with `import tfkd` only --------------------------------------------------------


def test_import_tfkd_is_enough_to_load_a_distiller_and_an_ensemble(digits, teachers, tmp_path):
    x, y = digits
    distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    distiller.fit(batches(x[:256], y[:256]), epochs=1, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    teachers.save(tmp_path / "ensemble.keras")
    np.save(tmp_path / "x.npy", x[:256])
    np.save(tmp_path / "y.npy", y[:256])
    expected = distiller.evaluate(x[:256], y[:256], return_dict=True, verbose=0)
    script = textwrap.dedent(f"""
        import json, sys
        import tfkd
        light = "tensorflow" not in sys.modules and "keras" not in sys.modules
        import keras, numpy as np
        folder = {str(tmp_path)!r}
        x, y = np.load(folder + "/x.npy"), np.load(folder + "/y.npy")
        distiller = keras.saving.load_model(folder + "/distiller.keras")
        ensemble = keras.saving.load_model(folder + "/ensemble.keras")
        steps = int(distiller.optimizer.iterations.numpy())
        result = distiller.evaluate(x, y, return_dict=True, verbose=0)
        distiller.fit(x, y, batch_size=64, epochs=1, verbose=0)
        print(json.dumps({{"light": light, "steps": steps, "result": result,
                          "steps_after": int(distiller.optimizer.iterations.numpy()),
                          "types": [type(distiller).__name__, type(ensemble).__name__]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["light"], "import tfkd imported Keras or TensorFlow"
    assert loaded["types"] == ["Distiller", "Ensemble"]
    assert loaded["steps"] == 4 and loaded["steps_after"] == 8
    assert set(loaded["result"]) == set(expected)  # compiled metrics included
    for key, value in expected.items():
        assert loaded["result"][key] == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("first_import", [
    "import tfkd.ensemble",  # Keras is first imported by a module the hook then imports
    "import tfkd, tensorflow",  # TensorFlow imports Keras before it has finished itself
])
def test_tfkd_classes_are_registered_whichever_import_comes_first(first_import):
    script = textwrap.dedent(f"""
        {first_import}
        import keras
        names = ["Distiller", "Ensemble", "SoftTargetKL", "CrossEntropy", "TeacherAgreement",
                 "Warmup"]
        missing = [n for n in names if keras.saving.get_registered_object("tfkd>" + n) is None]
        assert not missing, missing
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_reloaded_distiller_keeps_optimizer_metrics_and_settings(digits, teachers, tmp_path):
    x, y = digits
    distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers, alpha=0.3,
                               temperature=2.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=3)])
    distiller.fit(batches(x[:256], y[:256]), epochs=1, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    restored = keras.saving.load_model(tmp_path / "distiller.keras")
    assert (restored.alpha, restored.temperature) == (0.3, 2.0)
    assert isinstance(restored.optimizer, keras.optimizers.SGD)
    for a, b in zip(restored.optimizer.variables, distiller.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The next epoch is the same whether training goes on or resumes from the file.
    after = [m.fit(batches(x[256:512], y[256:512]), epochs=1, verbose=0).history
             for m in (distiller, restored)]
    assert after[1].keys() == after[0].keys()
    for key, values in after[0].items():
        assert after[1][key] == pytest.approx(values, rel=1e-5), key
    result = restored.evaluate(x[:256], y[:256], return_dict=True, verbose=0)
    assert {"accuracy", "sparse_top_k_categorical_accuracy", "loss"} <= set(result)


# -- teachers that output probabilities ---------------------------------------------------


def test_softmax_teachers_are_refused_or_read_as_probabilities(digits, teachers, tmp_path):
    x, y = digits
    logit_teacher = teachers.members[0]
    softmax_teacher = sequential_teacher(1, softmax=True)
    softmax_teacher.set_weights(logit_teacher.get_weights())
    softmax_teacher.save(tmp_path / "softmax.keras")
    softmax_teacher = keras.saving.load_model(tmp_path / "softmax.keras")
    with pytest.raises(ValueError, match="ends in a softmax.*teacher_outputs='probabilities'"):
        tfkd.Distiller(student=functional_student(0), teachers=[softmax_teacher])
    with pytest.raises(ValueError, match="member_outputs='probabilities'"):
        tfkd.Ensemble([softmax_teacher])

    histories = []
    for teacher, outputs in ((logit_teacher, "logits"), (softmax_teacher, "probabilities")):
        distiller = tfkd.Distiller(student=functional_student(0), teachers=teacher,
                                   teacher_outputs=outputs, alpha=0.2, temperature=4.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        histories.append(distiller.fit(batches(x[:256], y[:256]), epochs=2, verbose=0).history)
    assert histories[1]["distillation_loss"] == pytest.approx(
        histories[0]["distillation_loss"], rel=1e-4)


def test_probabilities_the_constructor_cannot_see_are_refused_at_fit(digits, teachers):
    x, y = digits

    class SoftmaxTeacher(keras.Model):  # a subclassed model: no layer says "softmax"
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, inputs):
            return keras.ops.softmax(self.dense(keras.ops.reshape(inputs, (-1, 64))))

    distiller = tfkd.Distiller(student=functional_student(0), teacher=SoftmaxTeacher())
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="teacher 0 outputs probabilities"):
        distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)

    probabilities = keras.ops.softmax(teachers(x[:128])).numpy()
    distiller = tfkd.Distiller(student=functional_student(0), alpha=0.5)
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="teacher_logits are probabilities"):
        distiller.fit(tfkd.with_teacher_logits(x[:128], probabilities), y[:128], verbose=0)


# -- shapes and labels ------------------------------------------------------------------------


def test_teacher_logits_of_the_wrong_width_name_both_widths(digits):
    x, y = digits
    distiller = tfkd.Distiller(student=functional_student(0), alpha=0.5)
    distiller.compile(optimizer="adam")
    wrong = np.zeros((128, 7), "float32")
    with pytest.raises(ValueError, match="teacher_logits have 7 classes but the student "
                                         "predicts 10"):
        distiller.fit(tfkd.with_teacher_logits(x[:128], wrong), y[:128], verbose=0)


def test_unbuilt_teacher_with_other_classes_is_a_value_error(digits):
    x, y = digits
    teacher = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(5)])
    distiller = tfkd.Distiller(student=functional_student(0), teacher=teacher, alpha=0.5)
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="teachers predict 5 classes but the student predicts 10"):
        distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)


def test_one_hot_labels_train_like_integer_labels(digits, teachers):
    x, y = digits
    one_hot = keras.utils.to_categorical(y, 10)
    histories = []
    for labels in (y, one_hot):
        distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers, alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
        histories.append(distiller.fit(batches(x[:256], labels[:256]), epochs=2,
                                       validation_data=(x[256:384], labels[256:384]),
                                       verbose=0).history)
    assert histories[1].keys() == histories[0].keys()
    for key, values in histories[0].items():
        assert histories[1][key] == pytest.approx(values, rel=1e-5), key

    distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers)
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"labels of shape \(None, 7\).*student_loss="):
        distiller.fit(batches(x[:128], one_hot[:128, :7]), epochs=1, verbose=0)


def test_a_metric_that_was_not_measured_is_not_reported(digits, teachers):
    x, y = digits
    logits = teachers.predict(x[:256], verbose=0)
    distiller = tfkd.Distiller(student=functional_student(0), alpha=0.5)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(tfkd.with_teacher_logits(x[:256], logits), y[:256], epochs=1,
                            validation_data=(x[256:384], y[256:384]), verbose=0).history
    assert "teacher_agreement" in history and "val_accuracy" in history
    assert "val_teacher_agreement" not in history
    assert "teacher_agreement" not in distiller.evaluate(x[:64], y[:64], return_dict=True,
                                                         verbose=0)


# -- analysis ---------------------------------------------------------------------------------


def test_grad_cam_of_a_sequential_model_loaded_from_a_keras_file(digits, tmp_path):
    from tfkd.analysis import grad_cam

    x, _ = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    maps = grad_cam(loaded, x[:8])
    assert maps.shape == (8, 8, 8) and maps.max() == pytest.approx(1.0)
    np.testing.assert_allclose(maps, grad_cam(model, x[:8]), atol=1e-5)


# -- the examples of docs/library.md ------------------------------------------------------------


@pytest.mark.parametrize("name", ["terms", "tune", "checkpoint", "analysis", "optimal_alpha"])
def test_library_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(markdown_example("docs/library.md", name), f"docs/library.md example {name}", "exec"), namespace)
    if name == "terms":
        history = namespace["history"]
        assert {"dkd_loss", "camkd_loss", "student_loss"} <= set(history)
        assert history["dkd_loss"][1] > history["dkd_loss"][0] / 2  # the warm-up ramps up
        assert namespace["per_example"].shape == (4,)
    elif name == "analysis":
        assert 0.0 <= namespace["found"]["agreement"] <= 1.0
        assert 0.0 <= namespace["similarity"] <= 1.0
        k, n = namespace["k"], namespace["n"]
        assert n > 0 and namespace["attack"]["transfer"]["student"] == pytest.approx(k / n)
        assert namespace["low95"] <= k / n <= namespace["high95"]
    elif name == "optimal_alpha":
        g, h, r = namespace["g"], namespace["h"], namespace["reference"]
        grid = np.linspace(0, 1, 10001)
        errors = [np.sum((a * g + (1 - a) * h - r) ** 2) for a in grid]
        assert namespace["alpha"] == pytest.approx(grid[int(np.argmin(errors))], abs=2e-4)
    elif name == "tune":
        assert namespace["best"].built
        assert keras.saving.load_model(tmp_path / "student.keras").output_shape == (None, 10)
    else:
        assert os.path.exists(tmp_path / "best.weights.h5")
        assert namespace["restored"].optimizer.iterations.numpy() > 0


# -- outputs the Distiller does not train on silently -------------------------------------


def _regressor(seed, units=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(units)(h))


def test_a_one_unit_student_is_refused_where_a_loss_over_classes_would_read_it():
    mse = keras.losses.MeanSquaredError()
    with pytest.raises(ValueError, match="one output unit, where student_loss CrossEntropy"):
        tfkd.Distiller(student=_regressor(0), alpha=1.0)
    with pytest.raises(ValueError, match="distillation_loss KD .*MeanSquaredError"):
        tfkd.Distiller(student=_regressor(0), teachers=_regressor(1), student_loss=mse)
    with pytest.raises(ValueError, match="student_loss SparseCategoricalCrossentropy"):
        tfkd.Distiller(student=_regressor(0), teachers=_regressor(1), distillation_loss=mse,
                       student_loss=keras.losses.SparseCategoricalCrossentropy())


def test_a_one_unit_student_seen_only_when_it_runs_is_refused_at_fit(digits):
    x, y = digits

    class Regressor(keras.Model):  # subclassed: its width shows when it runs
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, inputs):
            return self.dense(keras.ops.reshape(inputs, (-1, 64)))

    distiller = tfkd.Distiller(student=Regressor(), alpha=1.0)
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="one output unit"):
        distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)


def test_regression_distills_through_losses_of_raw_outputs(digits):
    x, _ = digits
    x = x[:256]
    target = x.reshape(len(x), -1).mean(axis=1, keepdims=True).astype("float32")
    teacher = _regressor(1)
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    teacher.fit(x, target, epochs=20, verbose=0)
    mse = keras.losses.MeanSquaredError()
    distiller = tfkd.Distiller(student=_regressor(0), teachers=teacher, alpha=0.5,
                               student_loss=mse, distillation_loss=mse)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=[])
    student_before = distiller.student.predict(x, verbose=0)
    expected = np.mean((teacher.predict(x, verbose=0) - student_before) ** 2)
    first = distiller.evaluate(x, target, batch_size=256, verbose=0, return_dict=True)
    history = distiller.fit(x, target, batch_size=64, epochs=15, verbose=0).history
    assert "teacher_agreement" not in history and "teacher_agreement" not in first
    assert history["distillation_loss"][0] > 0
    assert history["distillation_loss"][-1] < 0.2 * history["distillation_loss"][0]
    # The term is the squared error of the raw outputs, as the user's loss computes it.
    again = tfkd.Distiller(student=_regressor(0), teachers=teacher, alpha=0.0,
                           student_loss=mse, distillation_loss=mse)
    again.compile(optimizer=keras.optimizers.SGD(0.0), metrics=[])
    step = again.fit(x, target, batch_size=256, epochs=1, verbose=0).history
    assert step["distillation_loss"][0] == pytest.approx(expected, rel=1e-4)


def test_models_of_several_outputs_are_refused(digits):
    x, y = digits
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    two = keras.Model(inputs, [keras.layers.Dense(10)(h), keras.layers.Dense(3)(h)])
    named = keras.Model(inputs, {"classes": keras.layers.Dense(10)(h)})
    for model in (two, named):
        with pytest.raises(ValueError, match="the student has .*outputs.*model.outputs"):
            tfkd.Distiller(student=model, teachers=functional_student(1))
        with pytest.raises(ValueError, match="teacher 0 has .*outputs"):
            tfkd.Distiller(student=functional_student(0), teachers=[model])
        with pytest.raises(ValueError, match="ensemble member 0 has .*outputs"):
            tfkd.Ensemble([model])

    class TwoHeads(keras.Model):  # subclassed: its outputs show when it runs
        def __init__(self):
            super().__init__()
            self.a, self.b = keras.layers.Dense(10), keras.layers.Dense(10)

        def call(self, inputs):
            flat = keras.ops.reshape(inputs, (-1, 64))
            return {"a": self.a(flat), "b": self.b(flat)}

    distiller = tfkd.Distiller(student=functional_student(0), teacher=TwoHeads(), alpha=0.5)
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="teacher 0 returns dict of 2 outputs"):
        distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)


def test_logits_declared_as_probabilities_are_refused(digits, teachers):
    x, y = digits
    distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers.members[0],
                               teacher_outputs="probabilities")
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="teacher 0 is declared to output probabilities, but "
                                         "its outputs are not .*declare it 'logits'"):
        distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)
    logits = teachers(x[:128]).numpy()
    distiller = tfkd.Distiller(student=functional_student(0), teacher_outputs="probabilities")
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="precomputed teacher_logits.*teacher_outputs='logits'"):
        distiller.fit(tfkd.with_teacher_logits(x[:128], logits), y[:128], verbose=0)


def test_logit_and_softmax_teachers_mix_with_one_kind_each(digits, teachers, tmp_path):
    x, y = digits
    logit_teacher = teachers.members[0]
    softmax_teacher = sequential_teacher(1, softmax=True)
    softmax_teacher.set_weights(teachers.members[1].get_weights())
    with pytest.raises(ValueError, match="teacher_outputs lists 1 output kinds for 2 models"):
        tfkd.Distiller(student=functional_student(0), teachers=[logit_teacher, softmax_teacher],
                       teacher_outputs=["logits"])
    with pytest.raises(ValueError, match="teacher 1 ends in a softmax"):
        tfkd.Distiller(student=functional_student(0), teachers=[logit_teacher, softmax_teacher],
                       teacher_outputs=["logits", "logits"])
    losses = []
    for members, kinds in (([logit_teacher, teachers.members[1]], "logits"),
                           ([logit_teacher, softmax_teacher], ["logits", "probabilities"])):
        distiller = tfkd.Distiller(student=functional_student(0), teachers=members,
                                   teacher_outputs=kinds, alpha=0.0, temperature=4.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        losses.append(distiller.fit(batches(x[:256], y[:256]), epochs=2,
                                    verbose=0).history["distillation_loss"])
    # log softmax(z) = z - logsumexp(z): the mean of the logits moves by a constant per
    # example, which no softmax sees.
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    mixed = tfkd.Ensemble([logit_teacher, softmax_teacher],
                          member_outputs=["logits", "probabilities"])
    mixed.save(tmp_path / "mixed.keras")
    loaded = keras.saving.load_model(tmp_path / "mixed.keras")
    assert loaded.output_kinds == ("logits", "probabilities")
    np.testing.assert_allclose(loaded.predict(x[:32], verbose=0),
                               mixed.predict(x[:32], verbose=0), rtol=1e-5, atol=1e-5)


def test_teacher_agreement_counts_every_example_once_like_accuracy(digits, teachers):
    x, y = digits
    x, y = x[:256], y[:256]
    distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers, alpha=0.5)
    distiller.compile(optimizer="adam")
    weights = np.random.default_rng(0).choice([0.0, 0.1, 5.0], size=len(y)).astype("float32")
    logs = distiller.evaluate(x, y, sample_weight=weights, batch_size=64, verbose=0,
                              return_dict=True)
    student, teacher = distiller.student.predict(x, verbose=0), teachers.predict(x, verbose=0)
    assert logs["teacher_agreement"] == pytest.approx(
        np.mean(student.argmax(-1) == teacher.argmax(-1)), abs=1e-6)
    assert logs["accuracy"] == pytest.approx(np.mean(student.argmax(-1) == y), abs=1e-6)


def test_load_weights_into_a_fresh_compiled_distiller_loads_the_optimizer_too(digits, teachers,
                                                                            tmp_path):
    """Keras skips a saved optimizer state with a warning when the optimizer has no slots
    yet, which made users doubt their weights loaded; the Distiller loads it instead."""
    x, y = digits
    trained = tfkd.Distiller(student=functional_student(0), teachers=teachers)
    trained.compile(optimizer="adam")
    trained.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)
    trained.save_weights(tmp_path / "d.weights.h5")
    fresh = tfkd.Distiller(student=functional_student(1), teachers=teachers)
    fresh.compile(optimizer="adam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_weights(tmp_path / "d.weights.h5")
    for a, b in zip(fresh.student.get_weights(), trained.student.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations) == int(trained.optimizer.iterations) == 2
    for a, b in zip(fresh.optimizer.variables, trained.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_student_checkpoint_saves_the_student_alone_at_its_best_epoch(digits, teachers,
                                                                      tmp_path):
    x, y = digits
    distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers)
    distiller.compile(optimizer="adam")
    whole = keras.callbacks.ModelCheckpoint(tmp_path / "distiller.weights.h5",
                                            save_weights_only=True)
    best = tfkd.StudentCheckpoint(tmp_path / "student.keras", monitor="val_accuracy",
                                  save_best_only=True)
    history = distiller.fit(batches(x[:512], y[:512]), validation_data=batches(x[512:768],
                            y[512:768]), epochs=4, verbose=0, callbacks=[whole, best]).history
    student = keras.saving.load_model(tmp_path / "student.keras")  # plain Keras, no tfkd needed
    assert len(student.weights) == len(distiller.student.weights)
    assert os.path.getsize(tmp_path / "student.keras") * 2 < os.path.getsize(
        tmp_path / "distiller.weights.h5")
    accuracy = np.mean(student.predict(x[512:768], verbose=0).argmax(-1) == y[512:768])
    assert accuracy == pytest.approx(max(history["val_accuracy"]), abs=1e-6)
