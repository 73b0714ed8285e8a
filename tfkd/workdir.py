"""The workdir: where every mode reads and writes its artifacts.

    <workdir>/
      config.json                 the configuration and library versions of the last run
      models/<name>.keras         every trained model (plain Keras files)
      metrics/<name>.json         per-model result row + training history
      logs/<name>/                TensorBoard logs
      tune/                       keras-tuner's search, best.flags, trials.{md,csv,png}
      state/<name>-<hash>.npz     an unfinished model's state after its last epoch, removed
                                  when the model is finished (hash: its training settings)
      cache/                      teachers' logits (see tfkd.cache)
      results.{md,csv,json,png}   the results table and chart
      .lock                       held by the run using the workdir (names it while it runs)

Every file is written atomically (temporary file in the same directory, flushed to disk,
then `os.replace`), so a killed run or a lost machine never leaves a half-written artifact
behind, and a model whose file exists is finished. The temporary files of a killed write
are removed by the next run. One run at a time holds a workdir (`.lock`, an advisory
`flock` the system releases when the process ends, however it ends).
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time

# The temporary names atomic_path gives: ".<base>.<random>.tmp<ext>".
TEMPORARY = re.compile(r"^\..+\.tmp(\.\w+)?$")
LOCK = ".lock"
SUBDIRS = ("models", "metrics", "logs", "cache", "state")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; artifacts get the mode any other
# file of this user gets.
FILE_MODE = 0o666 & ~_umask()


class DiskFull(OSError):
    """A write ran out of space: names the path, the space it needs and the space free."""

    def __init__(self, path, needed=None, free=None):
        self.path, self.needed, self.free = path, needed, free
        need = f"writing it takes about {_size(needed)}" if needed else "it needs more space"
        have = f", {_size(free)} are free" if free is not None else ""
        super().__init__(errno.ENOSPC, f"no space left on the device of {path}: {need}{have}; "
                         "free some space and run the same command again (finished work is "
                         "kept)")


def _size(n):
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def is_disk_full(error):
    """Whether `error`, or an error it was raised from, is a full disk (or quota).

    Libraries below Keras report it in their own types (h5py, zipfile, TensorFlow's
    "No space left on device" OpErrors), so the chain and the text are both looked at.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def atomic_path(path, size=None):
    """Yields a temporary path next to `path`; moves it onto `path` only if the block succeeds.

    `size`: about how many bytes the file takes, named in the DiskFull error a full disk
    turns into (else the bytes written before the disk filled up).
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        base, ext = os.path.splitext(os.path.basename(path))
        # Keep the extension: keras.Model.save insists on ".keras".
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=directory)
        os.close(fd)
        yield tmp
        # On disk before the rename: after a crash the new name never points at a file
        # whose blocks were not written yet.
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except Exception as e:
        if not is_disk_full(e):
            raise
        written = os.path.getsize(tmp) if tmp and os.path.exists(tmp) else 0
        if written:
            os.remove(tmp)  # before measuring what is free
        raise DiskFull(path, needed=max(size or 0, written) or None,
                       free=shutil.disk_usage(directory).free) from e
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    # newline="": a CSV's line endings stay as written on every platform.
    with atomic_path(path, size=len(text.encode("utf-8"))) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)


def save_figure(figure, path, **savefig_kwargs):
    """Writes a matplotlib figure to `path` atomically, in the format its extension names
    (PNG when it has none)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    with atomic_path(os.fspath(path)) as tmp:
        figure.savefig(tmp, format=fmt, **savefig_kwargs)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Workdir:
    """Paths of a workdir's artifacts, and atomic writers for them.

    A non-chief worker of a cluster passes `scratch`, a private directory: it
    writes its own copies there (never into the chief's workdir) and reads its
    own copies first, the chief's otherwise. So every worker sees the same
    finished models at start and its own the moment it finishes one, without
    waiting for the chief's files.
    """

    def __init__(self, root, scratch=None):
        self.root = os.path.abspath(os.fspath(root))
        self.scratch = os.path.abspath(scratch) if scratch else None

    @property
    def writable(self):
        """Whether this process writes the workdir itself (logs, reports, config)."""
        return self.scratch is None

    def create(self):
        """Makes the workdir's folders, takes its lock and removes what killed writes left.

        Raises WorkdirBusy if another process holds the workdir, OSError if this process
        cannot write one of its folders (found now rather than after hours of training).
        """
        for top in filter(None, (self.root, self.scratch)):
            if os.path.exists(top) and not os.path.isdir(top):
                raise NotADirectoryError(f"workdir {top} exists and is not a directory")
        own = self.scratch or self.root
        os.makedirs(own, exist_ok=True)
        if self.writable:
            _lock(self.root)
        for sub in SUBDIRS:
            os.makedirs(os.path.join(own, sub), exist_ok=True)
        for folder in ("", *SUBDIRS, "tune"):
            directory = os.path.join(own, folder)
            if os.path.isdir(directory):
                probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe")
                probe.close()
        self._remove_temporary(own)
        return self

    def remove_if_empty(self, created):
        """Removes the workdir if it holds no file but its lock (folders only), and the empty
        folders above it up to `created`, the outermost one its run made (see
        `first_missing`): what a run that wrote nothing leaves of a workdir it made."""
        for directory, _, names in os.walk(self.root):
            if any(not (directory == self.root and name == LOCK) for name in names):
                return
        shutil.rmtree(self.root, ignore_errors=True)
        parent = os.path.dirname(self.root)
        while len(parent) >= len(created):
            try:
                os.rmdir(parent)
            except OSError:  # not empty: someone else's
                return
            parent = os.path.dirname(parent)

    @staticmethod
    def _remove_temporary(own):
        # Safe under the lock: no other run of this workdir is writing.
        removed = 0
        for folder in ("", *SUBDIRS, "tune"):
            directory = os.path.join(own, folder)
            if folder == "logs" or not os.path.isdir(directory):
                continue  # logs/ belongs to TensorBoard's writers
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                if (TEMPORARY.match(name) or name.startswith(".probe")) and os.path.isfile(path):
                    os.remove(path)
                    removed += 1
        if removed:
            from absl import logging

            logging.info("tfkd: removed %d temporary file(s) an interrupted run left in %s",
                         removed, own)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def _read(self, *parts):
        if self.scratch and os.path.exists(os.path.join(self.scratch, *parts)):
            return os.path.join(self.scratch, *parts)
        return self.path(*parts)

    def _write(self, *parts):
        return os.path.join(self.scratch or self.root, *parts)

    def model_path(self, name):
        return self._read("models", f"{name}.keras")

    def metrics_path(self, name):
        return self._read("metrics", f"{name}.json")

    def logs_path(self, name):
        return self._write("logs", name)

    def tune_path(self):
        return self._write("tune")

    def state_path(self, name, key):
        return self._write("state", f"{name}-{key}.npz")

    def has_model(self, name):
        return os.path.exists(self.model_path(name)) and os.path.exists(self.metrics_path(name))

    def save_model(self, model, name):
        size = sum(int(w.numpy().nbytes) for w in model.weights)
        with atomic_path(self._write("models", f"{name}.keras"), size=size) as tmp:
            model.save(tmp)

    def remove_model(self, name):
        """Deletes `name`'s model and metrics files (this process's own copies)."""
        for path in (self._write("models", f"{name}.keras"), self._write("metrics", f"{name}.json")):
            if os.path.exists(path):
                os.remove(path)

    def load_model(self, name):
        import keras  # deferred: reading metrics and reports needs no TensorFlow

        return keras.saving.load_model(self.model_path(name), compile=False)

    def write_metrics(self, name, record):
        write_json(self._write("metrics", f"{name}.json"), record)

    def read_metrics(self, name):
        return read_json(self.metrics_path(name))

    def all_metrics(self):
        """Every metrics record in the workdir, sorted by name."""
        directory = self.path("metrics")
        if not os.path.isdir(directory):
            return []
        return [read_json(os.path.join(directory, f))
                for f in sorted(os.listdir(directory))
                if f.endswith(".json") and not f.startswith(".")]


def first_missing(path):
    """The outermost folder of `path` that does not exist yet (None if `path` exists)."""
    path, missing = os.path.abspath(path), None
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path, missing = os.path.dirname(path), path
    return missing


# --- one run per workdir -------------------------------------------------------------------

class WorkdirBusy(RuntimeError):
    """Another process holds the workdir's lock; the message names it."""


_HELD = {}  # root -> open lock file of this process (held until the process ends)


def _lock(root):
    """Takes `root`'s lock for this process, or raises WorkdirBusy naming the holder.

    flock, not a pid file: the system drops it when its process ends, SIGKILL included, so a
    killed run never leaves a workdir locked. The file holds who has it, for the message.
    """
    if root in _HELD:
        return
    path = os.path.join(root, LOCK)
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            handle.close()
            raise
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise WorkdirBusy(f"workdir {root} is in use by {holder}; wait for that run to end, "
                          "or use another --workdir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"tfkd process {os.getpid()} on {socket.gethostname()}, started "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:300]}")
    handle.flush()
    _HELD[root] = handle


def release(root):
    """Gives up `root`'s lock (also given up when the process ends), leaving the lock file
    empty as every finished run leaves it."""
    handle = _HELD.pop(os.path.abspath(os.fspath(root)), None)
    if handle is not None:
        handle.seek(0)
        handle.truncate()
        handle.close()
