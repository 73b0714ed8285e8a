"""The settings schema: flags and help generated from it, model identities derived from its
groups, and a workdir that remembers what it was made with."""

import dataclasses
import json
import os

import keras
import pytest

from helpers.command import ok, tfkd
from tfkd import cli
from tfkd.config import FIELDS, GROUPS, Config, ConfigError, choices_of, identity_fields
from tfkd.modes import distill, fit, store, train
from tfkd.workdir import Workdir

# Settings whose other values need a second setting to form a valid Config.
COMPANIONS = {"lr_decay_epochs": {"lr_schedule": "step"},
              "image_size": {"dataset": "cifar10"},
              "input_scaling": {"dataset": "cifar10"}}


def other_value(name, value):
    """A valid value of setting `name` other than `value`."""
    field = FIELDS[name]
    if field.metadata["choices"] is not None and field.metadata["item"] is None:
        return next(c for c in choices_of(name) if c != value)
    if isinstance(value, bool):
        return not value
    if name == "lr_decay_epochs":
        return (2,)
    if name == "dataset":
        return "mnist1d" if value != "mnist1d" else "digits"
    if name == "hint_layer":
        return "features:logits"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return 0.5 if value != 0.5 else 0.25
    raise AssertionError(f"no other value for {name}={value!r}")


def test_every_setting_is_declared_once_with_group_help_and_a_flag():
    from absl import flags

    values = flags.FlagValues()
    cli.define_flags(values)
    for name, field in FIELDS.items():
        assert field.metadata["group"] in GROUPS and field.metadata["help"].strip(), name
        assert name in values, name
        assert values[name].help == cli.flag_help(name)
        assert values[name].help.startswith(field.metadata["help"])
        assert values[name].default == (list(map(str, field.default))
                                        if field.metadata["item"] else field.default)
    text = cli.help_text()
    for title, _ in GROUPS.values():
        assert f"{title}:" in text
    assert all(f"--{name}=" in text or f"--[no]{name} " in text for name in FIELDS)
    # The registry's own list (text wrapped across lines).
    assert "One of: " + ", ".join(choices_of("mode")) in " ".join(text.split())
    assert "digits_cnn" in text  # recipes are listed


def test_help_is_tfkds_own_flags_by_group():
    result = ok(tfkd("--help"))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("usage: tfkd")
    groups = [line for line in lines if line.endswith(":") and not line.startswith(" ")]
    assert groups == [f"{title}:" for title, _ in GROUPS.values()]
    assert "absl" not in result.stdout.split("Recipes")[0]  # absl's flags are not in the way


def test_recipes_are_found_and_expand_to_their_flags():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shipped = sorted(f[:-len(".flags")] for f in os.listdir(os.path.join(root, "flags")))
    assert sorted(cli.recipes()) == shipped
    argv = cli.expand_flagfiles(["tfkd", "--recipe=digits_cnn", "--epochs=2"])
    assert argv[0] == "tfkd" and "--model=cnn" in argv and argv[-1] == "--epochs=2"
    assert argv == cli.expand_flagfiles(["tfkd", "--recipe", "digits_cnn", "--epochs=2"])
    with pytest.raises(SystemExit) as exit_:
        cli.expand_flagfiles(["tfkd", "--recipe=imagenet_vit"])
    assert exit_.value.code == 2


@pytest.fixture(scope="module")
def distilled_workdir(tmp_path_factory):
    """A workdir with one member and a hinted distilled student, trained in-process."""
    root = tmp_path_factory.mktemp("identity")
    config = Config(dataset="digits", model="mlp", smoke=True, epochs=2, num_models=1,
                    hint_layer="features", workdir=str(root))
    workdir = Workdir(root).create()
    train.run(config, workdir)
    distill.run(config, workdir)
    return config, workdir


def test_every_setting_of_a_trained_model_is_compared_before_reuse(distilled_workdir):
    base, workdir = distilled_workdir
    paths = tuple(store.held_members(workdir.root))
    teachers = fit.Teachers(None, "ensemble", paths)

    def finished(config):
        settings = store.model_identity(config, seed=config.seed + config.num_models,
                                        teachers=teachers, alpha=config.alpha)
        return store.find_finished(config, workdir, "distilled", settings, teachers)

    assert finished(base) is not None  # the same settings reuse the student
    tried = []
    # Derived from the schema: a setting added to one of these groups is tried too.
    for name in identity_fields("trained", "distilled", "hinted"):
        changes = {name: other_value(name, getattr(base, name)), **COMPANIONS.get(name, {})}
        changed = dataclasses.replace(base, **changes)
        with pytest.raises(ConfigError) as refused:
            finished(changed)
        message = str(refused.value)
        assert "already holds distilled" in message
        assert any(f"{k}=" in message for k in changes), (name, message)
        # With --overwrite the student is trained again instead.
        assert finished(dataclasses.replace(changed, overwrite=True)) is None, name
        tried.append(name)
    groups = {FIELDS[n].metadata["group"] for n in tried}
    assert groups == {"data", "training", "distillation", "hint"}
    assert {"teacher_cache", "precision", "smoke", "augment"} <= set(tried)
    # Settings that change how a run goes, not what a model is, are not compared.
    for name in ("verbose", "deterministic", "jit_compile", "max_trials", "epsilon"):
        assert name not in tried
        assert finished(dataclasses.replace(base, **{name: other_value(
            name, getattr(base, name))})) is not None


def test_a_workdir_remembers_its_settings(tmp_path):
    """The issue's two sequences: analyze after a pipeline, tune after train with other
    epochs; flags not given come from the workdir, teachers are taken as they are."""
    w = str(tmp_path / "w")
    ok(tfkd("--num_models=2", "--epochs=1", "--self_distill_steps=1", f"--workdir={w}"))
    analyzed = ok(tfkd("--mode=analyze", f"--workdir={w}", "--analysis_examples=32",
                       "--pgd_steps=2"))
    assert "taken from" in analyzed.stderr and "num_models=2, epochs=1" in analyzed.stderr
    record = json.load(open(os.path.join(w, "metrics", "independent.json")))
    assert record["settings"]["epochs"] == 1
    assert os.path.exists(os.path.join(w, "analysis.json"))

    t = str(tmp_path / "t")
    ok(tfkd("--mode=train", "--model=mlp", "--num_models=2", "--epochs=3", f"--workdir={t}"))
    tuned = ok(tfkd("--mode=tune", "--max_trials=2", "--epochs=2", f"--workdir={t}"))
    assert "Traceback" not in tuned.stderr
    best = open(os.path.join(t, "tune", "best.flags")).read()
    assert "--epochs=2" in best and "--model=mlp" in best and "--num_models=2" in best
    # The members are untouched: consumed, not compared with the students' epochs.
    assert json.load(open(os.path.join(t, "metrics", "member_0.json")))["settings"][
        "epochs"] == 3


def test_distill_from_a_folder_of_plain_keras_models(tmp_path, digits):
    x, y = digits
    folder = tmp_path / "my_teachers"
    folder.mkdir()
    for seed in range(2):  # a user's own Sequential models, all named "sequential"
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=2, verbose=0)
        model.save(folder / f"teacher_{seed}.keras")
    w = tmp_path / "student"
    result = ok(tfkd("--mode=distill", "--smoke", "--model=mlp", f"--teacher_dir={folder}",
                     f"--workdir={w}"))
    assert "the 2 members in" in result.stderr  # --num_models from the folder, and said so
    record = json.load(open(w / "metrics" / "distilled.json"))
    assert record["settings"]["teachers"] == fit.Teachers(
        None, "ensemble", tuple(str(p) for p in sorted(folder.glob("*.keras")))).identity
    assert record["row"]["test_accuracy"] > 0.1


def test_the_cli_reference_page_is_the_help_text():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    page = open(os.path.join(root, "docs", "cli.md"), encoding="utf-8").read()
    assert page == cli.reference_markdown(), "run: python tools/write_cli_reference.py"
