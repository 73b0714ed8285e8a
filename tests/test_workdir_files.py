"""Every file tfkd reads from a workdir is validated, not trusted (docs/reliability.md,
"Damaged files are redone").

The cases are generated from the files one tiny pipeline writes (learned, as
tests/test_links.py learns them, not listed by hand), each planted into a copy of it:

- of the wrong kind (a directory where a file belongs, a regular file where a folder
  belongs, a FIFO): the next run ends with exit code 2 and one `tfkd: error:` line naming
  it, before anything trains (`keras.Model.fit` is replaced by a stop), the workdir as it
  was;
- damaged (truncated, garbage bytes, empty, valid JSON of another type, JSON with a value
  of the wrong type anywhere in it): the next run ends with exit 0 and the file redone or
  removed with a line naming it (a record, a member, the results), or with exit 2 and one
  line naming it (the workdir's record of its settings); never a traceback, and no model
  trained but the one whose own files were damaged;
- unreadable, or a folder this user cannot write in (as an ordinary user: root may
  write anything): refused, one line naming it;
- a file of the user's own in metrics/ is left alone, with one line saying so.

A seeded sample of the damages by default (every file, every kind of damage at least
once); every combination under `-m slow`.
"""

import contextlib
import json
import os
import random
import shutil
import tempfile

import keras
import pytest

from helpers.command import tfkd
from test_flagfiles import unblocked
from test_links import entries
from test_reliability import snapshot

RUN = ["--smoke", "--model=mlp", "--num_models=1", "--self_distill_steps=1"]
NOBODY = 65534


class ReachedTraining(BaseException):
    """Raised instead of training: the run passed every check that precedes a fit."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workdir a tiny pipeline finished in (copied for each case, never changed)."""
    workdir = tmp_path_factory.mktemp("files") / "w"
    result = tfkd("--mode=pipeline", *RUN, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture
def copy(finished, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    return workdir


def errors(stderr):
    return [line for line in stderr.splitlines() if line.startswith("tfkd: error:")]


def refused_before_training(argv, monkeypatch):
    """`tfkd argv` with fit replaced by ReachedTraining: the CompletedProcess."""
    def reached(*args, **kwargs):
        raise ReachedTraining

    with monkeypatch.context() as m:
        m.setattr(keras.Model, "fit", reached)
        try:
            return tfkd(*argv)
        except ReachedTraining:
            pytest.fail(f"{argv}: training started")


def assert_one_line(result, path):
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = errors(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, (path, result.stderr[-3000:])
    assert str(path) in lines[0], (path, lines[0])
    return lines[0]


# --- of the wrong kind --------------------------------------------------------------------

def plantings(workdir):
    """(relative path, what is planted there) for every entry the run wrote, and for what a
    run writes that a finished one leaves no file of (a model's training state, tune/)."""
    written = [p for p in entries(workdir)]
    cases = []
    for rel in written + ["tune", os.path.join("state", "member_0-0123456789ab.npz")]:
        is_dir = rel == "tune" or os.path.isdir(workdir / rel)
        for plant in (["file", "fifo"] if is_dir else ["directory", "fifo"]):
            cases.append((rel, plant))
    return cases


def test_an_entry_of_the_wrong_kind_is_refused_before_anything_trains(
        finished, tmp_path, monkeypatch):
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    before = snapshot(workdir)
    aside = tmp_path / "aside"
    cases = plantings(workdir)
    kinds = {os.path.dirname(rel) or "." for rel, _ in cases}
    assert {".", "models", "metrics", "cache", "logs", "state"} <= kinds, kinds
    for rel, plant in cases:
        path = workdir / rel
        existed = os.path.lexists(path)
        if existed:
            os.rename(path, aside)
        {"file": lambda p: p.write_text("not a folder\n"), "directory": os.mkdir,
         "fifo": os.mkfifo}[plant](path)
        try:
            # A reader that blocks on the FIFO fails the case instead of hanging the suite.
            with unblocked(path, after=2.0) if plant == "fifo" else contextlib.nullcontext():
                result = refused_before_training(
                    ["--mode=pipeline", *RUN, f"--workdir={workdir}"], monkeypatch)
        finally:
            shutil.rmtree(path) if path.is_dir() else os.remove(path)
            if existed:
                os.rename(aside, path)
        line = assert_one_line(result, path)
        assert "tfkd keeps a" in line or "not a regular file" in line or (
            rel == ".lock" and "Is a directory" in line), (rel, plant, line)
        assert snapshot(workdir) == before, (rel, plant)
    assert len(cases) >= 60


# --- damaged ------------------------------------------------------------------------------

DAMAGES = ("truncated", "garbage", "empty", "json_of_another_type", "wrong_value")
WRONG_VALUES = [[], {}, "x", "", 1.5, -1, 2, None, True, [1, 2], {"a": 1}, 1e308]


def damaged(data, damage, rng):
    """`data` (a file's bytes) damaged as `damage` says."""
    if damage == "truncated":
        return data[:rng.randrange(1, max(2, len(data)))]
    if damage == "garbage":
        return bytes(rng.randrange(256) for _ in range(max(16, min(len(data), 4096))))
    if damage == "empty":
        return b""
    if damage == "json_of_another_type":
        return json.dumps(rng.choice([[], "text", 3, None, [{"row": {}}]])).encode()
    value = json.loads(data)  # wrong_value: one value anywhere in it of another type
    nodes = []

    def walk(node, path):
        nodes.append(path)
        children = (node.items() if isinstance(node, dict) else
                    enumerate(node) if isinstance(node, list) else ())
        for key, child in children:
            walk(child, path + [key])

    walk(value, [])
    path = rng.choice(nodes[1:])
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    parent[path[-1]] = rng.choice([v for v in WRONG_VALUES if type(v) is not type(old)])
    return json.dumps(value).encode()


def damage_cases(workdir, every=False):
    """(relative path, damage) over what --mode=train reads (the workdir's record, every
    metrics record for its results table, its member) or rewrites (the results): every
    damage of every file with `every`, else each file with two, all damages covered."""
    files = ["config.json", *(os.path.join("metrics", n) for n in sorted(os.listdir(
        workdir / "metrics"))), os.path.join("models", "member_0.keras"),
        *(f"results.{ext}" for ext in ("md", "csv", "json", "png"))]
    cases = []
    for i, rel in enumerate(files):
        applicable = [d for d in DAMAGES if rel.endswith(".json") or "json" not in d
                      and d != "wrong_value"]
        chosen = applicable if every else [applicable[(2 * i + k) % len(applicable)]
                                           for k in range(2)]
        cases += [(rel, d) for d in chosen]
    return cases


def check_damaged(finished, tmp_path, rel, damage, seed):
    rng = random.Random(f"{rel}:{damage}:{seed}")
    workdir = tmp_path / f"w{seed}"
    shutil.copytree(finished, workdir)
    path = workdir / rel
    planted = damaged(path.read_bytes(), damage, rng)
    path.write_bytes(planted)
    models = {p: os.stat(workdir / "models" / p).st_mtime_ns
              for p in os.listdir(workdir / "models")}
    before = snapshot(workdir)
    result = tfkd("--mode=train", *RUN, f"--workdir={workdir}")
    case = (rel, damage, planted[:200])
    assert "Traceback" not in result.stderr, (case, result.stderr[-3000:])
    if result.returncode == 2:
        line = assert_one_line(result, path)
        # A record's value of the right type but not accepted is named as the setting's.
        assert rel == "config.json" and ("fix it, or remove it" in line or (
            f"taken from {path}" in line)), (case, line)
        assert snapshot(workdir) == before, case
        return
    assert result.returncode == 0, (case, result.stderr[-3000:])
    from tfkd.workdir import Workdir

    if rel.startswith("metrics"):
        if path.exists():  # valid as it is, or rewritten valid: the reader takes it
            Workdir(workdir).read_metrics(os.path.basename(rel)[:-len(".json")])
        else:  # removed, with one line naming it
            assert f"tfkd: {path} is damaged" in result.stderr, (case, result.stderr[-3000:])
    elif rel.endswith(".keras"):
        assert f"{path} is damaged" in result.stderr, (case, result.stderr[-3000:])
        keras.saving.load_model(str(path), compile=False)  # redone
    elif rel != "config.json":
        assert path.read_bytes() != planted, case  # the results are written anew
    # Nothing trained but a member whose own files were damaged.
    retrained = {p for p in models
                 if os.stat(workdir / "models" / p).st_mtime_ns != models[p]}
    own = {os.path.basename(rel).rsplit(".", 1)[0] + ".keras"}
    assert retrained <= own, (case, retrained)
    shutil.rmtree(workdir)


def test_a_damaged_file_is_redone_or_refused_in_one_line(finished, tmp_path):
    cases = damage_cases(finished)
    assert {d for _, d in cases} == set(DAMAGES)
    for i, (rel, damage) in enumerate(cases):
        check_damaged(finished, tmp_path, rel, damage, i)


@pytest.mark.slow
def test_every_damage_of_every_file_is_redone_or_refused(finished, tmp_path):
    for seed in range(3):
        for i, (rel, damage) in enumerate(damage_cases(finished, every=True)):
            check_damaged(finished, tmp_path, rel, damage, 1000 * seed + i)


def test_the_issues_records_are_refused_or_redone(copy):
    """The examples of issue 28: config.json's settings a list, a number where a list
    belongs; a damaged ensemble record under --mode=train."""
    record = copy / "config.json"
    original = json.loads(record.read_text())
    for settings, says in [([], "settings holds a list, where an object or null belongs"),
                           ({**original["settings"], "tune_params": 3},
                            "settings.tune_params holds 3, where a list belongs"),
                           ({**original["settings"], "epochs": "ten"},
                            "settings.epochs holds \"ten\", where a whole number belongs")]:
        record.write_text(json.dumps({**original, "settings": settings}))
        before = snapshot(copy)
        result = tfkd("--mode=train", *RUN, f"--workdir={copy}")
        line = assert_one_line(result, record)
        assert says in line, line
        assert snapshot(copy) == before
    record.write_text(json.dumps(original))
    (copy / "metrics" / "ensemble.json").write_text('{"row": {"name": "ensemble", "kind"')
    result = tfkd("--mode=train", *RUN, f"--workdir={copy}")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (f"tfkd: {copy / 'metrics' / 'ensemble.json'} is damaged: not JSON"
            in result.stderr), result.stderr[-3000:]
    assert not (copy / "metrics" / "ensemble.json").exists()
    assert not [line for line in (copy / "results.md").read_text().splitlines()
                if line.startswith("| ensemble ")]


def test_a_users_file_in_metrics_is_left_alone(copy):
    record = json.loads((copy / "metrics" / "member_0.json").read_text())
    strays = {"notes.json": b"my notes, not JSON\n", "list.json": b"[1, 2]\n",
              # A copy of a record: its row is member_0's, a second one would be ambiguous.
              "member_0_backup.json": json.dumps(record).encode()}
    for name, data in strays.items():
        (copy / "metrics" / name).write_bytes(data)
    result = tfkd("--mode=train", *RUN, f"--workdir={copy}")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for name, data in strays.items():
        path = copy / "metrics" / name
        assert path.read_bytes() == data
        lines = [ln for ln in result.stderr.splitlines() if f"ignoring {path}" in ln]
        assert len(lines) == 1, (name, result.stderr[-3000:])
    assert "member_0_backup" not in (copy / "results.md").read_text()


# --- permissions, as an ordinary user -----------------------------------------------------

@contextlib.contextmanager
def as_nobody():
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_an_unwritable_folder_or_unreadable_file_is_refused_before_anything_trains(
        finished, monkeypatch):
    # Where an ordinary user can reach it (pytest's folders are its owner's alone).
    top = tempfile.mkdtemp(prefix="tfkd-permissions-")
    try:
        os.chmod(top, 0o755)
        workdir = os.path.join(top, "w")
        shutil.copytree(finished, workdir)
        for directory, dirs, files in os.walk(workdir):
            for name in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
                os.chown(name, NOBODY, NOBODY)
        found = entries(workdir)
        folders = [rel for rel in found if os.path.isdir(os.path.join(workdir, rel))]
        read = ["config.json", *(rel for rel in found if rel.split(os.sep)[0] in (
            "models", "metrics", "cache") and os.path.isfile(os.path.join(workdir, rel)))]
        assert "logs/member_0" in folders and len(read) >= 10
        cases = [(rel, 0o555) for rel in folders] + [(rel, 0o000) for rel in read]
        before = snapshot(workdir)
        for rel, mode in cases:
            path = os.path.join(workdir, rel)
            previous = os.stat(path).st_mode & 0o777
            os.chmod(path, mode)
            try:
                with as_nobody():
                    result = refused_before_training(
                        ["--mode=pipeline", *RUN, f"--workdir={workdir}"], monkeypatch)
            finally:
                os.chmod(path, previous)
            line = assert_one_line(result, path)
            assert ("a folder this user cannot write in" in line and "chmod -R u+w" in line
                    if mode == 0o555 else "cannot be read" in line and "chmod u+r" in line), (
                rel, line)
            assert snapshot(workdir) == before, rel
    finally:
        shutil.rmtree(top)


def test_a_damaged_model_a_run_consumes_is_refused_before_anything_trains(copy, monkeypatch):
    """--mode=analyze takes the distilled student as it is (it does not train it): a damaged
    one was a Keras traceback."""
    model = copy / "models" / "distilled.keras"
    data = model.read_bytes()
    for planted in (data[:len(data) // 2], data[:100] + bytes(len(data) - 100)):
        model.write_bytes(planted)
        before = snapshot(copy)
        result = refused_before_training(["--mode=analyze", *RUN, f"--workdir={copy}"],
                                         monkeypatch)
        line = assert_one_line(result, model)
        assert "run --mode=distill with this --workdir to train it again" in line, line
        assert snapshot(copy) == before
