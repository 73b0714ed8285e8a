"""One worker of a multi-worker test: distills on digits, writes its history as JSON.

Run with TF_CONFIG set for a worker of a cluster, or without it for the
single-process reference. argv: output path.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkd  # noqa: E402
from tfkd.data import load_dataset  # noqa: E402


def main(out_path):
    data = load_dataset("digits")
    x, y = data.x_train[:256], data.y_train[:256]
    if os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        # CNN teachers: their BatchNorm is folded (tfkd.folding), a copy made under the
        # strategy from the first batch, as every worker must.
        teachers = [tfkd.build_model("cnn", data.input_shape, 10, seed=s, model_name=f"t{s}")
                    for s in (1, 2)]
        student = tfkd.build_model("mlp", data.input_shape, 10, seed=7, model_name="student")
        distiller = tfkd.Distiller(student=student, teachers=teachers, alpha=0.5, temperature=2.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    val = tf.data.Dataset.from_tensor_slices((data.x_val[:128], data.y_val[:128])).batch(64)
    history = distiller.fit(train, validation_data=val, epochs=3, verbose=0, shuffle=False)
    result = {"history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
              "weights_sum": float(sum(np.abs(w).sum() for w in student.get_weights())),
              "replicas": strategy.num_replicas_in_sync,
              "folded_teachers": len(distiller._inference.folds)}
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
