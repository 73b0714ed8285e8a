"""One distillation epoch of each per-example method on one device and on MirroredStrategy
over 3 logical CPUs, with
global batches that do not split evenly over 3 replicas; writes the largest weight
difference and both histories as JSON. argv: output path.

A separate process: the CPU can be split into logical devices only before TensorFlow
starts, and the test session has already split it in two.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(3)])

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfkd  # noqa: E402
from tfkd.data import load_dataset  # noqa: E402


def one_epoch(strategy, data, batch_size, method):
    with strategy.scope():
        # Two teachers: the multi-teacher methods weigh each one's logits.
        teachers = [tfkd.build_model("mlp", data.input_shape, 10, seed=s) for s in (1, 2)]
        student = tfkd.build_model("mlp", data.input_shape, 10, seed=5)
        initial = [w.numpy() for w in student.weights]
        distiller = tfkd.Distiller(student=student, teachers=teachers, alpha=0.5,
                                   temperature=2.0, seed=0, distillation_loss=method)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    # 64 examples: batches of 63 end with one example, which reaches one replica of 3.
    ds = tf.data.Dataset.from_tensor_slices((data.x_train[:64], data.y_train[:64]))
    history = distiller.fit(ds.batch(batch_size), epochs=1, verbose=0).history
    return initial, [w.numpy() for w in student.weights], history


def main(out_path):
    data = load_dataset("digits")
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    three = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1", "/cpu:2"])
    results = {"replicas": three.num_replicas_in_sync}
    # Every method whose loss is per example (tfkd.terms), on each kind of uneven split.
    methods = [m for m in tfkd.terms.NAMES if not tfkd.terms.get(m).relational]
    for method, batch_size in [(m, b) for m in methods for b in (64, 63, 32)]:
        initial, w1, h1 = one_epoch(one, data, batch_size, method)
        _, w3, h3 = one_epoch(three, data, batch_size, method)
        results[f"{method}/{batch_size}"] = {
            "moved": float(max(np.abs(a - b).max() for a, b in zip(w1, initial))),
            "difference": float(max(np.abs(a - b).max() for a, b in zip(w1, w3))),
            "loss_one": h1["loss"], "loss_three": h3["loss"]}
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
