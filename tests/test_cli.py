"""The `tfkd` command on --smoke settings (in this process; see tests/helpers/command.py)."""

import csv
import json
import os

import pytest

from helpers.command import ok, tfkd


def result_names(workdir):
    with open(os.path.join(workdir, "results.csv"), newline="") as f:
        return [row["name"] for row in csv.DictReader(f)]


def test_pipeline_smoke_writes_every_artifact(tmp_path):
    workdir = str(tmp_path / "run")
    out = ok(tfkd("--smoke", f"--workdir={workdir}"))
    assert "| model | kind |" in out.stdout  # the table is printed at the end
    assert "[5/5] self_distilled_1_g1" in out.stderr  # one progress line per model
    for name in ("member_0", "member_1", "distilled", "self_distilled_0_g1",
                 "self_distilled_1_g1"):
        assert os.path.getsize(os.path.join(workdir, "models", f"{name}.keras")) > 0
        record = json.load(open(os.path.join(workdir, "metrics", f"{name}.json")))
        assert 0.0 <= record["row"]["test_accuracy"] <= 1.0
        assert record["history"]["loss"], "training history is recorded"
        assert os.listdir(os.path.join(workdir, "logs", name)), "TensorBoard logs"
    for name in ("ensemble", "self_distilled_ensemble"):
        assert os.path.exists(os.path.join(workdir, "metrics", f"{name}.json"))
    for ext in ("md", "csv", "json", "png"):
        assert os.path.getsize(os.path.join(workdir, f"results.{ext}")) > 0
    names = result_names(workdir)
    assert names[:3] == ["member_0", "member_1", "members mean ± std"]
    assert {"ensemble", "distilled", "self_distilled_ensemble"} <= set(names)
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["config"]["epochs"] == 1 and config["versions"]["tensorflow"]

    # A second run reuses every finished model instead of retraining it.
    before = os.path.getmtime(os.path.join(workdir, "models", "member_0.keras"))
    again = ok(tfkd("--smoke", f"--workdir={workdir}"))
    assert "(reused)" in again.stderr
    assert os.path.getmtime(os.path.join(workdir, "models", "member_0.keras")) == before


def test_each_mode_on_its_own(tmp_path):
    workdir = str(tmp_path / "run")
    common = ["--smoke", f"--workdir={workdir}", "--dataset=mnist1d", "--model=mlp"]
    ok(tfkd("--mode=train", *common))
    assert sorted(os.listdir(os.path.join(workdir, "models"))) == [
        "member_0.keras", "member_1.keras"]
    ok(tfkd("--mode=ensemble", *common))
    assert "ensemble" in result_names(workdir)
    ok(tfkd("--mode=distill", *common, "--alpha=0.2", "--temperature=2"))
    assert "distilled" in result_names(workdir)
    ok(tfkd("--mode=self_distill", *common, "--self_distill_steps=2"))
    names = result_names(workdir)
    for name in ("self_distilled_0_g1", "self_distilled_0_g2", "self_distilled_1_g2",
                 "self_distilled_ensemble"):
        assert name in names
    record = json.load(open(os.path.join(workdir, "metrics", "self_distilled_1_g2.json")))
    assert record["row"]["teacher"] == "self_distilled_1_g1"


def test_distill_from_another_teacher_dir_with_flagfile(tmp_path):
    teachers = str(tmp_path / "teachers")
    ok(tfkd("--smoke", "--mode=train", f"--workdir={teachers}"))
    student = str(tmp_path / "student")
    ok(tfkd("--smoke", "--flagfile=flags/digits_cnn.flags", "--mode=distill",
            f"--workdir={student}", f"--teacher_dir={teachers}"))
    assert os.listdir(os.path.join(student, "models")) == ["distilled.keras"]


def test_distill_with_a_hint_layer_on_cached_teachers(tmp_path):
    workdir = str(tmp_path / "run")
    common = ["--smoke", f"--workdir={workdir}", "--num_models=2"]
    ok(tfkd("--mode=train", *common))
    ok(tfkd("--mode=distill", *common, "--hint_layer=features", "--hint_weight=0.5"))
    record = json.load(open(os.path.join(workdir, "metrics", "distilled.json")))
    assert record["settings"]["hint_layer"] == "features"
    assert record["settings"]["hint_weight"] == 0.5
    history = record["history"]
    # The hint reaches the loss with its weight, next to the cached teachers' KL term.
    loss = 0.1 * history["student_loss"][-1] + 0.9 * history["distillation_loss"][-1] + (
        0.5 * history["hint_loss"][-1])
    assert history["hint_loss"][-1] > 0
    assert abs(history["loss"][-1] - loss) < 1e-4 * max(1.0, abs(loss))
    assert os.listdir(os.path.join(workdir, "cache"))  # the teachers' logits were cached
    # Not given, the hint is the workdir's: the student is reused.
    again = ok(tfkd("--mode=distill", *common))
    assert "hint_layer=features" in again.stderr and "(reused)" in again.stderr
    # A student trained with a hint does not stand for one trained without.
    refused = tfkd("--mode=distill", *common, "--hint_layer=")
    assert refused.returncode == 2 and "hint_layer='features'" in refused.stderr


@pytest.mark.parametrize("args,named,accepted", [
    (["--mode=pretrain"], "pretrain", "pipeline, train, ensemble, distill, self_distill"),
    (["--dataset=cifar1000"], "cifar1000", "digits, mnist1d"),
    (["--model=vgg99"], "vgg99", "cnn, mlp"),
    (["--optimizer=lion"], "lion", "adam, adamw, sgd"),
    (["--num_models=-3"], "-3", "whole number in [1, "),
    (["--epochs=0"], "0", "whole number in [1, "),
    (["--alpha=1.5"], "1.5", "[0, 1]"),
    (["--temperature=0"], "0", "> 0"),
    (["--distillation_loss=cosine"], "cosine", "nkd, probability_mse"),
    (["--mode=distill", "--teacher_dir=/nonexistent/teachers"], "/nonexistent/teachers",
     "--mode=train"),
    (["stray_argument"], "stray_argument", "--flag"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, named, accepted):
    result = tfkd(f"--workdir={tmp_path / 'run'}", "--smoke", *args)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfkd: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert named in errors[0] and accepted in errors[0], errors[0]
    assert "Traceback" not in result.stderr


def test_help_lists_the_modes():
    result = tfkd("--helpfull", process=True)  # absl exits with 1 after printing help
    assert "--mode" in result.stdout and "self_distill" in result.stdout


def test_workdir_with_other_settings_is_refused_unless_overwrite(tmp_path):
    workdir = f"--workdir={tmp_path / 'run'}"
    ok(tfkd("--smoke", "--mode=train", "--model=mlp", workdir))
    ok(tfkd("--smoke", "--mode=distill", "--model=mlp", workdir))
    model_file = tmp_path / "run" / "models" / "member_0.keras"
    before = os.path.getmtime(model_file)

    refused = tfkd("--smoke", "--mode=train", "--model=mlp", "--learning_rate=0.01", workdir)
    assert refused.returncode == 2
    assert "member_0 trained with learning_rate=0.003" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert os.path.getmtime(model_file) == before  # nothing touched

    ok(tfkd("--smoke", "--mode=train", "--model=mlp", "--learning_rate=0.01", "--overwrite",
            workdir))
    assert os.path.getmtime(model_file) != before
    # The distilled student's teachers are this workdir's own members and changed: it is
    # trained again, and the run says why.
    distilled = tmp_path / "run" / "models" / "distilled.keras"
    student_before = os.path.getmtime(distilled)
    again = ok(tfkd("--smoke", "--mode=distill", "--model=mlp", workdir))
    assert "member_0.keras" in again.stderr and "changed" in again.stderr, again.stderr[-2000:]
    assert os.path.getmtime(distilled) != student_before


def test_teachers_of_another_dataset_are_refused(tmp_path):
    teachers = tmp_path / "mnist1d_teachers"
    ok(tfkd("--smoke", "--mode=train", "--dataset=mnist1d", "--num_models=1", "--model=mlp",
            f"--workdir={teachers}"))
    # Not given, the dataset is the teachers' own (their workdir's record says so).
    same = ok(tfkd("--smoke", "--mode=distill", "--num_models=1", "--model=mlp",
                   f"--teacher_dir={teachers}", f"--workdir={tmp_path / 'student'}"))
    assert "dataset=mnist1d" in same.stderr
    result = tfkd("--smoke", "--mode=distill", "--num_models=1", "--model=mlp",
                  "--dataset=digits", f"--teacher_dir={teachers}",
                  f"--workdir={tmp_path / 'other_student'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "member_0.keras takes inputs of shape (40, 1)" in result.stderr
    assert "Traceback" not in result.stderr


def test_self_distill_with_optimal_alpha_records_one_alpha_per_step(tmp_path):
    workdir = tmp_path / "run"
    ok(tfkd("--mode=self_distill", "--smoke", "--model=mlp", "--self_distill_steps=2",
            "--self_distill_alpha=optimal", "--distillation_loss=probability_mse",
            f"--workdir={workdir}"))
    chosen = json.load(open(workdir / "self_distill_alphas.json"))["alphas"]
    assert sorted(chosen) == ["chain_0", "chain_1"]
    for chain, alphas in chosen.items():
        assert len(alphas) == 2 and all(0.0 <= a <= 1.0 for a in alphas)
        for g, alpha in enumerate(alphas, start=1):
            record = json.load(open(workdir / "metrics" / f"self_distilled_{chain[-1]}_g{g}.json"))
            assert record["row"]["alpha"] == alpha and record["settings"]["alpha"] == alpha
            # And in the result row of each table the run writes, as the docs say.
            name = f"self_distilled_{chain[-1]}_g{g}"
            table = (workdir / "results.md").read_text().splitlines()
            line = next(ln for ln in table if ln.startswith(f"| {name} |"))
            assert line.split(" | ")[4] == f"{alpha:.4g}"
            rows = {r["name"]: r for r in csv.DictReader(open(workdir / "results.csv"))}
            assert float(rows[name]["alpha"]) == alpha
    # The alpha = 0 probes are kept as models but are not results.
    assert os.path.exists(workdir / "models" / "self_distilled_0_g1_alpha0.keras")
    assert not any(n.endswith("_alpha0") for n in result_names(workdir))


def test_self_distill_alpha_per_step_list(tmp_path):
    workdir = tmp_path / "run"
    ok(tfkd("--mode=self_distill", "--smoke", "--model=mlp", "--num_models=1",
            "--self_distill_steps=2", "--self_distill_alpha=0.2,0.7", f"--workdir={workdir}"))
    for g, alpha in ((1, 0.2), (2, 0.7)):
        record = json.load(open(workdir / "metrics" / f"self_distilled_0_g{g}.json"))
        assert record["row"]["alpha"] == alpha


def test_joint_mode_trains_the_average_of_num_models_as_one_network(tmp_path):
    workdir = tmp_path / "run"
    ok(tfkd("--mode=joint", "--smoke", "--model=mlp", "--num_models=2", f"--workdir={workdir}"))
    record = json.load(open(workdir / "metrics" / "joint.json"))
    assert record["row"]["kind"] == "joint" and record["settings"]["joint_k"] == 2
    assert "joint" in result_names(workdir)


def test_multiview_dataset_with_the_patch_network(tmp_path):
    workdir = tmp_path / "run"
    ok(tfkd("--mode=train", "--smoke", "--dataset=multiview", "--model=patch_net",
            "--num_models=1", f"--workdir={workdir}"))
    assert "member_0" in result_names(workdir)


def test_teachers_from_elsewhere_are_evaluated_and_warned_about(tmp_path):
    """--teacher_dir teachers get rows of their own in the results table; one that scores
    far below the accuracy its workdir recorded (here: a record edited up, as a teacher
    prepared differently would show), or at chance, is warned about."""
    teachers = tmp_path / "teachers"
    ok(tfkd("--mode=train", "--model=mlp", "--num_models=2", "--epochs=3",
            f"--workdir={teachers}"))
    record_path = teachers / "metrics" / "member_1.json"
    record = json.loads(record_path.read_text())
    measured = record["row"]["test_accuracy"]
    known = record["row"]["test_accuracy"] = min(1.0, measured + 0.08)
    record_path.write_text(json.dumps(record))
    student = tmp_path / "student"
    common = ["--mode=distill", "--model=mlp", "--num_models=2", "--epochs=1",
              f"--teacher_dir={teachers}", f"--workdir={student}"]
    result = ok(tfkd(*common))
    warnings = [ln for ln in result.stderr.splitlines() if "tfkd: warning: teacher" in ln]
    assert len(warnings) == 1 and "teacher_1" in warnings[0], result.stderr[-2000:]
    assert f"against {100 * known:.2f}% recorded" in warnings[0]
    rows = {r["name"]: r for r in csv.DictReader(open(student / "results.csv"))}
    assert rows["teacher_0"]["kind"] == rows["teacher_1"]["kind"] == "teacher"
    assert float(rows["teacher_1"]["test_accuracy"]) == pytest.approx(measured, abs=1e-9)
    assert list(rows)[:2] == ["teacher_0", "teacher_1"]  # first in the table
    # Evaluated once per teacher file: a re-run reads the rows back.
    again = ok(tfkd(*common))
    assert "tfkd: warning: teacher" not in again.stderr


def test_a_teacher_at_chance_from_a_plain_folder_is_warned_about(tmp_path):
    import keras

    folder = tmp_path / "plain"
    folder.mkdir()
    inputs = keras.Input((8, 8, 1))
    zero = keras.layers.Dense(10, kernel_initializer="zeros")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, zero).save(folder / "constant.keras")
    result = ok(tfkd("--mode=distill", "--model=mlp", "--num_models=1", "--epochs=1",
                     "--allow_chance", f"--teacher_dir={folder}",
                     f"--workdir={tmp_path / 'student'}"))
    warnings = [ln for ln in result.stderr.splitlines() if "tfkd: warning: teacher" in ln]
    assert len(warnings) == 1 and "scores at chance here" in warnings[0]
    assert "constant.keras" in warnings[0]


def test_softmax_teachers_in_a_folder_teach_through_their_logits(tmp_path):
    import keras
    import numpy as np

    from tfkd.data import load_dataset

    folder = tmp_path / "softmax"
    folder.mkdir()
    digits = load_dataset("digits")
    for seed, last in ((0, "dense"), (1, "layer")):
        keras.utils.set_random_seed(seed)
        layers = [keras.Input((8, 8, 1)), keras.layers.Flatten()]
        layers += ([keras.layers.Dense(10, activation="softmax")] if last == "dense" else
                   [keras.layers.Dense(10), keras.layers.Softmax()])
        model = keras.Sequential(layers)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(digits.x_train, digits.y_train, epochs=3, verbose=0)
        model.save(folder / f"t{seed}.keras")
    result = ok(tfkd("--mode=distill", "--model=mlp", "--num_models=2", "--epochs=1",
                     f"--teacher_dir={folder}", f"--workdir={tmp_path / 'student'}"))
    assert result.stderr.count("ends in a softmax") == 2
    assert "Traceback" not in result.stderr
    # The teacher rows score what the saved classifiers score.
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path / "student" / "results.csv"))}
    for i in range(2):
        saved = keras.saving.load_model(folder / f"t{i}.keras")
        accuracy = np.mean(saved.predict(digits.x_test, verbose=0).argmax(-1) == digits.y_test)
        assert float(rows[f"teacher_{i}"]["test_accuracy"]) == pytest.approx(accuracy)


def test_a_student_of_another_architecture_lives_beside_the_members(tmp_path):
    workdir = tmp_path / "run"
    common = ["--num_models=2", "--epochs=1", "--allow_chance", f"--workdir={workdir}"]
    ok(tfkd("--mode=train", "--model=mlp", *common))
    ok(tfkd("--mode=distill", "--model=cnn", *common))
    ok(tfkd("--mode=distill", *common))  # the workdir's own architecture: mlp
    again = ok(tfkd("--mode=train", *common))  # still defaults to the members' mlp
    assert "Traceback" not in again.stderr
    names = result_names(workdir)
    assert {"distilled", "distilled_cnn", "member_0", "member_1"} <= set(names)
    settings = {name: json.load(open(workdir / "metrics" / f"{name}.json"))["settings"]["model"]
                for name in ("distilled", "distilled_cnn")}
    assert settings == {"distilled": "mlp", "distilled_cnn": "cnn"}
    # Each re-run finds its own student finished.
    cnn = ok(tfkd("--mode=distill", "--model=cnn", *common))
    assert "distilled_cnn" in cnn.stderr and "reused" in cnn.stderr.lower()
    # analyze follows it: distilled_cnn against an independent cnn of its own name.
    ok(tfkd("--mode=analyze", "--model=cnn", "--analysis_examples=32", "--pgd_steps=1",
            *common))
    analysis = json.load(open(workdir / "analysis.json"))
    assert analysis["students"][0]["distilled"] == "distilled_cnn"
    assert analysis["students"][0]["independent"] == "independent_cnn"
    record = json.load(open(workdir / "metrics" / "independent_cnn.json"))
    assert record["settings"]["model"] == "cnn"


@pytest.mark.parametrize("argv,fits", [
    (["--num_models=1000"], 1000 + 1 + 1000),
    (["--mode=self_distill", "--num_models=10000", "--self_distill_steps=1000"],
     10000 + 10_000_000),
    (["--mode=self_distill", "--num_models=60", "--self_distill_steps=2",
      "--self_distill_alpha=optimal"], 60 + 240),
    (["--mode=tune", "--max_trials=500"], 500),
    (["--mode=train", "--num_models=201"], 201),
])
def test_a_run_of_many_fits_is_refused_before_it_starts(tmp_path, argv, fits):
    """A slip such as --num_models=1000 plans days of fits: refused with the count before
    anything loads, until --max_fits says to go ahead (--smoke refuses it too)."""
    workdir = tmp_path / "w"
    for extra in ([], ["--smoke"]):
        result = tfkd(*argv, *extra, f"--workdir={workdir}")
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("tfkd: error:")]
        assert len(errors) == 1 and f"plans {fits:,} model fits" in errors[0]
        assert f"--max_fits={fits} to go ahead" in errors[0]
        assert not workdir.exists()
    # Below the limit nothing is refused; the plan is printed at the start of a run.
    from tfkd.config import Config
    from tfkd.modes import planned_fits

    settings = dict(a.lstrip("-").split("=", 1) for a in argv)
    config = Config(**{**{k: (int(v) if v.isdigit() else v) for k, v in settings.items()},
                       "max_fits": fits})
    assert planned_fits(config) == fits


def test_the_plan_is_printed_at_the_start(tmp_path):
    result = ok(tfkd("--mode=train", "--smoke", "--model=mlp", "--num_models=2",
                     f"--workdir={tmp_path / 'w'}"))
    assert "tfkd: plan: at most 2 model fits of 1 epoch each" in result.stderr
