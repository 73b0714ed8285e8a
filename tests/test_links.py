"""Nothing outside the workdir is written, and the write-side faults.

- A symbolic link at any file or folder a run writes (learned from a run of every mode that
  writes, not listed by hand) is refused before anything is written: exit 2, one line
  naming it; the file it points to is unchanged, a dangling one's target is not created.
- The lock is never opened through a link or a second name.
- tfkd's temporaries carry a name of tfkd's own; a killed write's, wherever tfkd writes
  them (caches included), are removed by the next run, and no user's file is.
- A short write (numpy's "N requested and M written", which carries no errno) is a full disk.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers.command import ROOT, invoke, ok, process_env, tfkd
from test_reliability import snapshot

# One tiny run of each mode that writes: members, ensemble, a distilled student on cached
# teacher outputs (a views cache in a folder of its own), self-distillation, a tune search.
RUN = ["--smoke", "--model=cnn", "--num_models=2", "--augment=crop_flip"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(workdir every mode wrote into, the folder outside it that links point into)."""
    root = tmp_path_factory.mktemp("links")
    workdir = root / "w"
    ok(tfkd("--mode=pipeline", *RUN, f"--workdir={workdir}"))
    ok(tfkd("--mode=tune", *RUN, "--max_trials=1", f"--workdir={workdir}"))
    ok(tfkd("--mode=analyze", *RUN, f"--workdir={workdir}"))
    outside = root / "outside"
    outside.mkdir()
    return workdir, outside


def entries(workdir):
    """Every file and folder the runs left in `workdir`, relative, the lock included."""
    found = []
    for directory, dirs, files in os.walk(workdir):
        found += [os.path.relpath(os.path.join(directory, n), workdir) for n in dirs + files]
    return sorted(found)


def digest(path):
    """What a test compares outside the workdir: every file's bytes and modification time."""
    state = {}
    for directory, _, files in os.walk(path):
        for name in files:
            full = os.path.join(directory, name)
            with open(full, "rb") as f:
                state[os.path.relpath(full, path)] = (hashlib.sha1(f.read()).hexdigest(),
                                                      os.stat(full).st_mtime_ns)
    return state


def test_a_link_at_anything_a_run_writes_is_refused_and_nothing_outside_changes(
        written, capsys):
    workdir, outside = written
    kinds = {os.path.dirname(p) or "." for p in entries(workdir)}
    # What the runs wrote: the lock, record, reports, models, metrics, states are gone once
    # finished, logs, both kinds of cache, the search; so every kind gets its link below.
    for expected in (".", "models", "metrics", "cache", "tune", "logs"):
        assert expected in kinds, kinds
    assert {".lock", "config.json", "results.md", "results.png", "analysis.json",
            os.path.join("tune", "best.flags")} <= set(entries(workdir))
    assert any(p.startswith(os.path.join("cache", "ensemble-views-")) and p.endswith(".npy")
               for p in entries(workdir))
    victim_file = outside / "victim.txt"
    victim_file.write_text("another user's file\n")
    victim_dir = outside / "victim_dir"
    victim_dir.mkdir()
    (victim_dir / "kept.txt").write_text("kept\n")
    before, outside_before = snapshot(workdir), digest(outside)
    aside = workdir.parent / "aside"
    # What a run writes that a finished one leaves no file of: a model's training state
    # (removed once it is finished) and a temporary (renamed onto its file).
    from tfkd.modes.store import state_key

    settings = json.load(open(workdir / "metrics" / "member_0.json"))["settings"]
    passing = [os.path.join("state", f"member_0-{state_key(settings)}.npz"),
               ".results.tfkd-tmp-abcd1234.md"]
    cases = 0
    for rel in entries(workdir) + passing:
        path = workdir / rel
        targets = ([victim_dir, outside / "absent_dir"] if path.is_dir() else
                   [victim_file, outside / "absent.txt"])
        for target in targets:
            if rel not in passing:
                os.rename(path, aside)
            os.symlink(target, path)
            try:
                code = invoke(["--mode=pipeline", *RUN, f"--workdir={workdir}"])
            finally:
                os.remove(path)
                if rel not in passing:
                    os.rename(aside, path)
            stderr = capsys.readouterr().err
            errors = [ln for ln in stderr.splitlines() if ln.startswith("tfkd: error:")]
            assert code == 2 and len(errors) == 1, (rel, target, stderr[-2000:])
            assert f"{path} is a symbolic link (to {target})" in errors[0], (rel, errors[0])
            assert "Traceback" not in stderr
            assert digest(outside) == outside_before, (rel, target)
            assert not os.path.lexists(outside / "absent_dir")
            assert not os.path.lexists(outside / "absent.txt")
            cases += 1
    assert cases >= 60
    assert snapshot(workdir) == before


def test_every_entry_a_run_writes_is_in_the_layout_the_pre_flight_check_knows(written):
    """workdir.LAYOUT, which `Workdir.check` holds a workdir's entries to before a run, knows
    every file and folder every mode writes, as the kind it is; every metrics record is of
    a name tfkd writes (a damaged one is redone, not taken for a user's file)."""
    from tfkd.workdir import DIR, RECORD_NAME, layout_kind

    workdir, _ = written
    for rel in entries(workdir):
        kind = layout_kind(rel.replace(os.sep, "/"))
        assert kind is not None, rel
        assert (kind == DIR) == os.path.isdir(workdir / rel), (rel, kind)
    names = [n[:-len(".json")] for n in os.listdir(workdir / "metrics")]
    assert len(names) >= 6 and all(RECORD_NAME.match(n) for n in names), names


def test_a_damaged_file_of_a_tune_search_is_refused_before_anything_trains(
        written, tmp_path, monkeypatch):
    """keras-tuner reads its project back when a search continues (a traceback on a damaged
    file): each of its JSON files, truncated, is refused in one line naming it, before any
    training (see tests/test_workdir_files.py for tfkd's own files)."""
    import keras

    source, _ = written
    workdir = tmp_path / "w"
    shutil.copytree(source, workdir, symlinks=True)
    found = [rel for rel in entries(workdir)
             if rel.startswith(os.path.join("tune", "search-")) and rel.endswith(".json")]
    assert len(found) >= 3, found

    def training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(keras.Model, "fit", training)
    for rel in found:
        path = workdir / rel
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        before = snapshot(workdir)
        result = tfkd("--mode=tune", *RUN, "--max_trials=1", f"--workdir={workdir}")
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("tfkd: error:")]
        assert result.returncode == 2 and len(errors) == 1, (rel, result.stderr[-3000:])
        assert f"{path} is damaged" in errors[0] and "to start that search over" in errors[0]
        assert snapshot(workdir) == before
        path.write_bytes(data)


def test_the_lock_is_never_opened_through_a_link_or_a_second_name(tmp_path):
    from tfkd import workdir as workdir_lib

    victim = tmp_path / "victim.txt"
    victim.write_text("another user's file\n")
    for i, plant in enumerate([
            lambda lock: os.symlink(victim, lock),
            lambda lock: os.symlink(tmp_path / "absent", lock),
            lambda lock: os.link(victim, lock)]):
        root = tmp_path / f"w{i}"
        root.mkdir()
        plant(root / ".lock")
        with pytest.raises(workdir_lib.UnsafeWorkdir, match=f"{root / '.lock'}"):
            workdir_lib.Workdir(root).create()
        # Opened without following links also when a link appears after the run's check.
        with pytest.raises(workdir_lib.UnsafeWorkdir, match=f"{root / '.lock'}"):
            workdir_lib.open_in_place(root / ".lock", os.O_RDWR | os.O_CREAT)
        assert victim.read_text() == "another user's file\n"
        assert not os.path.lexists(tmp_path / "absent")
        # Refused before its folders were made.
        assert sorted(os.listdir(root)) == [".lock"]


def _killed_write(path):
    """A write of `path` killed by SIGKILL half-way: leaves the temporary tfkd names it."""
    code = ("import os, signal, sys\n"
            "from tfkd.workdir import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    open(tmp, 'wb').write(b'half'); os.kill(os.getpid(), signal.SIGKILL)\n")
    process = subprocess.run([sys.executable, "-c", code, str(path)], env=process_env(),
                             cwd=ROOT)
    assert process.returncode == -signal.SIGKILL


def test_a_killed_writes_temporaries_are_removed_and_no_users_file_is(written, tmp_path):
    source, _ = written
    workdir = tmp_path / "w"
    shutil.copytree(source, workdir, symlinks=True)
    [views] = [p for p in (workdir / "cache").iterdir() if p.is_dir()]
    for path in (views / "epoch_0.npy", workdir / "cache" / "x.npy",
                 workdir / "tune" / "best.flags", workdir / "results.md",
                 workdir / "metrics" / "member_0.json"):
        _killed_write(path)
    from tfkd.workdir import TEMPORARY

    left = [os.path.join(d, n) for d, _, names in os.walk(workdir) for n in names
            if TEMPORARY.match(n)]
    assert len(left) == 5, left
    # A user's files that look like temporaries of some other program.
    users = [workdir / ".notes.tmp", workdir / "metrics" / ".draft.tmp.json",
             workdir / ".probe_notes", views / ".epoch_9.abc.tmp.npy"]
    for path in users:
        path.write_text("mine\n")
    # The workdir itself may be a link: it is where the user said to write.
    os.symlink(workdir, tmp_path / "link")
    result = ok(tfkd("--mode=pipeline", *RUN, f"--workdir={tmp_path / 'link'}"))
    assert "removed 5 temporary file(s)" in result.stderr
    assert not any(os.path.exists(p) for p in left)
    assert all(p.read_text() == "mine\n" for p in users)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                    reason="mounting a small tmpfs needs root")
def test_a_short_write_of_a_cache_is_a_full_disk(tmp_path):
    from tfkd import cache
    from tfkd.workdir import TEMPORARY, DiskFull

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        logits = np.random.default_rng(0).normal(size=(2000, 50))
        # numpy's own message for the short write ("N requested and M written") has no errno.
        with pytest.raises(DiskFull, match=f"no space left on the device of {disk}"):
            cache.store_logits(str(disk / "teachers.val.npy"), logits)
        assert not [n for n in os.listdir(disk) if TEMPORARY.match(n)]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
