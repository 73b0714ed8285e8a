"""Every flagfile in flags/ makes a valid Config with its settings; two run end to end with
--smoke in the default suite (TFDS recipes on mock data), every one under `-m slow`."""

import glob
import json
import os
import re

import pytest

from helpers.command import ROOT, ok, reset_flags, tfkd
from test_cli import result_names

FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "*.flags")))
MOCK_EXAMPLES = 5200  # the recipes hold out 5,000 for validation, and --smoke keeps that
# Run in the default suite: the digits default and a CIFAR pipeline with augmentation and
# the view cache; the other CIFAR recipes (40-110 s each) run under `-m slow`.
SMOKE_BY_DEFAULT = ("digits_cnn.flags", "cifar100_kd_standard.flags")
RECIPE_SETTINGS = ("dataset", "model", "optimizer", "batch_size", "augment", "lr_schedule",
                   "distillation_loss", "alpha", "data_seed", "mode")


def flag_values(path):
    values = {}
    for line in open(path):
        match = re.match(r"--(no)?(\w+)(?:=(.*))?$", line.strip())
        if match:
            no, name, value = match.groups()
            values[name] = value if value is not None else ("false" if no else "true")
    return values


def run_recipe(path, workdir):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        return tfkd(f"--flagfile={path}", "--smoke", f"--workdir={workdir}")


def test_there_are_recipes():
    names = {os.path.basename(p) for p in FLAGFILES}
    assert {"cifar10_wrn28_10.flags", "cifar100_wrn28_10.flags", "cifar10_resnet18_adam.flags",
            "cifar10_resnet50_self_distill.flags", "cifar100_kd_standard.flags"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_recipe_header_names_paper_and_exact_command(path):
    text = open(path).read()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header and text.startswith("#")
    command = f"tfkd --flagfile=flags/{os.path.basename(path)}"
    assert any(command in line for line in header), f"{path} must show `{command} ...`"
    assert "docs/papers.md" in text or "default pipeline" in text


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_recipe_makes_a_valid_config_with_its_settings(path):
    from tfkd import cli

    reset_flags()
    cli.parse_flags(["tfkd", f"--flagfile={path}"])
    config, _ = cli.config_from_flags(remember=False)
    reset_flags()
    for name, value in flag_values(path).items():
        if name in RECIPE_SETTINGS:
            assert str(getattr(config, name)) == value, name


@pytest.mark.parametrize("path", [
    p if os.path.basename(p) in SMOKE_BY_DEFAULT else pytest.param(p, marks=pytest.mark.slow)
    for p in FLAGFILES], ids=os.path.basename)
def test_recipe_runs_with_smoke(path, tmp_path):
    workdir = tmp_path / "run"
    result = ok(run_recipe(path, workdir))
    flags = flag_values(path)
    config = json.load(open(workdir / "config.json"))["config"]
    # The recipe's settings reached the run (--smoke shrinks only epochs, members, steps).
    for name in RECIPE_SETTINGS:
        if name in flags:
            assert str(config[name]) == flags[name], name
    names = result_names(workdir)
    assert "member_0" in names
    mode = flags.get("mode", "pipeline")
    if mode == "pipeline":
        from tfkd import terms

        # A multi-teacher method's pipeline leaves out the one-teacher chains.
        chains = terms.get(flags.get("distillation_loss", "kl")).min_teachers == 1
        assert "distilled" in names and ("self_distilled_0_g1" in names) == chains
    if mode == "self_distill":
        assert "self_distilled_0_g2" in names
    assert "Results table" in result.stdout
