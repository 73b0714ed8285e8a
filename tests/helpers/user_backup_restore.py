"""A user's training script: distil a saved teacher with keras.callbacks.BackupAndRestore.

    python user_backup_restore.py TEACHER.keras BACKUP_DIR RECORD.json STOP_AFTER_EPOCH

STOP_AFTER_EPOCH > 0 kills the process (os._exit, no clean-up, like a pre-emption) at
the end of that epoch, after the backup is written; 0 trains to the end. RECORD.json gets
the epochs this process ran and, at the start of its first epoch, the optimizer's step
count and a checksum of the student's weights.
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import tfkd

EPOCHS = 4


class Record(keras.callbacks.Callback):
    def __init__(self, path, stop_after):
        super().__init__()
        self.path, self.stop_after = path, stop_after
        self.record = {"epochs": []}

    def on_epoch_begin(self, epoch, logs=None):
        if not self.record["epochs"]:
            self.record["first_step"] = int(self.model.optimizer.iterations.numpy())
            self.record["first_weights"] = float(sum(
                np.abs(w).sum() for w in self.model.student.get_weights()))

    def on_epoch_end(self, epoch, logs=None):
        self.record["epochs"].append(epoch)
        self.record["last_weights"] = float(sum(
            np.abs(w).sum() for w in self.model.student.get_weights()))
        with open(self.path, "w") as f:
            json.dump(self.record, f)
        if epoch + 1 == self.stop_after:
            os._exit(3)


def main(teacher_path, backup_dir, record_path, stop_after):
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None][:512]
    y = digits.target.astype("int32")[:512]
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)

    keras.utils.set_random_seed(0)
    teacher = keras.saving.load_model(teacher_path)
    student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)])
    distiller = tfkd.Distiller(student=student, teachers=[teacher], alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    # BackupAndRestore first: its backup of an epoch is on disk before Record may stop.
    history = distiller.fit(train, epochs=EPOCHS, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup_dir), Record(record_path, stop_after)])
    with open(record_path) as f:
        record = json.load(f)
    record["history_length"] = len(history.history["loss"])
    with open(record_path, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
