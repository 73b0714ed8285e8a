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
split never reuses a stale cache.
"""

import hashlib
import os

import numpy as np
from absl import logging

from tfkd.workdir import atomic_path


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


def predict_logits(teachers, x, batch_size=512):
    return np.asarray(teachers.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def cached_logits(teachers, x, path, batch_size=512):
    """Teacher logits for `x`, read from `path` when present, else computed and stored there.

    Returns a read-only memory map of float16 logits.
    """
    if os.path.exists(path):
        try:
            logits = np.load(path, mmap_mode="r")
            if logits.shape[0] == len(x):
                return logits
        except (OSError, ValueError) as e:  # a damaged file: computed again below
            logging.warning("teacher cache %s is unreadable (%s); computing it again", path, e)
    logits = predict_logits(teachers, x, batch_size)
    with atomic_path(path) as tmp:
        np.save(tmp, logits.astype(np.float16))
    return np.load(path, mmap_mode="r")
