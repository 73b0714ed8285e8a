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
import math
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time

from tfkd.config import FIELDS, ConfigError

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


# --- reading: every file of a workdir is validated, not trusted --------------------------------

class DamagedFile(ConfigError):
    """A workdir file that is not what tfkd wrote there: not a regular file, unreadable, not
    JSON, or JSON of another shape than its schema. `path` and `problem` (the message's
    phrase after the path); callers decide whether to redo the file or refuse with it."""

    def __init__(self, path, problem, advice="remove it, or restore it from a backup"):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path} {problem}; {advice}")


# A record is small (a result row and a history); a bigger one is not tfkd's.
MAX_RECORD_BYTES = 64 << 20


def kind_of(mode):
    """What a file of `mode` (st_mode) is, as a message says it."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "a regular file"


def read_record(path, schema):
    """The JSON value of the record at `path`, checked against `schema`; the one reader of a
    workdir's JSON files: a record is read by name from a folder a user can edit, so it may
    be anything. (By hand: jsonschema is no dependency of tfkd, the schemas are a few
    lines, and the messages name the value as the user sees it in the file.)

    A schema is a type (`str`, `int`, `float`, `bool`, `dict`, `list`, `type(None)`; bool is
    never taken for a number, an int is taken for a float), a tuple of schemas (any of
    them), a dict {key: schema} (a JSON object with those keys, more allowed; a key ending
    in "?" may be missing), a one-element list [schema] (a JSON array of such items), or a
    function (value) -> None or the phrase of what belongs there.

    Raises FileNotFoundError (or NotADirectoryError) when there is no such file,
    UnsafeWorkdir when it is a symbolic link, else DamagedFile naming the path and the first
    problem: not a regular file (never opened, so a FIFO never blocks), unreadable, empty,
    too large, not UTF-8 JSON, or not of the schema's shape.
    """
    path = os.fspath(path)
    info = os.lstat(path)  # FileNotFoundError: no record
    if stat.S_ISLNK(info.st_mode):  # as every link in a workdir is (see check_no_links)
        raise _unsafe(path, _link_problem(path))
    if not stat.S_ISREG(info.st_mode):
        raise DamagedFile(path, _kind_problem(info.st_mode, FILE), MOVE_IT)
    if info.st_size > MAX_RECORD_BYTES:
        raise DamagedFile(path, f"is damaged: {_size(info.st_size)}, more than a record of "
                          f"tfkd's ({_size(MAX_RECORD_BYTES)} at most)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_RECORD_BYTES + 1)
    except OSError as e:
        raise DamagedFile(path, f"cannot be read ({e.strerror or e})",
                          "make it readable by this user (chmod u+r), or remove it") from None
    if not data.strip():
        raise DamagedFile(path, "is damaged: it is empty")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DamagedFile(path, f"is damaged: not UTF-8 text (byte {e.start})") from None
    except ValueError as e:  # json.JSONDecodeError, or a number too long to convert
        raise DamagedFile(path, f"is damaged: not JSON ({str(e).splitlines()[0][:120]})") from None
    problem = schema_problem(value, schema)
    if problem:
        raise DamagedFile(path, f"is damaged: {problem}")
    return value


_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false",
          dict: "an object", list: "a list", type(None): "null"}


def _expected(schema):
    if isinstance(schema, dict):
        return "an object"
    if isinstance(schema, list):
        return "a list"
    if isinstance(schema, tuple):
        return " or ".join(dict.fromkeys(_expected(s) for s in schema))
    return _NAMES.get(schema, "another value")


def _shown(value):
    text = json.dumps(value) if not isinstance(value, (dict, list)) else (
        "an object" if isinstance(value, dict) else "a list")
    return text if len(text) <= 40 else text[:37] + "..."


def _fits(value, schema):
    if isinstance(schema, tuple):
        return any(_fits(value, s) for s in schema)
    if isinstance(schema, dict):
        return isinstance(value, dict)
    if isinstance(schema, list):
        return isinstance(value, list)
    if schema is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if schema is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(schema, type):
        return isinstance(value, schema)
    return schema(value) is None


def schema_problem(value, schema, where=""):
    """The first way `value` does not fit `schema` (see `read_record`), or None."""
    place = where or "the file"
    if isinstance(schema, tuple):
        # The one alternative of the value's own kind says best what is wrong inside it.
        inner = [s for s in schema if isinstance(s, (dict, list)) and _fits(value, s)]
        if inner:
            return schema_problem(value, inner[0], where)
        return None if _fits(value, schema) else (
            f"{place} holds {_shown(value)}, where {_expected(schema)} belongs")
    if not isinstance(schema, (type, dict, list)):
        why = schema(value)
        return f"{place} holds {_shown(value)}, where {why} belongs" if why else None
    if not _fits(value, schema):
        return f"{place} holds {_shown(value)}, where {_expected(schema)} belongs"
    if isinstance(schema, dict):
        for key, inner in schema.items():
            name = key.rstrip("?")
            inside = f"{where}.{name}" if where else name
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{inside} is missing"
            problem = schema_problem(value[name], inner, inside)
            if problem:
                return problem
    if isinstance(schema, list):
        for i, item in enumerate(value):
            problem = schema_problem(item, schema[0], f"{where}[{i}]")
            if problem:
                return problem
    return None


def _text(value):
    return None if isinstance(value, str) and value else "non-empty text"


def _fraction(value):
    if value is None or (_fits(value, float) and (not math.isfinite(value) or 0 <= value <= 1)):
        return None  # None and NaN: not measured
    return "a fraction in [0, 1] or null"


NUMBER = (float, type(None))
WHOLE = (int, type(None))
# A result row, as the modes write it and tfkd.report reads it.
ROW = {"name": _text, "kind": _text, "val_accuracy?": _fraction, "test_accuracy?": _fraction,
       "test_nll?": NUMBER, "test_ece?": NUMBER, "alpha?": NUMBER, "seed?": WHOLE,
       "generation?": WHOLE, "teacher?": (str, type(None)), "train_examples?": WHOLE,
       "val_examples?": WHOLE, "test_examples?": WHOLE}


def settings_schema(names):
    """The JSON shape of recorded settings `names`: each of the type tfkd/config.py declares
    (a list of its item's type for a list setting; text or null for one without a default).
    A setting it does not know is left alone (a record of another tfkd version)."""
    kinds = {int: int, float: float, str: str}

    def shape(field):
        if field.metadata["item"] is not None:
            return [kinds[field.metadata["item"]]]
        if isinstance(field.default, bool):
            return bool
        return kinds.get(type(field.default), (str, type(None)))

    return {f"{name}?": shape(FIELDS[name]) for name in names}


# metrics/<name>.json: what tfkd.modes.store and the report read of it. Its settings are
# the model's identity (tfkd.modes.store.model_identity): its seed, teachers (their content
# hash, or a name), alpha, and settings of the schema.
METRICS = {"row": ROW, "role?": str, "sha?": str, "teacher_files?": dict, "history?": dict,
           "members?": [str], "file?": str,
           "settings?": {"seed?": int, "teachers?": str, "alpha?": float, "joint_k?": int,
                         **settings_schema(FIELDS)}}
# The names of the records tfkd writes in metrics/ (tfkd.modes: members, teachers from
# --teacher_dir, ensembles, distilled students and their architecture's variants, self-
# distillation steps and their alpha = 0 probes, joint, analyze's independent students;
# tests/test_links.py learns what every mode writes). A damaged record of one of these
# names is tfkd's and is redone; one of any other name is a user's, left alone.
RECORD_NAME = re.compile(r"^(member_\d+|teacher_\d+|ensemble|distilled(_\w+)?|joint|"
                         r"independent(_\d+)?|self_distilled_\d+_g\d+(_alpha0)?|"
                         r"self_distilled_ensemble)$")

# What runs write in a workdir, by path relative to it ("/"-separated): what kind of entry
# each is. Checked before a run starts (`Workdir.check`); tests/test_links.py learns what
# every mode writes and holds this complete. READ: a file tfkd reads back.
DIR, FILE, READ = "folder", "file", "read"
LAYOUT = [(re.compile(f"^({pattern})$"), kind) for pattern, kind in [
    (r"config\.json", READ),
    (r"results\.(md|csv|json|png)|analysis\.(json|md|png)|gradcam\.png|"
     r"self_distill_alphas\.json|\.lock", FILE),
    ("|".join(FOLDERS), DIR),
    (r"models/[^/]+\.keras|metrics/[^/]+\.json|state/[^/]+\.npz|cache/[^/]+\.npy", READ),
    (r"cache/[^/]+-views-[^/]+", DIR),
    (r"cache/[^/]+-views-[^/]+/epoch_\d+(\.[0-9a-f]+)?\.npy", READ),
    (r"logs/[^/]+|logs/[^/]+/(train|validation)", DIR),
    (r"logs/[^/]+/(train|validation)/events\.out\.tfevents\.[^/]+", FILE),
    (r"tune/(best\.flags|trials\.(md|csv|png))", FILE),
    # keras-tuner's project: its state, and a folder per trial (what it reads back).
    (r"tune/search-[^/]+|tune/search-[^/]+/trial_[^/]+", DIR),
    (r"tune/search-[^/]+/[^/]+\.json|tune/search-[^/]+/trial_[^/]+/[^/]+", READ),
]]


def layout_kind(relative):
    """The kind of entry (DIR, FILE, READ) runs write at `relative`, or None."""
    return next((kind for pattern, kind in LAYOUT if pattern.match(relative)), None)


class UnusableWorkdir(ConfigError):
    """An entry of the workdir is not of the kind tfkd writes there, or this user cannot
    read or write it: found before anything trains; the message names it and what to do."""


def _can(path, mode):
    # The process's effective ids decide what it may do (os.access uses the real ones).
    effective = os.access in os.supports_effective_ids
    return os.access(path, mode, effective_ids=effective)


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
            wrong = [_wrong_kind(os.path.join(own, folder), DIR) for folder in FOLDERS
                     if os.path.lexists(os.path.join(own, folder))]
            if any(wrong):  # found before the folders are made (see `check` for the rest)
                raise UnusableWorkdir(next(filter(None, wrong)))
            for sub in SUBDIRS:
                os.makedirs(os.path.join(own, sub), exist_ok=True)
            for folder in ("", *FOLDERS):
                directory = os.path.join(own, folder)
                if os.path.isdir(directory):
                    try:
                        probe, path = _temporary(directory, "probe")
                    except PermissionError:
                        raise UnusableWorkdir(_unwritable(directory)) from None
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
        """`name`'s record, validated (METRICS, and a row of its own name); raises
        FileNotFoundError when there is none, DamagedFile when it is not a record."""
        path = self.metrics_path(name)
        record = read_record(path, METRICS)
        if record["row"]["name"] != name:
            raise DamagedFile(path, f"is damaged: it holds the row of "
                              f"{record['row']['name']!r}, not of {name!r}")
        return record

    def all_metrics(self):
        """Every valid metrics record in the workdir, sorted by name; others (reported by
        `check`) are left out."""
        directory = self.path("metrics")
        if not os.path.isdir(directory):
            return []
        records = []
        for f in sorted(os.listdir(directory)):
            if f.endswith(".json") and not f.startswith("."):
                try:
                    records.append(self.read_metrics(f[:-len(".json")]))
                except (OSError, DamagedFile) as e:
                    if os.path.join(directory, f) not in self._reported:
                        _log_warning("tfkd: ignoring %s: %s", os.path.join(directory, f), e)
        return records

    _reported = frozenset()

    def check(self):
        """The pre-flight check of a run, after `create` and before anything trains: every
        entry the run may read or write (LAYOUT) is of its kind, readable and writable by
        this user, else UnusableWorkdir naming it and what to do (nothing was changed); then
        each metrics record is validated: a damaged one of tfkd's names (RECORD_NAME) is
        removed and redone by the run that trains or evaluates its model, one of another
        name (a user's file) is left alone and out of the results. One line each."""
        own = self.scratch or self.root
        problems = [] if _can(own, os.W_OK | os.X_OK) else [_unwritable(own)]
        records = []
        for entry in sorted(_own_entries(own), key=lambda e: e.path):
            relative = os.path.relpath(entry.path, own).replace(os.sep, "/")
            kind = layout_kind(relative)
            if kind is None:
                continue
            wrong = _wrong_kind(entry.path, kind)
            if wrong:
                problems.append(wrong)
            elif kind == DIR and not _can(entry.path, os.W_OK | os.X_OK):
                problems.append(_unwritable(entry.path))
            elif kind == READ and not _can(entry.path, os.R_OK):
                problems.append(f"{entry.path} cannot be read by this user, and tfkd reads "
                                f"it; make it readable (chmod u+r {entry.path}), or remove it")
            elif re.match(r"^metrics/[^/]+\.json$", relative):
                records.append(entry.path)
            elif re.match(r"^tune/search-[^/]+/(.+/)?[^/]+\.json$", relative):
                problems += _search_problem(entry.path, own)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UnusableWorkdir(problems[0] + more)
        if not self.writable:  # a cluster's other worker: the chief's files are the chief's
            return self
        reported = set()
        for path in records:
            name = os.path.basename(path)[:-len(".json")]
            try:
                self.read_metrics(name)
                continue
            except DamagedFile as e:
                problem = e.problem
            if RECORD_NAME.match(name):
                os.remove(path)
                _log_warning("tfkd: %s %s: removed; the run that trains or evaluates %s "
                             "writes it again", path, problem, name)
            else:
                reported.add(path)
                _log_warning("tfkd: ignoring %s: not a record of tfkd's (%s); left as it "
                             "is, out of the results", path, problem.removeprefix("is damaged: "))
        self._reported = frozenset(reported)
        return self


def _wrong_kind(path, kind):
    """The refusal of an entry at `path` that is not of `kind` (DIR, FILE, READ), or None."""
    mode = os.lstat(path).st_mode
    if (stat.S_ISDIR(mode) if kind == DIR else stat.S_ISREG(mode)):
        return None
    return f"{path} {_kind_problem(mode, kind)}; {MOVE_IT}"


# What to do with an entry of the wrong kind: it may be the user's, so tfkd never removes it.
MOVE_IT = "move it out of the workdir (or remove it), or use another --workdir"


def _kind_problem(mode, kind):
    wanted = "folder" if kind == DIR else "file"
    return f"is {kind_of(mode)}, where tfkd keeps a {wanted} of its own"


def _search_problem(path, own):
    """[the refusal of keras-tuner's JSON file `path` of a search in tune/], if it is not
    JSON (keras-tuner reads it back when the search continues, and fails with a traceback);
    its shapes are keras-tuner's own (build_config.json may hold null), so they are not
    checked, and the project is not redone: its finished trials are the user's work."""
    try:
        read_record(path, lambda value: None)
        return []
    except DamagedFile as e:
        relative = os.path.relpath(path, os.path.join(own, "tune"))
        project = os.path.join(own, "tune", relative.split(os.sep)[0])
        return [f"{e.path} {e.problem}; it is keras-tuner's record of a search: remove "
                f"{project} to start that search over, or use another --workdir"]


def _unwritable(path):
    return (f"{path} is a folder this user cannot write in, and tfkd writes there; make it "
            f"writable (chmod -R u+w {path}), or use another --workdir")


def _log_warning(message, *args):
    from absl import logging

    logging.warning(message, *args)


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
