"""Resuming an interrupted fit exactly, keeping the best epoch, and stopping on divergence.

Keras's `BackupAndRestore` is the model for `TrainingState`, but it cannot serve a
Distiller as it is: it calls `model.save_weights()`, which writes the *whole* Distiller,
frozen teachers included (gigabytes per epoch for ten WRN-28-10 teachers, which are
already on disk), and it writes weights and epoch counter as two files, non-atomically,
so a kill between them resumes the wrong epoch. `TrainingState` writes, in one atomic
`.npz` per epoch, exactly what the next epoch depends on: the student's variables (weights,
BatchNorm statistics, seed generators), the distillation terms' own (an adapter, a
learned temperature), the optimizer's (slots and step
count, hence the learning-rate schedule), the history so far and, for
`--checkpoint=best_val`, the best epoch's student weights.

With the epoch-indexed training data of `make_tf_dataset(epochs=...)`, a fit resumed at
epoch k sees the batches an uninterrupted fit sees, so it ends with the same weights
(bit for bit under `--deterministic`).
"""

import hashlib
import json
import math
import os

import keras
import numpy as np
from absl import logging

from tfkd import runtime
from tfkd.workdir import atomic_file


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the model, the epoch and causes."""


def _student_variables(distiller):
    """What trains: the student's variables and those its distillation terms own."""
    variables = list(distiller.student.variables)
    for term in getattr(distiller, "terms", ()):
        variables += term.owned_variables
    return variables


def checksum(arrays):
    """SHA-256 of named arrays' names, dtypes, shapes and bytes: a state whose contents
    changed after it was written (a bad block, a stray write) is never resumed."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


running = None  # the TrainingState of the fit in progress (what an interrupted run names)


class TrainingState(keras.callbacks.Callback):
    """Saves the training state of a Distiller's student after every epoch; `restore()` loads it.

    Args:
      path: the `.npz` file (written atomically; removed by `discard()` once the model is
        finished).
      distiller: the compiled Distiller whose student trains.
      keep_best: a logged metric to minimise (e.g. "val_loss"): the student weights of its
        best epoch are kept and `finish()` puts them back. None keeps the last epoch's.
    """

    def __init__(self, path, distiller, keep_best=None):
        super().__init__()
        self.path = path
        self.total_epochs = None
        self.distiller = distiller
        self.keep_best = keep_best
        self.completed_epochs = 0
        self.history = {}
        self.best_value = math.inf
        self.best_weights = None

    # -- restoring ----------------------------------------------------------

    def restore(self):
        """Loads a saved state if there is a usable one; returns the epoch to resume at (0: none).

        A corrupt or mismatched file is reported and ignored: training starts over.
        """
        if not os.path.exists(self.path):
            return 0
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                arrays = {k: saved[k] for k in saved.files}
            meta = json.loads(str(arrays.pop("meta")))
            if meta.get("checksum") != checksum(arrays):
                raise ValueError("its contents do not match their checksum")
            self._assign(arrays, meta)
        except Exception as e:  # noqa: BLE001 -- any unreadable state means: start over
            logging.warning("%s: ignoring unusable training state %s (%s: %s); training from "
                            "the start", self.distiller.student.name, self.path,
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.completed_epochs, self.history = 0, {}
            self.best_value, self.best_weights = math.inf, None
            return 0
        return self.completed_epochs

    def _assign(self, arrays, meta):
        variables = _student_variables(self.distiller)
        optimizer = self.distiller.optimizer
        if not optimizer.built:
            optimizer.build(self.distiller.trainable_variables)
        groups = {"v": variables, "o": list(optimizer.variables)}
        for prefix, targets in groups.items():
            values = [arrays[f"{prefix}{i}"] for i in range(meta["counts"][prefix])]
            if len(values) != len(targets) or any(
                    tuple(v.shape) != tuple(t.shape) for v, t in zip(values, targets)):
                raise ValueError(f"saved {prefix} variables do not match the model")
        for prefix, targets in groups.items():
            for i, target in enumerate(targets):
                target.assign(arrays[f"{prefix}{i}"])
        self.completed_epochs = int(meta["epoch"])
        self.history = meta["history"]
        self.best_value = meta["best_value"] if meta["best_value"] is not None else math.inf
        if meta["counts"].get("b"):
            self.best_weights = [arrays[f"b{i}"] for i in range(meta["counts"]["b"])]

    # -- saving -------------------------------------------------------------

    def on_train_begin(self, logs=None):
        global running
        running = self
        self.total_epochs = self.params.get("epochs")

    def on_train_end(self, logs=None):
        global running
        running = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(np.asarray(value).reshape(-1)[0]))
        if self.keep_best is not None and self.keep_best in logs:
            value = float(np.asarray(logs[self.keep_best]).reshape(-1)[0])
            if value < self.best_value:
                self.best_value = value
                self.best_weights = [np.array(w) for w in self.distiller.student.get_weights()]
        self.completed_epochs = epoch + 1
        self._save()
        runtime.check_stop()  # a signal whose raise was lost stops here, its epoch saved

    def _save(self):
        variables = _student_variables(self.distiller)
        optimizer_variables = list(self.distiller.optimizer.variables)
        arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(variables)}
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer_variables)})
        best = self.best_weights or []
        arrays.update({f"b{i}": w for i, w in enumerate(best)})
        meta = {"epoch": self.completed_epochs, "history": self.history,
                "best_value": None if math.isinf(self.best_value) else self.best_value,
                "counts": {"v": len(variables), "o": len(optimizer_variables), "b": len(best)},
                "checksum": checksum(arrays)}
        arrays["meta"] = np.array(json.dumps(meta))
        with atomic_file(self.path, size=sum(a.nbytes for a in arrays.values())) as f:
            np.savez(f, **arrays)

    # -- the end ------------------------------------------------------------

    def finish(self):
        """Puts the best epoch's weights back (with keep_best); returns the whole history."""
        if self.keep_best is not None and self.best_weights is not None:
            self.distiller.student.set_weights(self.best_weights)
        return self.history

    def discard(self):
        if os.path.exists(self.path):
            os.remove(self.path)


class StopOnDivergence(keras.callbacks.Callback):
    """Raises TrainingDiverged when a batch's loss is NaN or infinite.

    Keras's TerminateOnNaN only stops `fit`, which would then save a broken model as if it
    had finished; this stops the whole run with a message that says what to try.
    """

    def __init__(self, model_name, settings_hint=""):
        super().__init__()
        self.model_name = model_name
        self.settings_hint = settings_hint
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(np.asarray(loss).reshape(-1)[0])
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"{self.model_name}: the training loss became {value} at epoch {self.epoch + 1}, "
                f"step {batch + 1}; nothing was saved for it. Likely causes: a learning rate "
                f"too high for this model{self.settings_hint}, float16 overflow (try "
                "--precision=float32 or mixed_bfloat16), or non-finite values in the data")
