"""Flagfiles and recipes: every file a user can name either gives its flags or ends in one
`tfkd: error:` line naming it, exit code 2, before anything is read without bound.

In this process (tests/helpers/command.py), except /dev/zero, read in a subprocess under a
memory limit: a reader without a bound would otherwise fill this machine's memory.
"""

import contextlib
import os
import resource
import subprocess
import sys
import threading
import time

import pytest
from helpers.command import ROOT, process_env, reset_flags, tfkd

from tfkd import cli, flagfiles


def one_error_line(result):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfkd: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


@contextlib.contextmanager
def unblocked(fifo, after=10.0):
    """A writer opens and closes `fifo` after `after` seconds if a reader waits on it, so
    that a reader that blocks on it fails the test instead of hanging it."""
    done = threading.Event()

    def writer():
        deadline = time.monotonic() + after
        while not done.is_set():
            if time.monotonic() > deadline:
                try:  # succeeds only while a reader has it open
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
            time.sleep(0.1)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def as_nobody():
    """Permissions as an ordinary user sees them (root reads any file)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def chain(directory, length, last="--model=mlp\n"):
    """length flagfiles, each including the next; the first one's path."""
    paths = [directory / f"chain{i}.flags" for i in range(length)]
    for i, path in enumerate(paths):
        path.write_text(f"--flagfile={paths[i + 1]}\n" if i + 1 < length else last)
    return str(paths[0])


def make(kind, d):
    """A flagfile that cannot be used, of `kind`: (path, what the error line must say)."""
    if kind == "missing":
        return str(d / "missing.flags"), "does not exist"
    if kind == "directory":
        return str(d), "is a directory"
    if kind == "fifo":
        os.mkfifo(d / "pipe.flags")
        return str(d / "pipe.flags"), "FIFO"
    if kind == "unreadable":
        (d / "secret.flags").write_text("--model=mlp\n")
        os.chmod(d / "secret.flags", 0)
        return str(d / "secret.flags"), "permission denied"
    if kind == "latin1":
        (d / "latin1.flags").write_bytes(b"--model=mlp\n# caf\xe9\n")
        return str(d / "latin1.flags"), "not UTF-8 text (byte 17 is 0xE9)"
    if kind == "utf16":
        (d / "utf16.flags").write_bytes("--model=mlp\n".encode("utf-16"))
        return str(d / "utf16.flags"), "is UTF-16 text"
    if kind == "oversized":
        (d / "big.flags").write_bytes(b"# padding\n" * (flagfiles.MAX_BYTES // 10 + 1))
        return str(d / "big.flags"), "larger than 1 MiB"
    if kind == "cycle":
        (d / "a.flags").write_text(f"--model=mlp\n--flagfile={d / 'b.flags'}\n")
        (d / "b.flags").write_text(f"--flagfile={d / 'a.flags'}\n")
        return str(d / "a.flags"), "includes itself"
    if kind == "deep":  # 3,000: deeper than Python's recursion limit
        return chain(d, 3000), f"more than {flagfiles.MAX_DEPTH} deep"
    if kind == "empty_name":
        return "", "needs a file name"
    if kind == "nested_missing":
        (d / "outer.flags").write_text(f"# an include\n--flagfile={d / 'gone.flags'}\n")
        return str(d / "outer.flags"), "gone.flags' (included from"
    if kind == "nested_recipe":
        (d / "outer.flags").write_text("--recipe=imagenet_vit\n")
        return str(d / "outer.flags"), "unknown recipe 'imagenet_vit' (included from"
    raise ValueError(kind)


KINDS = ["missing", "directory", "fifo", "unreadable", "latin1", "utf16", "oversized", "cycle",
         "deep", "empty_name", "nested_missing", "nested_recipe"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_flagfile_that_cannot_be_used_is_one_line(tmp_path, kind):
    path, says = make(kind, tmp_path)
    with unblocked(path) if kind == "fifo" else contextlib.nullcontext(), \
            as_nobody() if kind == "unreadable" else contextlib.nullcontext():
        result = tfkd(f"--flagfile={path}", "--smoke", f"--workdir={tmp_path / 'run'}")
    line = one_error_line(result)
    assert says in line and path in line, line
    assert "flagfiles are UTF-8 text files of --flag=value lines" in line or (
        kind in ("cycle", "deep", "nested_recipe")), line
    assert not os.path.exists(tmp_path / "run")


def test_dev_zero_is_refused_without_reading_it():
    limit = 1 << 30  # a reader that reads it whole dies of this limit, not of the machine's

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "tfkd", "--flagfile=/dev/zero"],
                            capture_output=True, text=True, env=process_env(), cwd=ROOT,
                            timeout=120, preexec_fn=limited)
    line = one_error_line(result)
    assert "'/dev/zero' is a character device, not a regular file" in line, line


def parsed(*argv):
    """The flags' values after parsing argv (tfkd's flags, reset first)."""
    reset_flags()
    cli.parse_flags(["tfkd", *argv])
    return cli.FLAGS


def test_a_byte_order_mark_and_windows_line_ends_are_read(tmp_path):
    path = tmp_path / "windows.flags"
    path.write_bytes(b"\xef\xbb\xbf--model=mlp\r\n# a comment\r\n--epochs=3\r\n")
    flags = parsed(f"--flagfile={path}")
    assert (flags.model, flags.epochs) == ("mlp", 3)
    # A nested include with a mark of its own.
    outer = tmp_path / "outer.flags"
    outer.write_bytes(b"\xef\xbb\xbf--flagfile=" + str(path).encode() + b"\r\n--epochs=4\r\n")
    flags = parsed(f"--flagfile={outer}")
    assert (flags.model, flags.epochs) == ("mlp", 4)


def test_includes_within_the_limit_and_twice_are_read(tmp_path):
    flags = parsed(f"--flagfile={chain(tmp_path, flagfiles.MAX_DEPTH + 1)}")
    assert flags.model == "mlp"
    # The same file twice is no cycle; later flags override earlier ones, as in absl.
    (tmp_path / "lr.flags").write_text("--learning_rate=0.5\n")
    (tmp_path / "both.flags").write_text(
        f"--flagfile={tmp_path / 'lr.flags'}\n--learning_rate=0.1\n"
        f"  --flagfile={tmp_path / 'lr.flags'}\n")
    assert parsed(f"--flagfile={tmp_path / 'both.flags'}").learning_rate == 0.5
    assert parsed(f"--flagfile={tmp_path / 'both.flags'}", "--learning_rate=0.2",
                  ).learning_rate == 0.2


def test_a_recipe_is_read_however_it_is_given(tmp_path):
    """--recipe NAME (two arguments) and --recipe=NAME in a flagfile were ignored."""
    assert parsed("--recipe", "cifar10_wrn28_10").model == "wrn28_10"
    (tmp_path / "mine.flags").write_text("--recipe=cifar10_wrn28_10\n--epochs=2\n")
    flags = parsed(f"--flagfile={tmp_path / 'mine.flags'}")
    assert (flags.model, flags.epochs) == ("wrn28_10", 2)
    assert parsed("--flagfile", str(tmp_path / "mine.flags")).model == "wrn28_10"
