"""tools/invariance_transfer.py: other tfkd flags reach every stage; the ones a stage sets
itself, and anything not written --name=value, are refused in one line."""

import pytest
from helpers.tools import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("invariance_transfer")


def test_tfkd_flags_are_passed_to_every_stage(tool):
    args = tool.parse_args(["--seeds=0", "--dataset=keras:fashion_mnist", "--train_size=5000",
                            "--num_models=3"])
    for stage in tool.STAGES:
        flags = tool.stage_flags(args, stage, "jitter", 0)
        assert flags[-2:] == ["--dataset=keras:fashion_mnist", "--train_size=5000"]
        assert "--num_models=3" in flags and "--seed=0" in flags
        # The students train without augmentation, whatever the teachers' workdir records.
        assert ("--augment=jitter" if stage == "train" else "--augment=none") in flags


@pytest.mark.parametrize("flag, message", [
    ("--seed=3", "each stage sets --seed itself"),  # not an abbreviation of --seeds
    ("--augment=none", "each stage sets --augment itself"),
    ("--workdir2", "written --name=value"),
    ("stray", "written --name=value"),
    ("--flagfile=f", "not a flagfile"),
])
def test_flags_a_stage_sets_are_refused(tool, capsys, flag, message):
    with pytest.raises(SystemExit) as exit_:
        tool.parse_args([flag])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("invariance_transfer.py: error:") and message in err, err
    assert len(err.splitlines()) == 1
