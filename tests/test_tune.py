"""--mode=tune: keras-tuner over temperature, alpha and learning rate."""

import csv
import json
import os
import random
import shutil

import pytest

from helpers.command import ok, tfkd

TUNE = ["--mode=tune", "--smoke", "--model=mlp", "--max_trials=3"]


def test_three_trials_best_flagfile_distills_and_rerun_resumes(tmp_path):
    workdir = tmp_path / "run"
    first = ok(tfkd(*TUNE, f"--workdir={workdir}"))
    assert first.stdout.count("Running Trial") == 3
    tune = workdir / "tune"
    with open(tune / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 3
    assert set(trials[0]) == {"trial", "temperature", "alpha", "learning_rate", "val_accuracy"}
    best = trials[0]
    assert float(best["val_accuracy"]) == max(float(t["val_accuracy"]) for t in trials)
    for t in trials:
        assert 1.0 <= float(t["temperature"]) <= 20.0 and 0.0 <= float(t["alpha"]) <= 1.0
    assert (tune / "trials.md").read_text().count("\n|") >= 4
    assert (tune / "trials.png").stat().st_size > 0
    flags = (tune / "best.flags").read_text()
    assert "--mode=distill" in flags and f"--teacher_dir={workdir}" in flags

    # distill accepts the flagfile as it is, and trains exactly the best trial's student.
    distilled = tmp_path / "distilled"
    ok(tfkd(f"--flagfile={tune / 'best.flags'}", f"--workdir={distilled}", "--smoke"))
    record = json.load(open(distilled / "metrics" / "distilled.json"))
    assert abs(record["row"]["val_accuracy"] - float(best["val_accuracy"])) < 1e-6
    assert abs(record["settings"]["alpha"] - float(best["alpha"])) < 1e-12

    # A re-run continues the search: no finished trial runs again.
    again = ok(tfkd(*TUNE, f"--workdir={workdir}"))
    assert "Running Trial" not in again.stdout
    assert "3 finished trials found" in again.stderr
    # More trials continue the same search: only the fourth runs.
    more = ok(tfkd("--mode=tune", "--smoke", "--model=mlp", "--max_trials=4",
                   f"--workdir={workdir}"))
    assert more.stdout.count("Running Trial") == 1 and "3 finished trials" in more.stderr


def test_bayesian_and_hyperband_under_mirrored_strategy(tmp_path):
    for tuner in ("bayesian", "hyperband"):
        workdir = tmp_path / tuner
        ok(tfkd(*TUNE, f"--tuner={tuner}", "--tune_params=alpha,temperature",
                "--strategy=mirrored", "--num_cpu_devices=2", f"--workdir={workdir}",
                process=True))
        with open(workdir / "tune" / "trials.csv") as f:
            trials = list(csv.DictReader(f))
        assert trials and "learning_rate" not in trials[0]
        assert os.path.exists(workdir / "tune" / "best.flags")


def test_hint_weight_search_writes_a_flagfile_distill_accepts(tmp_path):
    workdir = tmp_path / "run"
    ok(tfkd("--mode=tune", "--smoke", "--max_trials=2", "--hint_layer=features",
            "--tune_params=hint_weight", "--tune_hint_weight=0.01,1", f"--workdir={workdir}"))
    with open(workdir / "tune" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 2 and set(trials[0]) == {"trial", "hint_weight", "val_accuracy"}
    assert all(0.01 <= float(t["hint_weight"]) <= 1 for t in trials)
    flags = (workdir / "tune" / "best.flags").read_text()
    assert "--hint_layer=features" in flags and "--hint_weight=" in flags
    distilled = tmp_path / "distilled"
    ok(tfkd(f"--flagfile={workdir / 'tune' / 'best.flags'}", f"--workdir={distilled}",
            "--smoke"))
    record = json.load(open(distilled / "metrics" / "distilled.json"))
    assert abs(record["settings"]["hint_weight"] - float(trials[0]["hint_weight"])) < 1e-9
    assert abs(record["row"]["val_accuracy"] - float(trials[0]["val_accuracy"])) < 1e-6


def trials_of(workdir):
    with open(workdir / "tune" / "trials.csv") as f:
        return sorted(csv.DictReader(f), key=lambda t: t["trial"])


def test_the_same_settings_search_the_same_trials(tmp_path):
    """keras-tuner reads seed 0 as "no seed" (`seed or random.randint(...)`): with tfkd's
    default --seed=0, a search on members trained earlier sampled other trials each time."""
    ok(tfkd("--mode=train", "--smoke", "--model=mlp", f"--workdir={tmp_path / 'members'}"))
    for seed in ("0", "7"):
        searched = []
        for copy in ("a", "b"):
            workdir = tmp_path / f"{copy}{seed}"
            shutil.copytree(tmp_path / "members", workdir)
            random.seed(copy)  # whatever state Python's generator is in
            ok(tfkd(*TUNE, f"--seed={seed}", f"--workdir={workdir}"))
            searched.append([{k: v for k, v in t.items() if k != "val_accuracy"}
                             for t in trials_of(workdir)])
        assert searched[0] == searched[1], seed


@pytest.mark.slow
def test_two_deterministic_searches_give_identical_trials(tmp_path):
    """With --deterministic, the default settings give the same trials, scores included."""
    runs = [trials_of(workdir) for workdir in (tmp_path / "a", tmp_path / "b")
            if ok(tfkd(*TUNE, "--max_trials=2", "--deterministic", f"--workdir={workdir}",
                       process=True))]
    assert runs[0] == runs[1] and len(runs[0]) == 2


# -- the method and its own settings -------------------------------------------------------

def test_a_method_setting_is_drawn_only_in_the_trials_of_its_method():
    import keras_tuner as kt

    from tfkd.config import Config
    from tfkd.modes.tune import trial_config

    config = Config(mode="tune", tune_params=("distillation_loss", "dkd_beta", "temperature"),
                    tune_methods=("kl", "dkd"), tune_dkd_beta=(2.0, 3.0))
    drawn = {}
    for method in ("kl", "dkd"):
        hp = kt.HyperParameters()  # as an oracle hands a trial its values
        hp.Choice("distillation_loss", ["kl", "dkd"], default=method)
        trial_config(hp, config)  # declares the rest of the space
        hp.values.update(dkd_beta=2.7, temperature=3.0)
        trial = trial_config(hp, config)
        assert trial.distillation_loss == method and trial.temperature == 3.0
        drawn[method] = (trial, hp)
    kl, kl_hp = drawn["kl"]
    dkd, dkd_hp = drawn["dkd"]
    assert kl.dkd_beta == Config().dkd_beta and not kl_hp.is_active("dkd_beta")
    assert dkd_hp.is_active("dkd_beta") and dkd.dkd_beta == 2.7


def test_the_best_flagfile_names_the_chosen_method_and_only_its_settings(tmp_path):
    from tfkd.config import Config
    from tfkd.modes.tune import OBJECTIVE, best_flagfile

    config = Config(mode="tune", tune_params=("distillation_loss", "dkd_beta"), dkd_alpha=0.5)
    dkd = best_flagfile(config, {"trial": "3", "distillation_loss": "dkd", "dkd_beta": 2.5,
                                 OBJECTIVE: 0.9}, str(tmp_path))
    lines = dkd.splitlines()
    assert "--distillation_loss=dkd" in lines and "--dkd_beta=2.5" in lines
    assert "--dkd_alpha=0.5" in lines and "--dkd_warmup_epochs=20" in lines
    kl = best_flagfile(config, {"trial": "1", "distillation_loss": "kl", OBJECTIVE: 0.9},
                       str(tmp_path))
    assert "--distillation_loss=kl" in kl.splitlines() and "dkd_" not in kl


def test_a_search_over_methods_and_dkd_beta_gives_a_flagfile_distill_reproduces(tmp_path):
    workdir = tmp_path / "run"
    ok(tfkd(*TUNE, "--max_trials=4", "--tune_params=distillation_loss,dkd_beta,alpha",
            "--tune_dkd_beta=1,4", f"--workdir={workdir}"))
    trials = trials_of(workdir)
    assert len(trials) == 4 and {t["distillation_loss"] for t in trials} == {"kl", "dkd"}
    for t in trials:  # dkd_beta only where dkd ran
        assert (t["dkd_beta"] != "") == (t["distillation_loss"] == "dkd"), t
        if t["dkd_beta"]:
            assert 1.0 <= float(t["dkd_beta"]) <= 4.0
    assert (workdir / "tune" / "trials.png").stat().st_size > 0
    best = max(trials, key=lambda t: float(t["val_accuracy"]))
    flags = (workdir / "tune" / "best.flags").read_text().splitlines()
    assert f"--distillation_loss={best['distillation_loss']}" in flags
    assert any(line.startswith("--dkd_beta=") for line in flags) == bool(best["dkd_beta"])
    distilled = tmp_path / "distilled"
    ok(tfkd(f"--flagfile={workdir / 'tune' / 'best.flags'}", f"--workdir={distilled}",
            "--smoke"))
    record = json.load(open(distilled / "metrics" / "distilled.json"))
    assert record["settings"]["distillation_loss"] == best["distillation_loss"]
    if best["dkd_beta"]:
        assert abs(record["settings"]["dkd_beta"] - float(best["dkd_beta"])) < 1e-9
    assert abs(record["row"]["val_accuracy"] - float(best["val_accuracy"])) < 1e-6
