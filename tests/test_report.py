"""The results table: order, statistics, gains and every output format. No TensorFlow needed."""

import csv
import io
import json
import os
import random

import numpy as np
import pytest

from tfkd import report

# The ResNet-18 / CIFAR-10 replication note (docs/papers.md, section 3), as fractions.
MEMBER_VAL = [0.8666, 0.8606, 0.8608, 0.8638, 0.8700]
MEMBER_TEST = [0.8601, 0.8546, 0.8571, 0.8617, 0.8639]
SELF_VAL = [0.8770, 0.8754, 0.8714, 0.8646, 0.8738]
SELF_TEST = [0.8688, 0.8648, 0.8613, 0.8532, 0.8708]


def row(name, kind, seed=None, generation=None, teacher=None, val=None, test=None, **extra):
    return {"name": name, "kind": kind, "seed": seed, "generation": generation,
            "teacher": teacher, "val_accuracy": val, "test_accuracy": test, **extra}


def paper_rows():
    rows = [row(f"member_{i}", "member", seed=i, val=v, test=t)
            for i, (v, t) in enumerate(zip(MEMBER_VAL, MEMBER_TEST))]
    rows.append(row("ensemble", "ensemble", test=0.8907))
    rows.append(row("distilled", "distilled", seed=100, teacher="ensemble", val=0.8739,
                    test=0.8700))
    rows += [row(f"self_distilled_{i}_g1", "self_distilled", seed=10 + i, generation=1,
                 teacher=f"member_{i}", val=v, test=t)
             for i, (v, t) in enumerate(zip(SELF_VAL, SELF_TEST))]
    rows.append(row("self_distilled_ensemble", "self_distilled_ensemble", test=0.8938))
    return rows


def names(table):
    return [r["name"] for r in table]


# ----------------------------------------------------------------------------- summarize


def test_display_order_does_not_depend_on_input_order():
    rows = paper_rows()
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    # Members keep their input order, so restore it among the shuffled rows.
    members = iter(r for r in rows if r["kind"] == "member")
    shuffled = [next(members) if r["kind"] == "member" else r for r in shuffled]
    assert names(report.summarize(shuffled)) == [
        *(f"member_{i}" for i in range(5)), report.MEMBERS_SUMMARY, "ensemble", "distilled",
        *(f"self_distilled_{i}_g1" for i in range(5)), report.SELF_DISTILLED_SUMMARY,
        "self_distilled_ensemble"]


def test_mean_and_sample_std_match_numpy():
    table = report.summarize(paper_rows())
    members = table[5]
    assert members["kind"] == "summary" and members["summarizes"] == "member"
    assert members["n"] == 5
    for key, values in (("val_accuracy", MEMBER_VAL), ("test_accuracy", MEMBER_TEST)):
        assert members[key] == pytest.approx(np.mean(values))
        assert members[f"{key}_std"] == pytest.approx(np.std(values, ddof=1))
    students = next(r for r in table if r.get("summarizes") == "self_distilled")
    assert students["test_accuracy"] == pytest.approx(np.mean(SELF_TEST))
    assert students["test_accuracy_std"] == pytest.approx(np.std(SELF_TEST, ddof=1))


def test_one_member_has_zero_std():
    table = report.summarize([row("member_0", "member", val=0.9, test=0.8)])
    assert table[1]["test_accuracy"] == pytest.approx(0.8)
    assert table[1]["test_accuracy_std"] == 0.0


def test_self_distilled_chains_follow_teacher_links_and_summarize_the_last_generation():
    rows = [
        row("member_0", "member", test=0.90),
        row("member_1", "member", test=0.92),
        # Chain of member_1, each generation naming the previous one, listed backwards.
        row("sd_1_g2", "self_distilled", generation=2, teacher="sd_1_g1", test=0.95),
        row("sd_1_g1", "self_distilled", generation=1, teacher="member_1", test=0.93),
        # Chain of member_0, every generation naming the chain's original teacher.
        row("sd_0_g3", "self_distilled", generation=3, teacher="member_0", test=0.97),
        row("sd_0_g1", "self_distilled", generation=1, teacher="member_0", test=0.91),
        row("sd_0_g2", "self_distilled", generation=2, teacher="member_0", test=0.96),
    ]
    table = report.summarize(rows)
    assert names(table)[3:8] == ["sd_0_g1", "sd_0_g2", "sd_0_g3", "sd_1_g1", "sd_1_g2"]
    summary = table[8]
    assert summary["name"] == report.SELF_DISTILLED_SUMMARY and summary["n"] == 2
    assert summary["test_accuracy"] == pytest.approx(np.mean([0.97, 0.95]))


def test_unknown_kinds_come_last_in_input_order():
    rows = [row("joint_b", "joint", test=0.8), *paper_rows(), row("joint_a", "joint", test=0.7),
            row("random_features", "random_features", test=0.5)]
    table = report.summarize(rows)
    assert names(table)[-3:] == ["joint_b", "joint_a", "random_features"]
    assert table[-4]["name"] == "self_distilled_ensemble"
    assert "joint_b" in report.to_markdown(rows)


def test_extra_fields_survive_and_input_is_not_mutated():
    rows = [row("ensemble", "ensemble", test=np.float32(0.5), disagreement_val=0.1)]
    table = report.summarize(rows)
    assert table[0]["disagreement_val"] == 0.1
    assert type(table[0]["test_accuracy"]) is float
    assert type(rows[0]["test_accuracy"]) is np.float32


def test_percentages_and_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match="test_accuracy=96.5"):
        report.summarize([row("member_0", "member", test=96.5)])
    with pytest.raises(ValueError, match="'member_0'"):
        report.summarize([row("member_0", "member"), row("member_0", "member")])
    with pytest.raises(ValueError, match="no 'kind'"):
        report.summarize([{"name": "x"}])


def test_missing_accuracies_do_not_crash(tmp_path):
    rows = [row("member_0", "member", test=0.9),
            row("member_1", "member", val=0.8),  # no test accuracy
            row("member_2", "member", test=float("nan")),  # a diverged run
            row("ensemble", "ensemble"),
            row("distilled", "distilled", test=0.95)]
    table = report.summarize(rows)
    assert table[3]["test_accuracy"] == pytest.approx(0.9)  # mean of what was measured
    assert table[3]["test_accuracy_std"] == 0.0
    assert report.gains(rows) == {"distilled_minus_member_mean": pytest.approx(5.0)}
    markdown = report.write_report(rows, tmp_path)
    assert "| ensemble | ensemble | - | - | - | - |" in markdown
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["rows"][2]["test_accuracy"] is None
    assert report.gains([row("ensemble", "ensemble", test=0.9)]) == {}
    report.plot_results([row("ensemble", "ensemble")], str(tmp_path / "empty.png"))


# ----------------------------------------------------------------------------- gains


def test_gains_are_percentage_points_over_the_member_mean():
    mean = np.mean(MEMBER_TEST)
    assert report.gains(paper_rows()) == pytest.approx({
        "ensemble_minus_member_mean": 100 * (0.8907 - mean),
        "distilled_minus_member_mean": 100 * (0.8700 - mean),
        "self_distilled_minus_member_mean": 100 * (np.mean(SELF_TEST) - mean),
        "self_distilled_ensemble_minus_member_mean": 100 * (0.8938 - mean),
    })


def test_absent_kinds_have_no_gain():
    rows = [r for r in paper_rows() if r["kind"] in ("member", "ensemble")]
    assert list(report.gains(rows)) == ["ensemble_minus_member_mean"]


# ----------------------------------------------------------------------------- formats


def test_markdown_shows_percentages_summaries_and_gains():
    markdown = report.to_markdown(paper_rows(), title="ResNet-18 / CIFAR-10")
    lines = markdown.splitlines()
    assert lines[0] == "## ResNet-18 / CIFAR-10"
    assert ("| model | kind | seed | teacher | alpha | val acc (%) | test acc (%) | "
            "train / val / test |" in lines)
    # Split sizes not recorded in these rows: "-" each.
    assert "| member_0 | member | 0 | - | - | 86.66 | 86.01 | - / - / - |" in lines
    # mean 85.948, sample std 0.3685 (the note's 5 seeds)
    assert "| **members mean ± std** | summary | n=5 | - | - | 86.44 ± 0.40 | 85.95 ± 0.37 | - / - / - |" in lines
    assert "| self_distilled_3_g1 | self_distilled | 13 | member_3 | - | 86.46 | 85.32 | - / - / - |" in lines
    assert "86.38 ± 0.70" in markdown
    assert "ensemble vs mean member: +3.12 points (test)" in markdown
    assert "distilled vs mean member: +1.05 points (test)" in markdown
    assert "self-distilled mean (last generation) vs mean member: +0.43 points (test)" in markdown
    assert "self-distilled ensemble vs mean member: +3.43 points (test)" in markdown


def test_markdown_signs_losses_and_ties():
    rows = [row("member_0", "member", test=0.9), row("ensemble", "ensemble", test=0.895),
            row("distilled", "distilled", test=0.90001)]
    markdown = report.to_markdown(rows)
    assert "ensemble vs mean member: -0.50 points" in markdown
    assert "distilled vs mean member: +0.00 points" in markdown


def test_csv_parses_back_to_the_same_numbers():
    rows = paper_rows()
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rows))))
    table = report.summarize(rows)
    assert [p["name"] for p in parsed] == names(table)
    for p, r in zip(parsed, table):
        for column in report.CSV_COLUMNS:
            value = r.get(column)
            if value is None:
                assert p[column] == ""
            elif isinstance(value, float):
                assert float(p[column]) == value
            else:
                assert p[column] == str(value)
    assert float(parsed[5]["test_accuracy_std"]) == pytest.approx(np.std(MEMBER_TEST, ddof=1))
    assert parsed[0]["test_accuracy_std"] == ""


def test_plot_writes_a_readable_png(tmp_path):
    import matplotlib.image

    path = str(tmp_path / "chart.png")
    assert report.plot_results(paper_rows(), path, title="replication") == path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert 400 < width < 2000 and 400 < height < 2000
    assert pixels.std() > 0.05  # not a blank canvas
    assert os.listdir(tmp_path) == ["chart.png"]


def test_write_report_writes_every_file_and_no_temporaries(tmp_path):
    directory = tmp_path / "report"
    rows = paper_rows()
    rows[0]["seed"] = np.int64(0)  # NumPy scalars as a mode might hand them over
    markdown = report.write_report(rows, str(directory), title="replication")
    assert sorted(os.listdir(directory)) == [
        "results.csv", "results.json", "results.md", "results.png"]
    assert (directory / "results.md").read_text(encoding="utf-8") == markdown
    assert (directory / "results.csv").read_text(encoding="utf-8") == report.to_csv(rows)
    payload = json.loads((directory / "results.json").read_text(encoding="utf-8"))
    assert payload["rows"][0]["seed"] == 0
    assert payload["rows"][1] == paper_rows()[1]
    assert payload["gains"] == pytest.approx(report.gains(rows))


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    report.write_report(paper_rows(), str(tmp_path))
    before = (tmp_path / "results.csv").read_text()

    def broken_csv(rows):
        raise KeyboardInterrupt  # a kill in the middle of the report

    monkeypatch.setattr(report, "to_csv", broken_csv)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(paper_rows()[:3], str(tmp_path))
    assert (tmp_path / "results.csv").read_text() == before
    assert sorted(os.listdir(tmp_path)) == [
        "results.csv", "results.json", "results.md", "results.png"]
