"""--mode=analyze end to end on digits, on a tiny setting."""

import json
import os
import re
import shlex

import numpy as np
from helpers.command import ok, tfkd
from scipy import stats

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_analyze_trains_the_independent_student_and_writes_the_report(tmp_path):
    workdir = tmp_path / "run"
    common = ["--smoke", "--num_models=2", "--analysis_examples=64", "--pgd_steps=3",
              f"--workdir={workdir}"]
    ok(tfkd("--mode=train", *common))
    refused = tfkd("--mode=analyze", *common)
    assert refused.returncode == 2 and "--mode=distill" in refused.stderr
    ok(tfkd("--mode=distill", *common))
    result = ok(tfkd("--mode=analyze", *common))
    assert "[1/1] independent" in result.stderr
    analysis = json.load(open(workdir / "analysis.json"))
    rows = {row["property"]: row for row in analysis["properties"]}
    assert analysis["examples"] == 64 and analysis["teacher"] == "ensemble of 2"
    for name in ("top-1 agreement with teacher", "Grad-CAM similarity with teacher",
                 "jitter consistency", "test ECE"):
        row = rows[name]
        assert row["difference"] == row["distilled"] - row["independent"]
    for row in analysis["properties"]:
        if "transfer" in row["property"] or "agreement" in row["property"]:
            for key in ("distilled", "independent"):
                value = row[key]
                assert value is None or 0.0 <= value <= 1.0
    agreement = rows["top-1 agreement with teacher"]["distilled"]
    assert agreement == analysis["compare"]["distilled"]["agreement"]
    table = (workdir / "analysis.md").read_text()
    assert "| property | teacher | teacher-distilled | teacher-independent | difference |" in table
    for figure in ("analysis.png", "gradcam.png"):
        assert (workdir / figure).stat().st_size > 1000

    # Several student seeds: distilled_3 and independent_3 join distilled and independent
    # (seed 2), which are reused; each property as mean ± std with a paired test.
    done = ok(tfkd("--mode=analyze", "--analysis_students=2", *common))
    assert "distilled_3" in done.stderr and "independent_3" in done.stderr
    analysis = json.load(open(workdir / "analysis.json"))
    assert [s["seed"] for s in analysis["students"]] == [2, 3]
    rows = {row["property"]: row for row in analysis["properties"]}
    agreement = rows["top-1 agreement with teacher"]
    per_seed = agreement["per_seed"]
    assert [p["seed"] for p in per_seed] == [2, 3]
    values = [p["distilled"]["value"] for p in per_seed]
    assert agreement["distilled"] == np.mean(values)
    assert agreement["distilled_std"] == np.std(values, ddof=1)
    for p in per_seed:  # every rate with its count and interval
        cell = p["distilled"]
        assert cell["of"] == 64 and cell["value"] == cell["count"] / 64
        assert cell["ci95"][0] <= cell["value"] <= cell["ci95"][1]
    diffs = [p["difference"] for p in per_seed]
    test = agreement["paired_test"]
    assert test["n"] == 2 and test["mean"] == np.mean(diffs)
    if np.ptp(diffs) > 0:
        assert test["p"] == stats.ttest_rel([p["distilled"]["value"] for p in per_seed],
                                            [p["independent"]["value"] for p in per_seed]
                                            ).pvalue
    table = (workdir / "analysis.md").read_text()
    assert "difference, mean ± std" in table and "paired t-test" in table
    assert "2 student seeds" in table


def readme_analyze_commands():
    """The two commands of the README's modes section: train MLPs, then analyze them."""
    text = open(README, encoding="utf-8").read()
    match = re.search(r"So `(tfkd [^`]*)` followed by\s+`(tfkd [^`]*)`", text)
    assert match, "README's modes section no longer shows the analyze example"
    return [shlex.split(command)[1:] for command in match.groups()]


def test_the_readme_mlp_example_analyzes(tmp_path):
    train, analyze = readme_analyze_commands()
    assert "--model=mlp" in train and "--mode=analyze" in analyze
    # Only speed settings added: tiny data and one epoch, fewer test examples and PGD steps.
    ok(tfkd(*train, "--smoke", cwd=tmp_path))
    done = ok(tfkd(*analyze, "--analysis_examples=64", "--pgd_steps=2", cwd=tmp_path))
    workdir = tmp_path / "w"
    analysis = json.load(open(workdir / "analysis.json"))
    rows = {row["property"]: row for row in analysis["properties"]}
    gradcam = rows["Grad-CAM similarity with teacher"]
    assert "spatial feature map" in gradcam["skipped"] and gradcam["distilled"] is None
    assert analysis["gradcam_layer"] is None
    # Everything else is measured on the MLPs, digits being images: jitter too.
    for name, row in rows.items():
        if name != gradcam["property"]:
            assert row["skipped"] is None and row["distilled"] is not None, name
    table = (workdir / "analysis.md").read_text()
    assert "| Grad-CAM similarity with teacher | skipped: the teacher (member_0) has no " in table
    # A rate shows its count and interval: "0.1234 (k/64; lo–hi)".
    agreement = next(line for line in table.splitlines() if line.startswith("| top-1"))
    assert re.search(r"\(\d+/64; \d\.\d{4}–\d\.\d{4}\)", agreement), agreement
    assert (workdir / "analysis.png").stat().st_size > 1000
    assert not (workdir / "gradcam.png").exists()
    assert "[1/1] independent" in done.stderr


def test_what_cannot_run_is_known_before_anything_trains(tmp_path):
    # Signals (not images) under an MLP whose data lives at an absolute path.
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(3), 100)
    x = rng.normal(size=(300, 24)).astype("float32") + y[:, None]
    data = tmp_path / "data" / "signals.npz"
    data.parent.mkdir()
    np.savez(data, x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    workdir = tmp_path / "run"
    common = ["--smoke", "--model=mlp", "--num_models=1", f"--dataset=npz:{data}",
              "--analysis_examples=30", "--pgd_steps=2", f"--workdir={workdir}"]
    ok(tfkd("--mode=train", *common))
    ok(tfkd("--mode=distill", *common))
    # A layer that exists but is no feature map: refused before the independent student.
    refused = tfkd("--mode=analyze", "--analysis_layer=logits", *common)
    assert refused.returncode == 2, refused.stderr
    assert "analysis_layer" in refused.stderr and "feature map" in refused.stderr
    assert not (workdir / "metrics" / "independent.json").exists()
    assert "independent" not in refused.stderr
    ok(tfkd("--mode=analyze", *common))
    analysis = json.load(open(workdir / "analysis.json"))
    skipped = analysis["skipped"]
    assert set(skipped) == {"Grad-CAM similarity with teacher", "jitter consistency"}
    assert "needs images" in skipped["jitter consistency"]
    table = (workdir / "analysis.md").read_text()
    assert table.count("| skipped: ") == 2
    # Titles name the data, not where this machine keeps it.
    assert "npz:signals.npz / mlp" in table.splitlines()[0]
    assert str(tmp_path) not in table.splitlines()[0]
    results = (workdir / "results.md").read_text()
    assert "## npz:signals.npz / mlp" in results and str(tmp_path) not in results
