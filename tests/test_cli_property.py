"""A property of the command line: whatever a user types, `tfkd` either runs or ends with
exit code 2, one `tfkd: error:` line, no traceback and a workdir left byte for byte as it
was.

Invocations are generated (a seeded generator) against a finished workdir: one to four settings of
the schema, every flag eligible, each given a value of every kind (empty, huge, negative,
NaN, infinite, of the wrong type, unknown names, paths and flagfiles that are wrong in
every way -- missing, directories, a FIFO, /dev/zero, binary, Latin-1, UTF-16, with a
byte-order mark, oversized, included in a cycle or 1,500 deep --, a malformed TF_CONFIG), on top of a small valid command. Conflicting pairs
arise from the combinations.

The runs are in this process (tfkd.cli.main, flags reset before each), and "runs" means
"reaches training": `keras.Model.fit` is replaced by a stop, so every check that could end
a run must come before its first fit to count as one. Settings that change the process
for good (the logical CPU split, deterministic kernels) are validated as usual but not
applied, and multi-worker clusters are not generated (a valid one waits for its peers).

100 invocations by default (seed 0: the same ones every time), 1,000 new ones under
`-m slow`. A seeded generator rather than Hypothesis: Hypothesis's search favours the
first entries of each list, so that most of its invocations named the same few flags.
"""

import os
import random
import shutil
import traceback

import keras
import pytest
from helpers.command import invoke
from test_reliability import snapshot

from tfkd import runtime
from tfkd.config import FIELDS, choices_of

# Values of every kind; each setting also gets its own accepted values (below).
ODD = ["", " ", "0", "-0", "1", "2", "3", "0.5", "1.5", "-1", "-0.5", "1e-12", "1e308",
       "1e999", "nan", "NaN", "inf", "-inf", "9" * 25, str(2**63), str(2**32), str(2**31),
       "abc", "true", "False", "none", "None", ",", "1,", ",1", "1,2,3", "5,1", "1,inf",
       "0,1", "café", "0x10", "1_000", "--", "=", "a:b", "features", "cnn", "digits",
       "\t", "a b", "-", "'", '"', "{}", "[]", "\\"]
UNKNOWN = ["--no_such_flag", "--learning-rate", "--Learning_rate", "--lr", "--", "-x",
           "stray", "--mode", "--=1"]
DATASETS = ["digits", "mnist1d", "multiview", "keras:nope", "keras:", "npz:", "folder:",
            "tfds:", "tfds:nope", "cifar10", "imdb_reviews", ":", "digits:", "npz:/nonexistent.npz",
            "folder:/nonexistent", "keras:fashion_mnist"]
# TF_CONFIG values a user could leave behind; valid clusters are not generated (see above).
TF_CONFIGS = [None] * 6 + ["{not json", "[]", "null", '"worker"', '{"task": "worker"}',
                            '{"task": {"type": "worker", "index": "first"}}',
                            '{"task": {"type": "worker", "index": [0]}}']


MODES = choices_of("mode")


def _text(value):
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def value_pool(name, paths):
    """Values a user would give `name`: its choices, its default, its kind of path."""
    field = FIELDS[name]
    pool = []
    choices = choices_of(name)
    if choices:
        pool += [_text(c) for c in choices]
    if field.default not in (None, ()):
        pool.append(_text(field.default))
    kind = FIELDS[name].metadata["item"] or type(field.default)
    if not choices and kind in (int, float):
        pool += ["1", "2", "3"] if kind is int else ["0.5", "0.01", "2.0"]
        if field.metadata["item"]:
            pool += ["1,3", "2,5", "0.1,0.9"]
    if name == "dataset":
        pool += DATASETS
    if name in ("workdir", "teacher_dir", "data_dir"):
        pool += paths["dirs"]
    return pool


def invocation(rng, paths):
    """(argv, TF_CONFIG or None): a valid small command of any mode and 1-4 generated
    settings."""
    argv = ["--smoke", "--model=mlp", "--num_models=1", f"--mode={rng.choice(MODES)}",
            f"--workdir={paths['run']}"]
    # Up to three settings with values a user would give, and most often one odd one: a
    # command with several odd values ends at the first, which tells little.
    odd = rng.random() < 0.6
    for i in range(rng.randint(int(not odd), 3) + odd):
        argv.append(_one(rng, paths, odd=odd and i == 0))
    return argv, rng.choice(TF_CONFIGS)


def _one(rng, paths, odd):
    """One generated argument: a setting, a flagfile, a recipe or an unknown flag."""
    kind = rng.choice(["setting"] * 8 + ["flagfile", "recipe", "unknown"] * odd)
    if kind == "flagfile":
        return "--flagfile=" + rng.choice(paths["flagfiles"])
    if kind == "recipe":
        return "--recipe=" + rng.choice(["digits_cnn", "nope", "", "../x"])
    if kind == "unknown":
        return rng.choice(UNKNOWN) + rng.choice(["", "=1"])
    name = rng.choice(sorted(FIELDS))
    if isinstance(FIELDS[name].default, bool) and rng.random() < 0.7:
        return f"--{rng.choice(['', 'no'])}{name}"
    accepted = value_pool(name, paths)
    kinds = ["odd", "integer", "float", "text"] if odd or not accepted else ["accepted"]
    value = {
        "accepted": lambda: rng.choice(accepted),
        "odd": lambda: rng.choice(ODD),
        "integer": lambda: str(rng.choice([-1, 1]) * rng.randrange(2 ** rng.randrange(1, 70))),
        "float": lambda: repr(rng.choice([-1, 1]) * rng.random() * 10 ** rng.randint(-20, 20)),
        # Any printable or control character but NUL, which argv cannot hold.
        "text": lambda: "".join(chr(rng.choice([rng.randrange(1, 128),
                                                rng.randrange(128, 0x2FFF)]))
                                for _ in range(rng.randrange(0, 10))),
    }[rng.choice(kinds)]()
    return f"--{name}={value}"


class ReachedTraining(BaseException):
    """Raised instead of training: the invocation passed every check that precedes a fit."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished workdir (a pristine copy to restore it from) and the paths and
    flagfiles the generator draws from."""
    root = tmp_path_factory.mktemp("property")
    run = root / "run"
    assert invoke(["--smoke", "--model=mlp", "--num_models=1", "--mode=train",
                   f"--workdir={run}"]) == 0
    shutil.copytree(run, root / "pristine")
    (root / "a_file").write_text("not a directory")
    flagfiles = {"missing": root / "missing.flags", "directory": root}
    texts = {"latin1": b"--model=mlp\n# caf\xe9\n", "empty": b"",
             "bad_flag": b"--no_such_flag=1\n", "bad_value": b"--epochs=many\n",
             "valid": b"--alpha=0.5\n", "binary": bytes(range(256)),
             "comment_only": b"# nothing here\n", "blank_lines": b"\n\n\n"}
    for name, data in texts.items():
        path = root / f"{name}.flags"
        path.write_bytes(data)
        flagfiles[name] = path
    (root / "self.flags").write_text(f"--flagfile={root / 'self.flags'}\n")
    flagfiles["recursive"] = root / "self.flags"
    # Files that are not what a flagfile is, and text as other editors save it.
    os.mkfifo(root / "fifo.flags")
    flagfiles.update(fifo=root / "fifo.flags", device="/dev/zero", null="/dev/null")
    more = {"bom": "\ufeff--alpha=0.5\r\n".encode(), "utf16": "--alpha=0.5\n".encode("utf-16"),
            "oversized": b"#" * (2 << 20), "nested_bad": f"--flagfile={root}\n".encode(),
            "nested_recipe": b"--recipe=digits_cnn\n--epochs=2\n"}
    for name, data in more.items():
        (root / f"{name}.flags").write_bytes(data)
        flagfiles[name] = root / f"{name}.flags"
    for i in range(1500):  # deeper than Python's recursion limit
        (root / f"deep{i}.flags").write_text(f"--flagfile={root / f'deep{i + 1}.flags'}\n")
    (root / "deep1500.flags").write_text("--alpha=0.5\n")
    flagfiles["deep"] = root / "deep0.flags"
    dirs = [str(run), str(root / "a_file"), "/proc/tfkd_workdir", "/nonexistent/dir",
            str(root / "new_workdir"), "~", ".", str(root / "pristine" / "models")]
    (root / "cwd").mkdir()
    return {"root": root, "run": run, "dirs": dirs, "cwd": str(root / "cwd"),
            "flagfiles": [str(p) for p in flagfiles.values()]}


def check(world, argv, tf_config, capsys, monkeypatch):
    run, pristine = world["run"], world["root"] / "pristine"
    before = snapshot(run)
    # Relative workdirs (generated ones: "0.5", "~", "{}") land here, not in the checkout.
    monkeypatch.chdir(world["cwd"])
    with monkeypatch.context() as m:
        m.setattr(keras.Model, "fit", _reached_training)
        m.setattr(runtime, "split_cpu", lambda n: None)
        m.setattr(runtime, "set_deterministic", lambda enabled: None)
        if tf_config is None:
            m.delenv("TF_CONFIG", raising=False)
        else:
            m.setenv("TF_CONFIG", tf_config)
        try:
            code = invoke(argv)
        except ReachedTraining:
            code = "trains"
        except Exception:  # noqa: BLE001 -- what the property forbids
            pytest.fail(f"traceback for {argv} (TF_CONFIG={tf_config!r}):\n"
                        f"{traceback.format_exc()[-3000:]}")
        finally:
            keras.mixed_precision.set_global_policy("float32")
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, (argv, stderr[-3000:])
    assert code in (0, 2, "trains"), (argv, tf_config, code, stderr[-3000:])
    if code == 2:
        errors = [line for line in stderr.splitlines() if line.startswith("tfkd: error:")]
        assert len(errors) == 1, (argv, tf_config, stderr[-3000:])
        assert snapshot(run) == before, (argv, tf_config, "the workdir changed")
        # Nor did it leave a workdir of its own behind.
        assert not os.listdir(world["cwd"]), (argv, tf_config, os.listdir(world["cwd"]))
    else:  # a run may change the workdir: the next invocation starts from the original
        shutil.rmtree(run)
        shutil.copytree(pristine, run)
        shutil.rmtree(world["root"] / "new_workdir", ignore_errors=True)
        for name in os.listdir(world["cwd"]):  # a run with --workdir=. writes here itself
            path = os.path.join(world["cwd"], name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return code


def _reached_training(self, *args, **kwargs):
    raise ReachedTraining()


def _property(world, capsys, monkeypatch, examples, seed):
    rng = random.Random(seed)
    outcomes = []
    for _ in range(examples):
        argv, tf_config = invocation(rng, world)
        outcomes.append(check(world, argv, tf_config, capsys, monkeypatch))
    # Both sides of the property were exercised, not only refusals.
    assert outcomes.count(2) and outcomes.count("trains"), outcomes
    print(f"{len(outcomes)} invocations (seed {seed}): " + ", ".join(
        f"{outcomes.count(c)} {'exit ' if c != 'trains' else ''}{c}" for c in (2, 0, "trains")))


def test_generated_invocations_run_or_end_in_one_line(world, capsys, monkeypatch):
    _property(world, capsys, monkeypatch, examples=100, seed=0)


@pytest.mark.slow
def test_a_thousand_new_generated_invocations(world, capsys, monkeypatch):
    """New invocations on every run: the seed is printed, and TFKD_PROPERTY_SEED
    repeats a run (TFKD_PROPERTY_EXAMPLES sets how many)."""
    seed = int(os.environ.get("TFKD_PROPERTY_SEED", random.SystemRandom().randrange(2**32)))
    print(f"TFKD_PROPERTY_SEED={seed}")
    _property(world, capsys, monkeypatch, seed=seed,
              examples=int(os.environ.get("TFKD_PROPERTY_EXAMPLES", 1000)))


def test_smoke_refuses_every_data_size_the_real_run_refuses(tmp_path):
    """--smoke cuts the data after the checks, so it refuses what the real run refuses, in
    the same words: generated sizes around each dataset's own, for every setting that
    depends on the data's size."""
    from helpers.command import tfkd

    from tfkd.data import load_dataset

    rng = random.Random(0)
    refused = 0
    for dataset in ("digits", "mnist1d", "multiview"):
        splits = load_dataset(dataset)
        pool, train = len(splits.x_train) + len(splits.x_val), len(splits.x_train)
        values = {"val_size": [pool - 1, pool, pool + 1, rng.randint(pool, 10 * pool), 100000,
                               0.9999, 1e-9, round(rng.uniform(0.9, 0.99999), 5)],
                  "train_size": [train + 1, rng.randint(train, 10 * train), 2**31]}
        for name, sizes in values.items():
            for size in sizes:
                args = [f"--{name}={size}", f"--dataset={dataset}", "--model=mlp",
                        "--num_models=1", "--mode=train", "--epochs=1"]
                if name == "val_size":  # a run with few training examples trains, briefly
                    args.append("--allow_chance")
                real = tfkd(*args, f"--workdir={tmp_path / 'real'}")
                smoke = tfkd(*args, "--smoke", f"--workdir={tmp_path / 'smoke'}")
                assert (real.returncode == 2) == (smoke.returncode == 2), (
                    args, real.stderr[-1500:], smoke.stderr[-1500:])
                if real.returncode == 2:
                    refused += 1
                    lines = [[line for line in r.stderr.splitlines()
                              if line.startswith("tfkd: error:")] for r in (real, smoke)]
                    assert lines[0] == lines[1] and len(lines[0]) == 1, (args, lines)
                for run in ("real", "smoke"):
                    shutil.rmtree(tmp_path / run, ignore_errors=True)
    assert refused >= 15, refused
