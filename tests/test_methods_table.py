"""tools/methods_table.py: one teacher ensemble, students of several methods, the table with
mean ± std and paired tests against KD; its overrides reach the students; its bad input
fails in one line (exit code 2)."""

import csv
import json
import os

import numpy as np
import pytest

from helpers.tools import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("methods_table")


@pytest.fixture(scope="module")
def smoke_run(tool, tmp_path_factory):
    """Two methods (a variant among them) and the labels, 2 seeds, 1 teacher, tiny data."""
    workdir = str(tmp_path_factory.mktemp("methods_table"))
    code = tool.main(["--smoke", "--dataset=digits", "--num_models=1", "--seeds=2",
                      "--methods=kl_ls,probability_mse,labels",
                      "--method_flags=kl_ls:--temperature=2", f"--workdir={workdir}"])
    assert code == 0
    return workdir


def test_the_table_has_every_method_with_mean_std_and_paired_tests(smoke_run):
    with open(os.path.join(smoke_run, "methods_table.csv")) as f:
        rows = list(csv.DictReader(f))
    # kl, the reference, is added when not asked for.
    assert [r["method"] for r in rows] == ["kl", "kl_ls", "probability_mse", "labels"]
    for r in rows:
        assert r["students"] == "2"
        mean, std = (float(v) for v in r["test acc (%)"].split(" ± "))
        assert 0 <= mean <= 100 and std >= 0
    assert rows[0]["Δ vs KD (points)"] == "reference"
    for r in rows[1:]:
        float(r["Δ vs KD (points)"].split(" ± ")[0])
        assert len(r["Δ per seed"].split(", ")) == 2
        for column in ("p, paired t over seeds", "p, paired t over test images"):
            assert 0 <= float(r[column]) <= 1, (r["method"], column)
    with open(os.path.join(smoke_run, "methods_table.md")) as f:
        markdown = f.read()
    assert "| kl_ls | temperature=2.0, logit_standardization=True | 2 |" in markdown
    assert "| labels | labels only | 2 |" in markdown
    assert os.path.getsize(os.path.join(smoke_run, "methods_table.png")) > 0


def test_each_method_s_students_are_trained_with_its_own_settings(smoke_run):
    from tfkd.workdir import Workdir

    workdir = Workdir(smoke_run)
    for seed in (1, 2):  # --num_models=1: the students' seeds are 1 and 2
        kd = workdir.read_metrics(f"distilled_kl_{seed}")["settings"]
        ls = workdir.read_metrics(f"distilled_kl_ls_{seed}")["settings"]
        mse = workdir.read_metrics(f"distilled_probability_mse_{seed}")["settings"]
        labels = workdir.read_metrics(f"independent_{seed}")
        assert (kd["distillation_loss"], kd["temperature"], kd["seed"]) == ("kl", 4.0, seed)
        assert "logit_standardization" not in kd  # tfkd's default: not in the identity
        assert (ls["distillation_loss"], ls["logit_standardization"], ls["temperature"]) == (
            "kl", True, 2.0)
        assert mse["distillation_loss"] == "probability_mse"
        assert labels["role"] == "independent" and "teachers" not in labels["settings"]
    with open(os.path.join(smoke_run, "methods_table.json")) as f:
        record = json.load(f)
    assert record["methods"]["kl_ls"]["config"]["logit_standardization"] is True


def test_a_second_run_reuses_every_model(tool, smoke_run, capsys):
    metrics = os.path.join(smoke_run, "metrics")
    before = {f: os.stat(os.path.join(metrics, f)).st_mtime_ns for f in os.listdir(metrics)
              if f != "ensemble.json"}  # the ensemble is evaluated again, not trained
    assert len(before) == 1 + 4 * 2
    code = tool.main(["--smoke", "--dataset=digits", "--num_models=1", "--seeds=2",
                      "--methods=kl_ls,probability_mse,labels",
                      "--method_flags=kl_ls:--temperature=2", f"--workdir={smoke_run}"])
    assert code == 0
    after = {f: os.stat(os.path.join(metrics, f)).st_mtime_ns for f in before}
    assert after == before  # no record rewritten: every model reused
    assert "| kl | " in capsys.readouterr().out


def planted(rng, n, accuracy, gain):
    """Per-image correctness of a KD student and of a method's student of the same seed:
    the method's turns each image KD gets wrong right with probability `gain`."""
    kd = rng.random(n) < accuracy
    return kd, kd | (rng.random(n) < gain)


def fake_run(rng, gain, seeds=3, n=5_000):
    rows, correct, names = {}, {}, {"kl": [], "better": []}
    for s in range(seeds):
        kd, other = planted(rng, n, 0.85 + 0.01 * s, gain)
        for method, c in (("kl", kd), ("better", other)):
            name = f"{method}_{s}"
            correct[name], rows[name] = c, {"test_accuracy": float(np.mean(c))}
            names[method].append(name)
    return rows, correct, names


def test_a_planted_gain_is_found_and_no_gain_is_not(tool):
    stats = tool.compare(*fake_run(np.random.default_rng(0), gain=0.2))["better"]
    assert stats["over_images"]["p"] < 1e-10 and stats["over_images"]["mean"] > 2
    assert stats["over_seeds"]["p"] < 0.05 and stats["over_seeds"]["n"] == 3
    assert all(d > 0 for d in stats["difference"])
    null = [tool.compare(*fake_run(np.random.default_rng(k), gain=0.0))["better"]
            for k in range(3)]
    assert all(s["over_images"]["p"] == 1.0 for s in null)  # identical students: no evidence


def test_overrides_and_variants_reach_the_method_settings(tool):
    args = tool.parse_args(["--methods=kl,kl_ls,dkd,labels", "--epochs=24",
                            "--method_flags=dkd:--dkd_beta=2 --temperature=2",
                            "--method_flags=kl_ls:--nologit_standardization"])
    dkd, kl, kl_ls = args.configs["dkd"], args.configs["kl"], args.configs["kl_ls"]
    assert (dkd.distillation_loss, dkd.dkd_beta, dkd.temperature) == ("dkd", 2.0, 2.0)
    assert dkd.dkd_warmup_epochs == 2  # the paper's 20 of 240 epochs, of 24
    assert (kl.distillation_loss, kl.temperature, kl.logit_standardization) == ("kl", 4.0, False)
    assert kl_ls.logit_standardization is False  # the user's flag wins over the variant's
    assert args.configs["labels"].distillation_loss == "kl"  # untouched: no teacher


def test_the_default_methods_are_every_tfkd_method_the_variants_and_the_labels(tool):
    from tfkd import terms

    methods = tool.parse_args([]).methods
    assert methods[:2] == ["kl", "labels"] and len(set(methods)) == len(methods)
    assert set(methods) == set(terms.NAMES) | {"kl_ls", "labels"}


@pytest.mark.parametrize("flags, message", [
    (["--methods=kl,nope"], "unknown method 'nope'; choose from: kl, labels,"),
    (["--methods=kl,kl"], "expected distinct method names"),
    (["--seeds=0"], "--seeds: expected a whole number >= 1, got '0'"),
    (["--methods=kl", "--method_flags=dkd:--dkd_beta=2"], "names 'dkd', which is not among "
                                                          "the methods"),
    (["--methods=dkd", "--method_flags=dkd"], "must be METHOD:FLAGS"),
    (["--methods=dkd", "--method_flags=dkd:--dkd_beta=x"], "--method_flags dkd: flag "
                                                           "--dkd_beta=x"),
    (["--methods=dkd", "--method_flags=dkd:--dkd_beta=-1"], "dkd_beta must be a number in"),
    (["--methods=dkd", "--method_flags=dkd:--nope=1"], "Unknown command line flag 'nope'"),
    (["--method_flags=kl:--dkd_beta=2"], "--dkd_beta is not a setting of kl's; it takes: "
                                         "--temperature, --alpha, --logit_standardization"),
    (["--methods=dkd", "--method_flags=dkd:--epochs=3"], "--epochs is not a setting of dkd's"),
    (["--methods=labels", "--method_flags=labels:--temperature=2"],
     "it takes: none (labels only)"),
    (["--methods=dkd", "--method_flags=dkd:dkd_beta=2"], "expected tfkd flags written "
                                                         "--name=value, got 'dkd_beta=2'"),
    (["--methods=dkd", "--method_flags=dkd:--alpha=2"], "alpha must be a number in [0, 1]"),
    (["--epochs=0"], "epochs"),
    (["--model=nope"], "model"),
    (["--plot=a.jpg"], "--plot must name a .png file"),
])
def test_bad_input_fails_in_one_line(tool, capsys, flags, message):
    with pytest.raises(SystemExit) as stopped:
        tool.parse_args(flags)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("methods_table: error:") and err.count("\n") == 1, err
    assert message in err, err
