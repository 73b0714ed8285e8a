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

Every file is written atomically (temporary file in the same directory, flushed to disk,
then `os.replace`), so a killed run or a lost machine never leaves a half-written artifact
behind, and a model whose file exists is finished.
"""

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; moves it onto `path` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    # Keep the extension: keras.Model.save insists on ".keras".
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        # On disk before the rename: after a crash the new name never points at a file
        # whose blocks were not written yet.
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    # newline="": a CSV's line endings stay as written on every platform.
    with atomic_path(path) as tmp:
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
        self.trained = set()  # model files (re)written by this process

    @property
    def writable(self):
        """Whether this process writes the workdir itself (logs, reports, config)."""
        return self.scratch is None

    def create(self):
        for top in filter(None, (self.root, self.scratch)):
            if os.path.exists(top) and not os.path.isdir(top):
                raise NotADirectoryError(f"workdir {top} exists and is not a directory")
        for sub in ("models", "metrics", "logs", "cache", "state"):
            os.makedirs(os.path.join(self.scratch or self.root, sub), exist_ok=True)
        # Found out now rather than after hours of training: can this process write here?
        probe = tempfile.NamedTemporaryFile(dir=self.scratch or self.root, prefix=".probe")
        probe.close()
        return self

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
        with atomic_path(self._write("models", f"{name}.keras")) as tmp:
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
