"""tools/fashion_mnist_repro.py: its paired tests find a planted difference and not a null one,
and its flags fail in one line (exit code 2)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "fashion_mnist_repro.py")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("fashion_mnist_repro", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def classifier(rng, n, accuracy):
    return rng.random(n) < accuracy


def synthetic(rng, n, member_acc, gain):
    """Per-image correctness of the run's 14 predictors: members of accuracy `member_acc`,
    everything else a copy of member_i whose wrong images are turned right with probability
    `gain` (so a planted gain is paired with the members, as a real one would be)."""
    members = [classifier(rng, n, member_acc) for _ in range(5)]

    def better(base):
        return base | (rng.random(n) < gain)

    correct = {f"member_{i}": m for i, m in enumerate(members)}
    correct["ensemble"] = better(members[0])
    for name in ("distilled", "distilled_6", "distilled_7"):
        correct[name] = better(members[int(rng.integers(5))])
    for i in range(5):
        correct[f"self_distilled_{i}"] = better(members[i])
    correct["self_distilled_ensemble"] = better(correct["ensemble"])
    return correct


def test_planted_gains_are_found(tool):
    stats = tool.claims(synthetic(np.random.default_rng(0), 10_000, 0.85, 0.1))
    for key in ("ensemble", "kd", "sd", "sd_ensemble"):
        assert stats[key]["p"] < 1e-6, key
        assert stats[key]["mean"] > 0, key
    assert all(m["p"] < 1e-3 for m in stats["sd"]["mcnemar_pairs"])


def test_no_gain_is_not_significant(tool):
    # Everything an independent classifier of the members' accuracy: no claim holds, and
    # over many such null runs one-sided p-values are uniform (about 5% below 0.05).
    rng = np.random.default_rng(1)
    ps = []
    for _ in range(40):
        correct = {name: classifier(rng, 2_000, 0.85) for name in (
            *(f"member_{i}" for i in range(5)), "ensemble", "distilled", "distilled_6",
            *(f"self_distilled_{i}" for i in range(5)), "self_distilled_ensemble")}
        stats = tool.claims(correct)
        ps += [stats[k]["p"] for k in ("ensemble", "kd", "sd", "sd_ensemble")]
    ps = np.array(ps)
    assert 0.0 < np.mean(ps < 0.05) < 0.12
    assert 0.35 < np.median(ps) < 0.65


def test_mcnemar_counts_discordant_pairs(tool):
    a = np.array([1, 1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 1], bool)
    result = tool.mcnemar_exact(a, b, "two-sided")
    assert (result["a_only"], result["b_only"]) == (2, 1)
    assert result["p"] == pytest.approx(1.0)  # 2 of 3 is what a fair coin gives often
    assert tool.mcnemar_exact(a, a)["p"] == 1.0  # no discordant pair: no evidence


def test_a_harmful_difference_is_not_a_gain(tool):
    d = np.r_[np.full(500, -1.0), np.zeros(9_500)]
    assert tool.paired_mean_test(d)["p"] > 0.999
    assert tool.paired_mean_test(d, "less")["p"] < 1e-10


@pytest.mark.parametrize("flags, message", [
    (["--kd_students=9"], "--kd_students must be a whole number in [1, 5], got 9"),
    (["--epochs=0"], "epochs"),
    (["--alpha=2"], "alpha"),
    (["--model=nope"], "model"),
    (["--train_size=x"], "--train_size: invalid int value"),
])
def test_bad_flags_fail_in_one_line(flags, message):
    done = subprocess.run([sys.executable, TOOL, *flags], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2
    # TensorFlow's C++ start-up lines may precede it (they are not ours to silence).
    errors = [line for line in done.stderr.splitlines()
              if line.startswith("fashion_mnist_repro: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "usage:" not in done.stderr


def test_inheritance_rows_list_each_seed_of_the_librarys_summary(tool):
    from tfkd.modes import analyze

    nan_free = [{"property": "agreement", "teacher": None, "skipped": None,
                 "students": {"distilled": {"value": 0.9}, "independent": {"value": 0.8},
                              "distilled_6": {"value": 0.7},
                              "independent_6": {"value": 0.75}}},
                {"property": "jitter", "teacher": None, "students": None, "skipped": "why"}]
    pairs = [(5, tool.kd_name(5), "independent"), (6, tool.kd_name(6), "independent_6")]
    [agreement] = tool.inheritance_rows(analyze.summarize(nan_free, pairs))  # skipped: out
    assert agreement[2:4] == ([0.9, 0.7], [0.8, 0.75])
    assert agreement[4] == [pytest.approx(0.1), pytest.approx(-0.05)]
    assert agreement[5]["n"] == 2
    assert tool.spread([0.2, None]) == "0.2000" and tool.spread([None]) == "-"
