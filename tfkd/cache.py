"""Teacher-output cache: a teacher's logits on a split, computed once, kept with the workdir.

When the training input is deterministic (no random augmentation), a teacher's
outputs on the training set are the same at every epoch, for every student it
teaches (distillation, every self-distillation generation, every tuning trial).
Computing them once and feeding them to the Distiller removes the teacher
forward pass from training altogether. Under random augmentation every batch is
new, so teachers must run online.

Logits are stored as float16 `.npy` files (half the bytes of float32, ample
precision for a softmax at any sensible temperature) and opened memory-mapped,
so a cache never has to fit in memory at once. The file name carries a
fingerprint of the teacher model files and the data, so a changed teacher or
split never reuses a stale cache, and a checksum of the logits, checked on read.
"""

import hashlib
import os

import numpy as np
from absl import logging

from tfkd.workdir import atomic_file


def fingerprint(teacher_paths, data_key):
    """A short hash of the teacher files' contents and of what data they ran on.

    Contents, not paths or times: a workdir copied elsewhere keeps its caches, a
    retrained teacher never reuses its predecessor's.
    """
    digest = hashlib.sha1(repr(data_key).encode())
    for path in teacher_paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def predict_logits(teachers, x, batch_size=512, fold=False, members=False):
    """`teachers`' outputs on `x`, an array (in batches of `batch_size`) or a batched
    tf.data.Dataset; with `fold`, from a copy of the teachers with BatchNorm folded
    (`ensemble.for_inference`), worth its set-up when there are many examples. With
    `members`, each member's logits, (n, members, classes) (`ensemble.MemberLogits`; one
    model is one member), instead of the ensemble's (n, classes)."""
    if fold or members:
        # Here, not at the top: tfkd.modes.store reads workdirs through this module, and
        # the CLI reads them (remembered settings) before it imports Keras.
        from tfkd import ensemble as ensemble_lib
    if fold:
        sample = (next(iter(x.take(1))) if hasattr(x, "element_spec") else x)[:8]
        teachers, _ = ensemble_lib.for_inference(teachers, sample)
    if members:
        teachers = ensemble_lib.MemberLogits(teachers)
    if hasattr(x, "element_spec"):
        return np.asarray(teachers.predict(x, verbose=0), dtype=np.float32)
    return np.asarray(teachers.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def array_checksum(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def cached_logits(teachers, x, path, batch_size=512, rows=None, members=False):
    """Teacher logits for `x`, read from the cache at `path` when it is intact, else computed
    and stored there. `x`: an array, or a batched tf.data.Dataset of `rows` examples;
    `members`: each member's logits (see `predict_logits`), which `path` must name apart.

    The file stored is `<path minus .npy>.<checksum of its logits>.npy`: one file, written
    atomically, whose contents are checked on every read. A damaged cache (unreadable, the
    wrong size, or finite garbage under a valid header) is reported and computed again.
    Returns a read-only memory map of float16 logits.
    """
    found = read_cached(path, len(x) if rows is None else rows)
    if found is not None:
        return found
    return store_logits(path, predict_logits(teachers, x, batch_size, fold=True,
                                             members=members))


def _stem(path):
    path = os.fspath(path)
    return path[:-len(".npy")] if path.endswith(".npy") else path


def read_cached(path, rows):
    """The intact cache of `rows` rows stored for `path` (a read-only float16 memory map), or
    None; a damaged one is reported and removed."""
    stem = _stem(path)
    directory, prefix = os.path.split(stem)
    found = sorted(f for f in (os.listdir(directory) if os.path.isdir(directory) else ())
                   if f.startswith(prefix + ".") and f.endswith(".npy") and f.count(".") == (
                       prefix.count(".") + 2))
    for name in found:
        candidate = os.path.join(directory, name)
        try:
            logits = np.load(candidate, mmap_mode="r")
            problem = (f"it has {logits.shape[0]} rows for {rows} examples"
                       if logits.shape[0] != rows else
                       "its contents do not match their checksum"
                       if array_checksum(logits) != name[len(prefix) + 1:-len(".npy")] else None)
        except (OSError, ValueError) as e:
            problem = f"it is unreadable ({e})"
        if problem is None:
            return logits
        logging.warning("teacher cache %s is damaged: %s; computing it again", candidate, problem)
        os.remove(candidate)
    return None


def store_logits(path, logits):
    """Stores `logits` as float16 for `path`, atomically, named by their checksum; returns
    the read-only memory map of the stored file."""
    logits = np.asarray(logits).astype(np.float16)
    final = f"{_stem(path)}.{array_checksum(logits)}.npy"
    with atomic_file(final, size=logits.nbytes + 128) as f:
        np.save(f, logits)
    return np.load(final, mmap_mode="r")


class TopK:
    """A cache of each row's k largest logits, read as full rows of `num_classes` logits.

    Stored as one float16 array of shape (n, ..., 2k + 1): for each row of logits (one per
    example, or one per example and member), the k largest logits, their class indices
    (exact in float16 up to 2048 classes) and the mean of the other logits, which is what
    every other class reads back. Exact for k >= num_classes - 1; otherwise the other
    classes' share of a softmax is underestimated (their mean's exponential is at most the
    mean of their exponentials).
    """

    def __init__(self, packed, num_classes):
        self.packed, self.num_classes = packed, num_classes
        self.k = (packed.shape[-1] - 1) // 2
        self.shape = (*packed.shape[:-1], num_classes)

    @staticmethod
    def pack(logits, k):
        """(..., classes) logits -> (..., 2k + 1): each row packed on its own."""
        logits = np.asarray(logits, np.float32)
        classes = logits.shape[-1]
        if classes > 2048:
            raise ValueError(f"top-k caches hold at most 2048 classes, got {classes}")
        top = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
        values = np.take_along_axis(logits, top, axis=-1)
        rest = ((logits.sum(axis=-1) - values.sum(axis=-1)) / max(classes - k, 1))[..., None]
        return np.concatenate([values, top.astype(np.float32), rest], axis=-1)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        packed = np.asarray(self.packed[rows], np.float32)
        full = np.repeat(packed[..., -1:], self.num_classes, axis=-1)
        indices = packed[..., self.k:2 * self.k].astype(np.int64)
        np.put_along_axis(full, indices, packed[..., :self.k], axis=-1)
        return full
