"""tools/check_docs.py: documented tables and figures match what their commands write.

The checker itself is tested on synthetic docs whose commands are one-line Python prints;
the repository's own tagged tables are checked too: the fast ones here, the digits pipeline's
under -m slow.
"""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("check_docs", os.path.join(REPO, "tools",
                                                                         "check_docs.py"))
check_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_docs)

# A command printing a two-row table and a line of figures below it.
PRINTS = ("python -c \"print('| model | acc (%) |'); print('|---|---:|'); "
          "print('| a | 98.61 |'); print('| b | 97.50 |'); print(); "
          "print('gain: +0.11 points (test)')\"")


def write_doc(root, text, name="docs/page.md"):
    path = root / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")


def check(root, *args):
    return check_docs.main([f"--root={root}", *args])


def test_matching_table_and_figures_pass(tmp_path, capsys):
    write_doc(tmp_path, f"""# Page

<!-- produced by: {PRINTS} ; fast -->
| model | acc (%) |
|---|---:|
| a | 98.61 |
| b | 97.50 |

<!-- produced by: {PRINTS} ; fast -->
gain: +0.11 points
(test)
""")
    assert check(tmp_path) == 0
    out = capsys.readouterr().out
    assert "2 tagged blocks, 0 mismatches" in out
    assert out.count("running:") == 1  # one command, run once for both blocks


def test_each_stale_cell_and_figure_is_named_with_file_and_line(tmp_path, capsys):
    write_doc(tmp_path, f"""# Page

<!-- produced by: {PRINTS} -->
| model | acc (%) |
|---|---:|
| a | 97.78 |
| b | 97.50 |

Prose.

<!-- produced by: {PRINTS} -->
gain: -0.72 points (test)
""")
    assert check(tmp_path) == 1
    out = capsys.readouterr().out
    assert ("docs/page.md:6: row 'a', column 'acc (%)': documented '97.78', the command wrote "
            "'98.61'") in out
    assert "docs/page.md:12: figure 1 of the paragraph: documented -0.72, the command wrote +0.11" \
        in out
    assert "2 mismatches" in out


def test_missing_and_extra_rows_and_other_headers_are_mismatches(tmp_path, capsys):
    write_doc(tmp_path, f"""<!-- produced by: {PRINTS} -->
| model | acc (%) |
|---|---:|
| a | 98.61 |

<!-- produced by: {PRINTS} -->
| model | val acc (%) |
|---|---:|
| a | 98.61 |

<!-- produced by: {PRINTS} -->
loss: +0.11 points

<!-- produced by: {PRINTS} -->
""", name="README.md")
    assert check(tmp_path) == 1
    out = capsys.readouterr().out
    assert "README.md:5: the command wrote a row the table lacks: | b | 97.50 |" in out
    assert "README.md:7: the output has no table with this header" in out
    assert "README.md:12: the output has no text like 'loss: +0.11 points'" in out
    assert "README.md:14: no table or text follows the marker" in out


def test_table_file_in_a_fresh_workdir_and_failing_commands(tmp_path, capsys):
    writes = ("python -c \"[open(f'WORKDIR/{n}.md', 'w')"
              ".write(f'| k | v |\\n|---|---|\\n| x | {n} |\\n') for n in (1, 2)]\"")
    write_doc(tmp_path, f"""<!-- produced by: {writes} ; table: WORKDIR/1.md ; fast -->
| k | v |
|---|---|
| x | 1 |

<!-- produced by: {writes} ; table: WORKDIR/2.md -->
| k | v |
|---|---|
| x | 2 |

<!-- produced by: python -c "import sys; sys.exit('no data here')" ; fast -->
| k | v |
|---|---|
| x | 1 |

<!-- produced by: python -c "pass" ; table: WORKDIR/missing.md ; fast -->
| k | v |
""")
    assert check(tmp_path) == 1
    out = capsys.readouterr().out
    assert "docs/page.md:2" not in out and "docs/page.md:7" not in out  # both files match
    assert out.count(f"running: {writes}") == 1  # one run, one WORKDIR, for both tables
    assert "docs/page.md:12: the command exited with 1:\nno data here" in out
    assert "docs/page.md:17: the command wrote no WORKDIR/missing.md" in out


def test_list_only_and_fast_select_markers(tmp_path, capsys):
    write_doc(tmp_path, f"""<!-- produced by: {PRINTS} ; fast -->
| model | acc (%) |
|---|---:|
| a | 98.61 |
| b | 97.50 |

<!-- produced by: python -c "import sys; sys.exit(3)" -->
| model | acc (%) |
""")
    assert check(tmp_path, "--list") == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in listing] == [["docs/page.md:2", "fast"],
                                                         ["docs/page.md:8", "slow"]]
    assert check(tmp_path, "--fast") == 0
    assert check(tmp_path, "--only=exit") == 1
    capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["--only=nothing-matches"], "--only=nothing-matches select none of the 1 tagged blocks"),
    (["--only=("], "--only=( is not a regular expression"),
    (["--root={root}/missing"], "/missing has no README.md and no docs/*.md"),
])
def test_bad_options_end_in_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    write_doc(tmp_path, f"<!-- produced by: {PRINTS} -->\n| model | acc (%) |\n")
    with pytest.raises(SystemExit) as exit:
        check_docs.main([f"--root={tmp_path}"] + [a.format(root=tmp_path) for a in args])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("check_docs.py: error: ") and message in err[0]


def test_python_in_a_marker_imports_this_checkouts_tfkd(tmp_path, capsys):
    # The shim runs `python -m tfkd` with this checkout first on PYTHONPATH.
    marker = '<!-- produced by: python -c "import tfkd; print(tfkd.__file__)" ; fast -->'
    write_doc(tmp_path, f"{marker}\n{os.path.join(REPO, 'tfkd', '__init__.py')}\n",
              name="README.md")
    assert check(tmp_path, "--only=README") == 0, capsys.readouterr().out


def test_the_fast_documented_tables_match_their_commands(capsys):
    assert check_docs.find_tags(REPO), "no tagged tables in README.md and docs/"
    assert check(REPO, "--fast") == 0, capsys.readouterr().out


@pytest.mark.slow
def test_the_digits_pipeline_tables_match_their_command(capsys):
    """docs/digits.md's default run and other first seeds: three deterministic pipelines
    (7 to 8 minutes on 2 cores shared with other jobs). Its sweeps, which await
    re-measurement, are left to `python tools/check_docs.py --only=sweep`."""
    assert check(REPO, "--only=runs_table") == 0, capsys.readouterr().out


# ----------------------------------------------------------------------------- runs_table.py

spec = importlib.util.spec_from_file_location("runs_table", os.path.join(REPO, "tools",
                                                                         "runs_table.py"))
runs_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runs_table)


def write_run(directory, first_seed, accuracies):
    """A pipeline's results.json with the given test accuracies per kind."""
    from tfkd import report

    rows = [dict(name=f"{kind}_{k}" if kind in ("member", "self_distilled") else kind,
                 kind=kind, seed=first_seed + k if kind == "member" else None,
                 test_accuracy=value, val_accuracy=value)
            for kind, values in accuracies.items() for k, value in enumerate(values)]
    directory.mkdir()
    (directory / "results.json").write_text(json.dumps({"rows": rows,
                                                        "gains": report.gains(rows)}))


def test_runs_table_rows_are_each_runs_accuracies_and_gains(tmp_path, capsys):
    write_run(tmp_path / "a", 3, {"member": [0.98, 0.99], "ensemble": [0.995],
                                  "distilled": [0.975], "self_distilled": [0.985, 0.98],
                                  "self_distilled_ensemble": [0.99]})
    write_run(tmp_path / "b", 7, {"member": [0.9, 0.9], "ensemble": [0.9]})
    runs_table.main([str(tmp_path / "a"), str(tmp_path / "b")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| " + " | ".join(runs_table.HEADER) + " |"
    assert lines[2] == ("| 3 | 98.50 ± 0.71 | 99.50 (+1.00) | 97.50 (-1.00) | 98.25 (-0.25) "
                        "| 99.00 (+0.50) |")
    assert lines[3] == "| 7 | 90.00 ± 0.00 | 90.00 (+0.00) | - | - | - |"


@pytest.mark.parametrize("content, why", [
    (None, "No such file or directory"),
    ("{", "Expecting property name"),
    ('{"rows": []}', "no members' results in it"),
    ("[1, 2]", "no members' results in it"),
])
def test_runs_table_bad_workdirs_end_in_one_line(tmp_path, capsys, content, why):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(SystemExit) as exit:
        runs_table.main([str(tmp_path)])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("runs_table.py: error: ") and why in err[0]
