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
(named `.<name>.tfkd-tmp-<8 random characters><ext>`, a pattern no other program uses)
are removed by the next run. One run at a time holds a workdir (`.lock`, an advisory
`flock` the system releases when the process ends, however it ends).

Nothing outside the workdir is written. Before anything is written, a run refuses a
workdir holding a symbolic link at its top or anywhere in its folders (tfkd, Keras's
TensorBoard writer and keras-tuner would follow it); the lock, the one file written in
place, is opened without following links; every other file is a new temporary (created
exclusively, which never follows a link) renamed over its name, which replaces whatever
is there rather than writing through it. The workdir itself may be a link (it is where
the user said to write).
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time

from tfkd.config import ConfigError

# The names of tfkd's temporary files (`_temporary`): ".<base>.tfkd-tmp-<mkstemp's 8
# random characters><ext>". Only names of this pattern are ever swept: a user's
# ".notes.tmp" is not tfkd's.
TEMPORARY_MARK = ".tfkd-tmp-"
TEMPORARY = re.compile(r"^\..*\.tfkd-tmp-[a-z0-9_]{8}(\.\w+)?$")
LOCK = ".lock"
SUBDIRS = ("models", "metrics", "logs", "cache", "state")
# The folders the workdir's files are written in (the folders of SUBDIRS are made by every
# run; tune/ by --mode=tune).
FOLDERS = (*SUBDIRS, "tune")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; artifacts get the mode any other
# file of this user gets.
FILE_MODE = 0o666 & ~_umask()


class UnsafeWorkdir(ConfigError):
    """A file or folder a run would write is a symbolic link (or, for the lock, not a regular
    file of one name): writing it could change a file outside the workdir. The message names
    it, where it points, and what to do; nothing was written."""


def _unsafe(path, problem):
    return UnsafeWorkdir(f"{path} {problem}; tfkd writes only regular files and folders "
                         "inside its workdir, never through a link: remove it (or move what "
                         "it points to into the workdir), or use another --workdir")


def _link_problem(path):
    try:
        return f"is a symbolic link (to {os.readlink(path)})"
    except OSError:
        return "is a symbolic link"


def open_in_place(path, flags):
    """Opens `path` for a write in place (the lock is the one such file): never through a
    symbolic link (O_NOFOLLOW), and only a regular file with no other name (a hard link
    would let the write reach a file elsewhere). Returns the file descriptor.

    Files written whole are not opened this way: see `atomic_file`.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP and os.path.islink(path):
            raise _unsafe(path, _link_problem(path)) from None
        raise
    info = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode) else
               f"has {info.st_nlink} names (hard links)" if info.st_nlink > 1 else None)
    if problem:
        os.close(fd)
        raise _unsafe(path, problem)
    return fd


def _own_entries(own):
    """The workdir's own entries, without following links: those at its top, and everything
    in its folders (FOLDERS), at any depth. A folder that vanishes while it is read (a
    concurrent run's temporary) is skipped."""
    def walk(directory):
        try:
            with os.scandir(directory) as found:
                found = list(found)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in found:
            yield entry
            if entry.is_dir(follow_symlinks=False):
                yield from walk(entry.path)

    try:
        with os.scandir(own) as top:
            top = list(top)
    except FileNotFoundError:
        return
    for entry in top:
        yield entry
        if entry.name in FOLDERS and entry.is_dir(follow_symlinks=False):
            yield from walk(entry.path)


def check_no_links(own):
    """Raises UnsafeWorkdir naming the first symbolic link among the workdir's own entries.

    A link anywhere there could make a write land outside the workdir: tfkd's own writers
    never follow one, but Keras's TensorBoard writer (logs/) and keras-tuner (tune/) open
    their files by name, and a linked folder takes every file written in it elsewhere. At
    the top any link is refused, since runs write files of many names there (results,
    record, analysis). Refusing rather than replacing a link: it may be the user's own
    (a cache folder on another disk), so the run says so instead of undoing it.
    """
    links = sorted(entry.path for entry in _own_entries(own) if entry.is_symlink())
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise _unsafe(links[0], _link_problem(links[0]) + more)


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


# numpy's message for a short write (`ndarray.tofile`, under np.save): it has no errno.
SHORT_WRITE = re.compile(r"\b\d+ requested and \d+ written\b")


def is_disk_full(error):
    """Whether `error`, or an error it was raised from, is a full disk (or quota).

    Libraries below Keras report it in their own types (h5py, zipfile, TensorFlow's
    "No space left on device" OpErrors), so the chain and the text are both looked at.
    A short write (numpy's "N requested and M written", which carries no errno) is a full
    disk too: a write to a local file stops short of its bytes for no other reason.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if ("No space left on device" in text or "Disk quota exceeded" in text
                or (isinstance(error, OSError) and SHORT_WRITE.search(text))):
            return True
        error = error.__cause__ or error.__context__
    return False


def _temporary(directory, base, ext=""):
    """A new, empty temporary file of tfkd's name pattern (TEMPORARY) in `directory`:
    (open binary file, path). mkstemp creates it exclusively (O_EXCL, O_NOFOLLOW), so it is
    a new regular file, never a link's target, and readable by its owner only until
    `atomic_file` gives it the usual mode."""
    fd, path = tempfile.mkstemp(prefix=f".{base}{TEMPORARY_MARK}", suffix=ext, dir=directory)
    f = os.fdopen(fd, "w+b")
    f.raw.name = path  # what `.name` says (os.fdopen names it by its descriptor)
    return f, path


@contextlib.contextmanager
def atomic_file(path, size=None):
    """Yields a new temporary file next to `path`, open for binary writing (its name is the
    file's `.name`); moves it onto `path` only if the block succeeds.

    Writers write into the open file rather than opening a name: nothing of a write goes
    through a link. (A writer that can only take a name, such as Keras's `Model.save`, gets
    `.name`, a file this run just created; the rename checks it is still that file.) The
    rename replaces whatever `path` is, a link included, and never writes through it.

    `size`: about how many bytes the file takes, named in the DiskFull error a full disk
    turns into (else the bytes written before the disk filled up).
    """
    directory = os.path.dirname(os.path.abspath(path))
    f = tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        base, ext = os.path.splitext(os.path.basename(path))
        # Keep the extension: keras.Model.save insists on ".keras".
        f, tmp = _temporary(directory, base, ext)
        yield f
        f.flush()
        # On disk before the rename: after a crash the new name never points at a file
        # whose blocks were not written yet.
        os.fsync(f.fileno())
        os.fchmod(f.fileno(), FILE_MODE)
        if not os.path.samestat(os.fstat(f.fileno()), os.lstat(tmp)):
            raise _unsafe(tmp, "was replaced while it was written")
        os.replace(tmp, path)
        tmp = None
    except Exception as e:
        if not is_disk_full(e):
            raise
        written = os.fstat(f.fileno()).st_size if f is not None else 0
        _discard(f, tmp)  # before measuring what is free
        f = tmp = None
        raise DiskFull(path, needed=max(size or 0, written) or None,
                       free=shutil.disk_usage(directory).free) from e
    finally:
        _discard(f, tmp)


def _discard(f, tmp):
    if f is not None:
        try:
            f.close()
        except OSError:  # a full disk again, flushing what the block left buffered
            pass
    if tmp is not None and os.path.lexists(tmp):
        os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path, size=None):
    """`atomic_file` for writers that take a file name (Keras's `Model.save`): yields the
    temporary file's path."""
    with atomic_file(path, size) as f:
        yield f.name


def write_text(path, text):
    # Bytes as written: a CSV's line endings stay as they are on every platform.
    data = text.encode("utf-8")
    with atomic_file(path, size=len(data)) as f:
        f.write(data)


def save_figure(figure, path, **savefig_kwargs):
    """Writes a matplotlib figure to `path` atomically, in the format its extension names
    (PNG when it has none)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    with atomic_file(os.fspath(path)) as f:
        figure.savefig(f, format=fmt, **savefig_kwargs)


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

        Raises WorkdirBusy if another process holds the workdir, UnsafeWorkdir if one of the
        workdir's entries is a symbolic link or the lock a second name of a file (found
        before anything is written), OSError if this process cannot write one of its
        folders (found now rather than after hours of training).
        """
        for top in filter(None, (self.root, self.scratch)):
            if os.path.exists(top) and not os.path.isdir(top):
                raise NotADirectoryError(f"workdir {top} exists and is not a directory")
        own = self.scratch or self.root
        os.makedirs(own, exist_ok=True)
        # Before anything is written, the lock included (which is checked as it is opened).
        check_no_links(own)
        took = self.writable and self.root not in _HELD
        if took:
            _lock(self.root)
        try:
            for sub in SUBDIRS:
                os.makedirs(os.path.join(own, sub), exist_ok=True)
            for folder in ("", *FOLDERS):
                directory = os.path.join(own, folder)
                if os.path.isdir(directory):
                    probe, path = _temporary(directory, "probe")
                    probe.close()
                    os.remove(path)
            self._remove_temporary(own)
        except BaseException:
            if took:
                release(self.root)
            raise
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
        """Removes the temporary files killed writes left, wherever tfkd writes them (the
        workdir's top and, at any depth, its folders: caches in folders of their own
        included), and nothing else: only names of tfkd's own pattern (TEMPORARY)."""
        # Safe under the lock: no other run of this workdir is writing.
        removed = 0
        for entry in _own_entries(own):
            if TEMPORARY.match(entry.name) and entry.is_file(follow_symlinks=False):
                os.remove(entry.path)
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
    # Written in place, so never through a link (see open_in_place).
    handle = os.fdopen(open_in_place(path, os.O_RDWR | os.O_CREAT), "r+", encoding="utf-8")
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
