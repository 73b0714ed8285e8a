"""Reliability: SIGKILL and resume, determinism, divergence, damaged artifacts, bad input."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.command import ROOT, invoke, ok, process_env, tfkd

# A pipeline small enough for the suite but with fits long enough to be killed in.
PIPELINE = ["--dataset=digits", "--model=mlp", "--num_models=2", "--epochs=12",
            "--self_distill_steps=1", "--deterministic"]


def start(workdir, *args):
    return subprocess.Popen([sys.executable, "-m", "tfkd", *PIPELINE, f"--workdir={workdir}",
                             *args], env=process_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def saved_epoch(workdir, name):
    """Epochs completed in `name`'s saved training state (0 if none)."""
    for path in glob.glob(os.path.join(workdir, "state", f"{name}-*.npz")):
        try:
            with np.load(path) as saved:
                return json.loads(str(saved["meta"]))["epoch"]
        except (OSError, ValueError, KeyError):
            return 0  # replaced between glob and read
    return 0


def stop_when(process, condition, sig=signal.SIGKILL, timeout=300):
    """Sends `sig` to `process` once `condition()` holds; returns (exit code, stderr)."""
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before the stop point: " + (
            process.stderr.read()[-2000:])
        assert time.time() < deadline, "stop point never reached"
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def finished_models(workdir):
    """{model file: modification time} of the finished models: a model file and its metrics.

    A file whose metrics a kill prevented is not finished: the next run saves it again from
    its training state, which holds every epoch, without training it again."""
    return {os.path.basename(p): os.stat(p).st_mtime_ns
            for p in glob.glob(os.path.join(workdir, "models", "*.keras"))
            if os.path.exists(os.path.join(workdir, "metrics",
                                           os.path.basename(p)[:-len(".keras")] + ".json"))}


def results(workdir):
    return open(os.path.join(workdir, "results.csv")).read()


@pytest.mark.slow  # the default suite stops a pipeline with SIGKILL in tests/test_faults.py
def test_sigkill_at_three_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "uninterrupted"
    clean = start(reference)
    clean.communicate()
    assert clean.returncode == 0

    workdir = str(tmp_path / "killed")
    kill_points = [
        # during a member's fit, after some epochs
        ("member_0 mid-fit", lambda: saved_epoch(workdir, "member_0") >= 3),
        # between stages: the last member is finished, the distillation has not begun
        ("between train and distill",
         lambda: os.path.exists(os.path.join(workdir, "metrics", "member_1.json"))),
        # while the distilled student trains
        ("distilled mid-fit", lambda: saved_epoch(workdir, "distilled") >= 2),
    ]
    for label, condition in kill_points:
        before = finished_models(workdir)
        stop_when(start(workdir), condition)
        after = finished_models(workdir)
        # No finished model was trained again (its file was not rewritten).
        assert {k: after[k] for k in before} == before, label
    final = start(workdir)
    _, stderr = final.communicate()
    assert final.returncode == 0, stderr[-2000:]
    assert "distilled: resuming after epoch" in stderr
    assert "(reused)" in stderr
    assert results(workdir) == results(reference)
    # Training states are removed once their model is finished.
    assert not glob.glob(os.path.join(workdir, "state", "*.npz"))
    history = json.load(open(os.path.join(workdir, "metrics", "distilled.json")))["history"]
    reference_history = json.load(open(reference / "metrics" / "distilled.json"))["history"]
    assert history == reference_history and len(history["loss"]) == 12


def test_two_deterministic_runs_give_identical_metrics(tmp_path):
    args = ["--mode=train", "--dataset=digits", "--model=cnn", "--num_models=1", "--epochs=2",
            "--deterministic"]
    records = []
    for run in ("a", "b"):
        ok(tfkd(*args, f"--workdir={tmp_path / run}", process=True))
        records.append(json.load(open(tmp_path / run / "metrics" / "member_0.json")))
    assert records[0]["row"] == records[1]["row"]
    assert records[0]["history"] == records[1]["history"]


def test_diverging_loss_stops_with_model_epoch_and_causes(tmp_path):
    workdir = tmp_path / "run"
    ok(tfkd("--mode=train", "--smoke", "--model=mlp", "--num_models=1", f"--workdir={workdir}"))
    before = snapshot(workdir)
    result = tfkd("--mode=distill", "--smoke", "--model=mlp", "--num_models=1",
                  # 1e8 diverged on the first 256 examples, not on a stratified 256;
                  # 1e20 overflows float32 on any.
                  "--optimizer=sgd", "--learning_rate=1e20", "--overwrite",
                  f"--workdir={workdir}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfkd: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "distilled" in errors[0] and "epoch 1" in errors[0]
    assert "--learning_rate=1e+20" in errors[0] and "precision" in errors[0]
    assert not os.path.exists(workdir / "models" / "distilled.keras")
    assert changed_files(before, snapshot(workdir)) <= {"logs", "cache"}


def snapshot(workdir):
    """{relative path: content hash} of every file of the workdir."""
    files = {}
    for directory, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, workdir)] = hashlib.sha1(f.read()).hexdigest()
    return files


def changed_files(before, after):
    """Top-level workdir entries in which a file appeared, disappeared or changed."""
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return {p.split(os.sep)[0] for p in changed}


def test_damaged_artifacts_are_reported_and_redone(tmp_path):
    workdir = tmp_path / "run"
    common = ["--smoke", "--model=mlp", "--num_models=2", f"--workdir={workdir}"]
    ok(tfkd("--mode=pipeline", *common))
    # A damaged teacher cache, read again by the distilled student (whose files are gone).
    for cache in glob.glob(str(workdir / "cache" / "*.npy")):
        open(cache, "wb").write(b"not a numpy file")
    os.remove(workdir / "models" / "distilled.keras")
    result = ok(tfkd("--mode=distill", *common))
    assert "teacher cache" in result.stderr and "computing it again" in result.stderr
    # A truncated model and a garbled metrics file.
    model = workdir / "models" / "member_1.keras"
    model.write_bytes(model.read_bytes()[:100])
    (workdir / "metrics" / "distilled.json").write_text('{"row": ')
    untouched = workdir / "models" / "member_0.keras"
    mtime = os.stat(untouched).st_mtime_ns
    result = ok(tfkd("--mode=pipeline", *common))
    assert "member_1.keras is damaged: its contents do not match the checksum" in result.stderr
    assert "distilled.json is damaged: not JSON" in result.stderr
    # Students of the redone member are redone too; the rest is reused.
    assert ("self_distilled_1_g1: training it again, its teachers changed since it was trained "
            "(member_1.keras)") in result.stderr
    assert "self_distilled_0_g1" in result.stderr and "(reused)" in result.stderr
    assert os.stat(untouched).st_mtime_ns == mtime  # the intact member was reused
    import keras

    keras.saving.load_model(str(model), compile=False)  # redone, readable again


def test_unusable_training_state_starts_over(tmp_path):
    workdir = tmp_path / "run"
    args = ["--mode=train", "--smoke", "--model=mlp", "--num_models=1", f"--workdir={workdir}"]
    ok(tfkd(*args))
    os.remove(workdir / "models" / "member_0.keras")
    os.makedirs(workdir / "state", exist_ok=True)
    # A state file for exactly these settings, but damaged.
    record = json.load(open(workdir / "metrics" / "member_0.json"))
    from tfkd.modes.store import state_key

    key = state_key(record["settings"])
    (workdir / "state" / f"member_0-{key}.npz").write_bytes(b"PK\x03\x04 damaged")
    result = ok(tfkd(*args))
    assert "ignoring unusable training state" in result.stderr


# --- bad input: one line, exit code 2, nothing in the workdir changed -------------------------

@pytest.fixture(scope="module")
def finished_workdir(tmp_path_factory):
    """A workdir with a finished member on digits, and teachers of other shapes and classes."""
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("reliability")
    small = ["--smoke", "--model=mlp", "--num_models=1", "--mode=train"]
    ok(tfkd(*small, f"--workdir={root / 'run'}"))
    ok(tfkd(*small, "--dataset=mnist1d", f"--workdir={root / 'mnist1d_teachers'}"))
    with tfds.testing.mock_data(num_examples=32):
        ok(tfkd(*small, "--dataset=cifar100", f"--workdir={root / 'cifar100_teachers'}"))
    # Members and a distilled student: what --mode=analyze starts from.
    ok(tfkd(*small, "--num_models=2", f"--workdir={root / 'distilled'}"))
    ok(tfkd(*small[:-1], "--mode=distill", "--num_models=2", f"--workdir={root / 'distilled'}"))
    corrupt = root / "corrupt_teachers"
    ok(tfkd(*small, f"--workdir={corrupt}"))
    (corrupt / "models" / "member_0.keras").write_bytes(b"PK\x03\x04 not a model")
    (root / "a_file").write_text("not a directory")
    return root


def bad_invocations(root):
    run = f"--workdir={root / 'run'}"
    base = ["--smoke", "--model=mlp", "--num_models=1", run]
    distill = ["--mode=distill", "--smoke", "--model=mlp", "--num_models=1", run]
    return [  # (argv, text the one error line must contain)
        (["--mode=pretrain", *base], "pretrain"),
        (["--optimizer=lion", *base], "lion"),
        (["--lr_schedule=exponential", *base], "exponential"),
        (["--checkpoint=middle", *base], "middle"),
        (["--strategy=tpu", *base], "tpu"),
        (["--precision=float8", *base], "float8"),
        (["--augment=mixup", *base], "mixup"),
        (["--epochs=abc", *base], "abc"),
        (["--no_such_flag=1", *base], "no_such_flag"),
        ([*base, "stray_argument"], "stray_argument"),
        (["--dataset=cifar1000", *base], "cifar1000"),
        (["--smoke", "--model=vgg99", "--num_models=1", run], "vgg99"),
        (["--num_models=0", "--smoke", run], "num_models must be a whole number in [1, 10000], got 0"),
        (["--num_models=-3", "--smoke", run], "-3"),
        (["--epochs=0", *base], "epochs must be a whole number in [1, 1000000], got 0"),
        (["--batch_size=0", *base], "batch_size must be a whole number in [1, 2147483647], got 0"),
        (["--self_distill_steps=0", *base], "self_distill_steps"),
        (["--num_cpu_devices=0", *base], "num_cpu_devices"),
        (["--alpha=1.5", *base], "1.5"),
        (["--alpha=-0.1", *base], "-0.1"),
        (["--temperature=0", *base], "temperature must be a number > 0, got 0.0"),
        (["--temperature=-2", *base], "-2"),
        (["--learning_rate=0", *base], "learning_rate must be a number > 0"),
        (["--distillation_loss=cosine", *base], "cosine"),
        (["--teacher_average=median", *base], "median"),
        (["--seed=-1", *base], "seed must be a whole number in [0, 2147383647], got -1"),
        (["--momentum=1.5", *base], "1.5"),
        (["--weight_decay=-1", *base], "-1"),
        (["--lr_schedule=step", *base], "--lr_decay_epochs"),
        (["--lr_schedule=step", "--lr_decay_epochs=30,10", *base], "'30,10'"),
        (["--lr_decay_epochs=x,y", *base], "'x,y'"),
        (["--lr_decay_epochs=10", *base], "--lr_schedule=step"),
        (["--warmup_epochs=50", *base], "50"),
        (["--val_size=1.5", *base], "1.5"),
        (["--image_size=-1", "--dataset=cifar10", *base], "-1"),
        (["--data_dir=/tmp", *base], "'digits'"),
        (["--augment=crop_flip", "--dataset=mnist1d", *base], "crop_flip"),
        (["--dataset=imdb_reviews", *base], "imdb_reviews"),
        (["--learning_rate=0.5", "--mode=train", *base], "learning_rate=0.5"),
        (["--workdir=" + str(root / "a_file"), "--smoke"], str(root / "a_file")),
        (["--workdir=/proc/tfkd_workdir", "--smoke"], "/proc/tfkd_workdir"),
        ([*distill, "--teacher_dir=/nonexistent/teachers"], "/nonexistent/teachers"),
        ([*distill, f"--teacher_dir={root / 'mnist1d_teachers'}"], "(40, 1)"),
        ([*distill, "--dataset=cifar10", f"--teacher_dir={root / 'cifar100_teachers'}"],
         "100"),
        ([*distill, f"--teacher_dir={root / 'corrupt_teachers'}"], "member_0.keras"),
        (["--dataset=cifar10", "--data_dir=" + str(root / "no_tfds"), *base], "tfds build"),
        (["--mode=tune", "--tuner=grid", *base], "grid"),
        (["--mode=tune", "--max_trials=0", *base], "max_trials must be a whole number in [1, 100000]"),
        (["--mode=tune", "--tune_params=alpha,beta", *base], "'beta'"),
        (["--mode=tune", "--tune_alpha=0.5,2", *base], "'0.5,2.0'"),
        (["--mode=tune", "--tune_temperature=5,1", *base], "'5.0,1.0'"),
        (["--mode=tune", "--tune_learning_rate=0,0.1", *base], "'0.0,0.1'"),
        (["--self_distill_alpha=often", *base], "'often'"),
        (["--hint_layer=no_such_layer", *distill], "'no_such_layer'"),
        (["--hint_layer=a:b:c", *base], "'a:b:c'"),
        (["--hint_layer=features", "--hint_weight=-1", *base], "hint_weight"),
        (["--hint_weight=2", *base], "hint_weight=2.0 needs --hint_layer"),
        (["--mode=tune", "--tune_params=hint_weight", *base], "hint_weight"),
        # A method's setting searched where its method never runs; the methods' list.
        (["--mode=tune", "--tune_params=dkd_beta", *base],
         "tune_params names dkd_beta, a setting of dkd, but the search runs "
         "--distillation_loss=kl"),
        (["--mode=tune", "--tune_params=distillation_loss,dkd_alpha", "--tune_methods=kl",
          *base], "tune_params names dkd_alpha, a setting of dkd, but the search runs "
         "--tune_methods=kl"),
        (["--mode=tune", "--tune_methods=kl,nope", *base], "unknown tune_methods entry 'nope'"),
        (["--mode=tune", "--tune_methods=", *base], "tune_methods must name at least one"),
        (["--mode=tune", "--tune_dkd_beta=0,5", *base], "tune_dkd_beta must be two increasing"),
        # Non-finite and out-of-range numbers are refused before TensorFlow sees them.
        (["--learning_rate=inf", *base], "learning_rate must be a finite number"),
        (["--weight_decay=inf", *base], "weight_decay must be a finite number"),
        (["--temperature=nan", *base], "temperature must be a finite number"),
        (["--mode=tune", "--tune_temperature=1,inf", *base], "'1.0,inf'"),
        (["--seed=4294967296", *base], "4294967296"),
        (["--batch_size=99999999999999999999", *base], "99999999999999999999"),
        (["--verbose=7", *base], "7"),
        (["--tune_params=", *base], "tune_params must name at least one"),
        # Models that cannot read the data: found once the data is loaded, before training.
        (["--smoke", "--model=patch_net", "--num_models=1", run],
         "patch_net takes inputs of rank 2 (patches, dim), got input_shape=(8, 8, 1)"),
        (["--smoke", "--model=wrn16_1", "--dataset=mnist1d", "--num_models=1", run],
         "wrn16_1 takes inputs of rank 3"),
        (["--smoke", "--model=resnet18", "--dataset=multiview", "--num_models=1", run],
         "resnet18 takes inputs of rank 3"),
        # Sizes the data cannot hold (with or without --smoke: see test_cli_property.py),
        # a missing analysis layer, an infinite temperature.
        (["--nosmoke", "--val_size=100000", "--model=mlp", "--num_models=1", run],
         "val_size=100000 holds out 100000 of"),
        (["--nosmoke", "--val_size=0.9999", "--model=mlp", "--num_models=1", run],
         "val_size=0.9999"),
        (["--mode=analyze", "--analysis_layer=no_such_layer", "--smoke",
          f"--workdir={root / 'distilled'}"], "'no_such_layer'"),
        (["--temperature=inf", *base], "temperature must be a finite number"),
        # Members of other data, consumed as they are (found by tests/test_cli_property.py).
        (["--mode=ensemble", "--smoke", "--model=mlp", "--num_models=1", "--dataset=mnist1d",
          run], "(8, 8, 1)"),
    ]


def test_thirty_plus_bad_invocations(finished_workdir, capsys, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    cases = bad_invocations(finished_workdir)
    assert len(cases) >= 30
    before = snapshot(finished_workdir / "run")
    for argv, named in cases:
        if any("cifar10" in a for a in argv) and "--teacher_dir" in " ".join(argv):
            with tfds.testing.mock_data(num_examples=32):
                code = invoke(argv)
        else:
            code = invoke(argv)
        stderr = capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("tfkd: error:")]
        assert code == 2, (argv, code, stderr[-1500:])
        assert len(errors) == 1, (argv, stderr[-1500:])
        assert named in errors[0], (argv, errors[0])
        assert "Traceback" not in stderr, argv
        assert snapshot(finished_workdir / "run") == before, argv
    # The analysis layer was refused before the independent student could train.
    assert not (finished_workdir / "distilled" / "models" / "independent.keras").exists()


def test_bad_environment_and_flagfile_bytes_are_one_line(finished_workdir, capsys, monkeypatch,
                                                         tmp_path):
    run = f"--workdir={finished_workdir / 'run'}"
    before = snapshot(finished_workdir / "run")
    flagfile = tmp_path / "latin1.flags"
    flagfile.write_bytes(b"--model=mlp\n# caf\xe9\n")
    cases = [({}, [f"--flagfile={flagfile}", "--smoke", run], "not UTF-8"),
             # Read under multi_worker only (ignored otherwise: tests/test_cluster.py).
             ({"TF_CONFIG": "{not json"}, ["--smoke", "--strategy=multi_worker", run],
              "TF_CONFIG"),
             ({"TF_CONFIG": '{"task": {"type": "worker", "index": "first"}}'},
              ["--smoke", "--strategy=multi_worker", run], "TF_CONFIG")]
    for env, argv, named in cases:
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            code = invoke(argv)
        stderr = capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("tfkd: error:")]
        assert code == 2 and len(errors) == 1 and named in errors[0], (argv, stderr[-1500:])
        assert "Traceback" not in stderr
    assert snapshot(finished_workdir / "run") == before
