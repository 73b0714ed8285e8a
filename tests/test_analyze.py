"""--mode=analyze end to end on digits, on a tiny setting."""

import json

from helpers.command import ok, tfkd


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
