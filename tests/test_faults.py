"""Faults a run meets: signals at chosen moments, a full disk, a second run on the same workdir,
damaged caches and states, a kill in the middle of a redo, files a killed write left behind.

Each test compares with an uninterrupted run of the same `--deterministic` pipeline, so
"resumed correctly" means: the same results table, bit for bit the same weights, and no
finished model trained again.
"""

import glob
import json
import os
import shutil
import signal
import types
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.command import invoke, process_env
from test_reliability import finished_models, results, saved_epoch, snapshot, start, stop_when

# What tfkd's temporary files look like (tfkd.workdir.TEMPORARY), as a glob.
TEMPORARIES = ".*.tfkd-tmp-*"
SIGNAL_EXIT = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}


def exists(workdir, *parts):
    return lambda: os.path.exists(os.path.join(workdir, *parts))


def epoch_reached(workdir, name, epoch):
    return lambda: saved_epoch(workdir, name) >= epoch


# The moments of a pipeline (2 members, ensemble, distilled, 1 self-distillation step) at
# which a run is stopped: mid-fit, just after a model file appears (its metrics not yet
# written), between stages, and in each kind of student.
MOMENTS = {
    "member_0 mid-fit": lambda w: epoch_reached(w, "member_0", 3),
    "member_1 file written": lambda w: exists(w, "models", "member_1.keras"),
    "ensemble evaluated": lambda w: exists(w, "metrics", "ensemble.json"),
    "distilled mid-fit": lambda w: epoch_reached(w, "distilled", 2),
    "self-distilled mid-fit": lambda w: epoch_reached(w, "self_distilled_1_g1", 4),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted pipeline: its workdir."""
    workdir = tmp_path_factory.mktemp("faults") / "uninterrupted"
    clean = start(workdir)
    _, stderr = clean.communicate()
    assert clean.returncode == 0, stderr[-2000:]
    return workdir


def assert_same_weights(workdir, reference):
    import keras

    for path in sorted(glob.glob(os.path.join(reference, "models", "*.keras"))):
        name = os.path.basename(path)
        ours = keras.saving.load_model(os.path.join(workdir, "models", name), compile=False)
        theirs = keras.saving.load_model(path, compile=False)
        for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def interrupt_and_resume(workdir, reference, stops):
    """Stops the pipeline at each (moment, signal) in turn, then lets it finish; checks the
    interrupted runs' exits and that the end equals the uninterrupted run."""
    for moment, sig in stops:
        before = finished_models(workdir)
        process = start(workdir)
        code, stderr = stop_when(process, MOMENTS[moment](str(workdir)), sig)
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL, moment
        else:
            # One line that says what was kept and how to go on; no traceback.
            assert code == SIGNAL_EXIT[sig], (moment, stderr[-2000:])
            assert "Traceback" not in stderr, moment
            line = [ln for ln in stderr.splitlines() if ln.startswith("tfkd: interrupted")]
            assert len(line) == 1 and signal.Signals(sig).name in line[0], moment
            assert "run the same command again" in line[0]
        after = finished_models(workdir)
        assert {k: after[k] for k in before} == before, f"{moment}: a finished model changed"
        if sig != signal.SIGKILL:
            # A stopped write removes its temporary file (a killed one: the next run does).
            assert not glob.glob(os.path.join(workdir, "*", TEMPORARIES)), moment
    final = start(workdir)
    _, stderr = final.communicate()
    assert final.returncode == 0, stderr[-2000:]
    assert results(workdir) == results(reference)
    assert_same_weights(workdir, reference)
    for name in ("member_0", "distilled"):
        history = json.load(open(os.path.join(workdir, "metrics", f"{name}.json")))["history"]
        expected = json.load(open(os.path.join(reference, "metrics", f"{name}.json")))["history"]
        # Every epoch ran exactly once: the history has each epoch once, as uninterrupted.
        assert history == expected and len(history["loss"]) == 12, name
    assert not glob.glob(os.path.join(workdir, "state", "*.npz"))
    assert not glob.glob(os.path.join(workdir, "*", TEMPORARIES))
    return stderr


def test_each_signal_stops_a_pipeline_that_then_resumes_exactly(tmp_path, reference):
    stderr = interrupt_and_resume(tmp_path / "w", reference, [
        ("member_0 mid-fit", signal.SIGTERM),
        ("member_1 file written", signal.SIGINT),
        ("ensemble evaluated", signal.SIGKILL),
        ("distilled mid-fit", signal.SIGTERM),
    ])
    assert "distilled: resuming after epoch" in stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=lambda s: signal.Signals(s).name)
def test_each_signal_at_five_moments_resumes_exactly(tmp_path, reference, sig):
    interrupt_and_resume(tmp_path / "w", reference, [(m, sig) for m in MOMENTS])


def test_a_second_run_on_a_busy_workdir_is_refused(tmp_path):
    workdir = tmp_path / "w"
    first = start(workdir, "--epochs=200")
    lock = workdir / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text()):
        assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
        time.sleep(0.05)
    try:
        # Other settings, other mode: still one run at a time.
        second = subprocess.run(
            [sys.executable, "-m", "tfkd", "--mode=distill", "--learning_rate=0.01",
             f"--workdir={workdir}"], env=process_env(), capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("tfkd: error:")]
    assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
    assert f"in use by tfkd process {first.pid}" in errors[0] and "--mode=train" not in errors[0]
    assert "wait for that run to end" in errors[0]
    # The lock goes with its process: the next run takes the workdir. (A first run stopped
    # before it wrote anything leaves no workdir at all, its lock included.)
    assert not lock.exists() or lock.read_text() == ""


@pytest.fixture
def finished(tmp_path, reference):
    """A copy of the uninterrupted pipeline's workdir."""
    workdir = tmp_path / "w"
    shutil.copytree(reference, workdir)
    return workdir


def test_a_cache_of_finite_garbage_is_computed_again(finished, reference):
    caches = glob.glob(str(finished / "cache" / "*.npy"))
    assert caches
    rng = np.random.default_rng(0)
    for path in caches:
        # A valid header and finite values: only the checksum can tell.
        logits = np.load(path)
        np.save(path, rng.normal(size=logits.shape).astype(logits.dtype))
    for name in ("distilled", "self_distilled_0_g1", "self_distilled_1_g1"):
        os.remove(finished / "models" / f"{name}.keras")
    process = start(finished)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr[-2000:]
    assert stderr.count("its contents do not match their checksum; computing it again") >= 2
    assert results(finished) == results(reference)


def test_a_changed_training_state_is_not_resumed(tmp_path, reference):
    workdir = tmp_path / "w"
    code, _ = stop_when(start(workdir), MOMENTS["member_0 mid-fit"](str(workdir)),
                        signal.SIGKILL)
    [path] = glob.glob(str(workdir / "state" / "member_0-*.npz"))
    # A valid archive whose weights changed after it was written.
    with np.load(path) as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays["v0"] = arrays["v0"] + 1.0
    np.savez(path, **arrays)
    process = start(workdir, "--mode=train")
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr[-2000:]
    assert "ignoring unusable training state" in stderr and "checksum" in stderr
    # Trained from the start instead, so it equals the uninterrupted member.
    assert (json.load(open(workdir / "metrics" / "member_0.json"))["history"]
            == json.load(open(reference / "metrics" / "member_0.json"))["history"])


def test_a_half_written_training_state_is_discarded(tmp_path):
    workdir = tmp_path / "w"
    stop_when(start(workdir), MOMENTS["member_0 mid-fit"](str(workdir)), signal.SIGKILL)
    [path] = glob.glob(str(workdir / "state" / "member_0-*.npz"))
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    process = start(workdir, "--mode=train")
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr[-2000:]
    assert "member_0: ignoring unusable training state" in stderr
    assert "member_0: resuming" not in stderr


def test_a_kill_during_a_redo_ends_in_a_retrain_not_a_refusal(finished, reference):
    os.remove(finished / "models" / "member_1.keras")
    # Killed once the redone member is finished (its record holds the new file's hash),
    # before any of its students is redone.
    old = json.load(open(reference / "metrics" / "member_1.json"))["sha"]
    stop_when(start(finished), lambda: json.load(open(
        finished / "metrics" / "member_1.json"))["sha"] != old, signal.SIGKILL)
    process = start(finished)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr[-2000:]
    for student in ("distilled", "self_distilled_1_g1"):
        assert (f"{student}: training it again, its teachers changed since it was trained "
                "(member_1.keras)") in stderr
    assert "self_distilled_0_g1" in stderr and "(reused)" in stderr
    assert results(finished) == results(reference)


def test_temporary_files_of_a_killed_write_are_removed(finished):
    leftovers = [finished / "models" / ".member_0.tfkd-tmp-k2j3h4ab.keras",
                 finished / "metrics" / ".member_0.tfkd-tmp-x8y9z0ab.json",
                 finished / "state" / ".member_0-abc.tfkd-tmp-q1w2e3ab.npz",
                 finished / ".probe.tfkd-tmp-ab12cd34"]
    for path in leftovers:
        path.write_bytes(b"half")
    before = finished_models(finished)
    process = start(finished)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr[-2000:]
    assert "removed 4 temporary file(s)" in stderr
    assert not any(p.exists() for p in leftovers)
    assert finished_models(finished) == before


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    return result.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                    reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("size", ["150k", pytest.param("600k", marks=pytest.mark.slow)],
                         ids=["during members", "during students"])
def test_a_full_disk_ends_in_one_line_and_the_same_command_continues(tmp_path, reference, size):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, size):
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        workdir = disk / "w"
        process = start(workdir)
        _, stderr = process.communicate()
        errors = [ln for ln in stderr.splitlines() if ln.startswith("tfkd: error:")]
        assert process.returncode == 1 and len(errors) == 1, stderr[-2000:]
        assert "Traceback" not in stderr
        assert f"no space left on the device of {workdir}" in errors[0]
        assert "writing it takes about" in errors[0] and "are free" in errors[0]
        # No partial artifact: no temporary file, every model that is there is finished.
        assert not glob.glob(str(workdir / "*" / TEMPORARIES))
        for path in glob.glob(str(workdir / "models" / "*.keras")):
            name = os.path.basename(path)[:-len(".keras")]
            json.load(open(workdir / "metrics" / f"{name}.json"))
        before = snapshot(workdir)
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        process = start(workdir)
        _, stderr = process.communicate()
        assert process.returncode == 0, stderr[-2000:]
        assert results(workdir) == results(reference)
        assert before  # something had been kept from the first attempt
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_signal_whose_raise_was_lost_still_stops_the_run(tmp_path, monkeypatch, capsys):
    """Python drops an exception raised while a `__del__` runs, and TensorFlow's deleters
    run some: a SIGTERM can land there (seen in the slow test above: the run trained to the
    end and exited 0; and in CI, where Python printed the dropped raise as a traceback). The
    stop is recorded as well as raised, the record stops the run at the end of the epoch,
    its state saved, and the dropped raise prints nothing."""
    from tfkd import resume, runtime

    save = resume.TrainingState._save

    class Deleter:
        def __del__(self):  # the signal lands while a deleter runs
            runtime.request_stop(signal.SIGTERM)

    def save_then_lose_a_signal(self):
        save(self)
        if runtime.stop_requested is None:
            Deleter()  # its raise is dropped by Python; the record stays

    monkeypatch.setattr(resume.TrainingState, "_save", save_then_lose_a_signal)
    # Python's own hook, which prints a dropped raise (pytest's would collect it instead).
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    workdir = tmp_path / "w"
    code = invoke(["--mode=train", "--model=mlp", "--num_models=1", "--epochs=3",
                   "--train_size=300", "--allow_chance", f"--workdir={workdir}"])
    stderr = capsys.readouterr().err
    assert code == SIGNAL_EXIT[signal.SIGTERM], stderr[-2000:]
    assert "tfkd: interrupted by SIGTERM" in stderr and "resumes after epoch 1 of 3" in stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-2000:]
    assert saved_epoch(str(workdir), "member_0") == 1
    assert not os.path.exists(workdir / "models" / "member_0.keras")
    runtime.stop_requested = None


def test_a_model_that_learned_nothing_fails_the_run_and_is_not_saved(tmp_path, capsys):
    """Adam at a learning rate of 10 trains to chance accuracy and a finite loss; the run
    fails (exit 1) instead of saving it as finished, and says what to try."""
    workdir = tmp_path / "w"
    code = invoke(["--mode=train", "--model=mlp", "--num_models=1", "--epochs=3",
                   "--train_size=300", "--learning_rate=10", f"--workdir={workdir}"])
    stderr = capsys.readouterr().err
    errors = [ln for ln in stderr.splitlines() if ln.startswith("tfkd: error:")]
    assert code == 1 and len(errors) == 1, stderr[-2000:]
    assert "member_0 learned nothing in 3 epochs" in errors[0]
    assert "--learning_rate=10" in errors[0] and "--allow_chance" in errors[0]
    # The rule and its threshold are stated, not only the majority rate.
    assert "plus two standard errors" in errors[0] and "is not above" in errors[0]
    assert not os.path.exists(workdir / "models" / "member_0.keras")


def test_a_validation_split_too_small_to_judge_warns_and_keeps_the_model(tmp_path):
    """The same chance-level model with 19 validation examples: two standard errors are 14
    points there, too wide to judge, so the run warns, keeps the model and exits 0."""
    from helpers.command import tfkd

    workdir = tmp_path / "w"
    result = tfkd("--mode=train", "--model=mlp", "--num_models=1", "--epochs=3",
                  "--train_size=300", "--val_size=19", "--learning_rate=10",
                  f"--workdir={workdir}")
    stderr = result.stderr
    assert result.returncode == 0, stderr[-2000:]
    warning = [ln for ln in stderr.splitlines() if "may have learned nothing" in ln]
    assert len(warning) == 1 and "19 validation examples are too few" in warning[0]
    assert "--val_size" in warning[0]
    assert os.path.exists(workdir / "models" / "member_0.keras")


@pytest.mark.parametrize("n,majority_count,accuracy,verdict", [
    (19, 10, 11 / 19, "too_small"),  # the 57.89% against 52.63%
    (19, 10, 0.99, None),
    (360, 36, 0.10, "chance"),
    (360, 36, 0.20, None),
    (40, 30, 0.75, "too_small"),
])
def test_the_chance_rule(n, majority_count, accuracy, verdict):
    from tfkd.modes.results import chance_verdict

    y = np.array([0] * majority_count + list(np.arange(n - majority_count) % 9 + 1))
    got, why = chance_verdict(types.SimpleNamespace(y_val=y), accuracy)
    assert got == verdict
    if verdict:
        share = 100 * majority_count / n
        assert f"{share:.2f}% of {n} validation examples" in why


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                    reason="a read-only mount needs root (root writes through chmod)")
def test_a_read_only_models_folder_is_found_before_training(tmp_path, capsys):
    workdir = tmp_path / "w"
    models = workdir / "models"
    os.makedirs(models)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(models)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        code = invoke(["--mode=train", "--model=mlp", "--num_models=1", "--epochs=1",
                       f"--workdir={workdir}"])
        stderr = capsys.readouterr().err
        errors = [ln for ln in stderr.splitlines() if ln.startswith("tfkd: error:")]
        assert code == 2 and len(errors) == 1, stderr[-2000:]
        assert str(models) in errors[0] and "member_0" not in stderr  # nothing trained
    finally:
        subprocess.run(["umount", "-l", str(models)], capture_output=True)
