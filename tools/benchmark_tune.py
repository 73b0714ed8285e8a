"""The cost of one `--mode=tune` trial, as a ratio to a plain student fit of the same epochs.

    python tools/benchmark_tune.py                 # digits, cnn, 5 teachers, 30 epochs, 5 repeats
    python tools/benchmark_tune.py --epochs=3      # short trials: fixed costs weigh more

In one process, interleaved (plain, trial, plain, trial, ...) so that machine noise hits
both alike, each repeat times from a fresh model to the end of its training:

  plain: build the student, compile `keras.Model` with cross-entropy, `fit` for --epochs
         on the same tf.data pipeline shape (`make_tf_dataset`, batch 64, full shuffle);
  trial: one keras-tuner RandomSearch trial of tfkd's tune mode (`DistillHyperModel`: the
         same student inside a Distiller, the ensemble's cached logits in every batch,
         keras-tuner's per-epoch best-weights checkpoint and trial bookkeeping), in a fresh
         tuner directory.

The teachers' logits are computed once before timing, as the tune mode does before its
first trial. Reports the median of each and the ratio of the medians (target <= 1.15).
"""

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

flags.DEFINE_integer("repeats", 5, "Timed repeats of each.")
flags.DEFINE_integer("epochs", 30, "Epochs per fit / trial (30: the tune default).")
flags.DEFINE_integer("num_teachers", 5, "Members of the teacher ensemble.")
FLAGS = flags.FLAGS


def main(argv):
    del argv

    from tfkd import cache
    from tfkd.config import Config
    from tfkd.data import make_tf_dataset
    from tfkd.ensemble import Ensemble
    from tfkd.modes import fit, inputs
    from tfkd.modes.tune import DistillHyperModel, make_tuner

    config = Config(mode="tune", epochs=FLAGS.epochs, num_models=FLAGS.num_teachers,
                    max_trials=1)
    splits = inputs.load_splits(config)
    print("command: python " + " ".join(sys.argv))
    teachers = []
    for seed in range(FLAGS.num_teachers):
        keras.utils.set_random_seed(seed)
        member = fit.build_student(config, splits, seed, f"member_{seed}")
        member.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        member.fit(splits.x_train, splits.y_train, epochs=3, batch_size=64, verbose=0)
        teachers.append(member)
    ensemble = Ensemble(teachers, name="teachers")
    train_logits = cache.predict_logits(ensemble, splits.x_train).astype("float16")
    val_logits = cache.predict_logits(ensemble, splits.x_val).astype("float16")
    seed = config.seed + config.num_models

    def plain():
        keras.utils.set_random_seed(seed)
        student = fit.build_student(config, splits, seed, "student")
        student.compile(keras.optimizers.Adam(config.learning_rate),
                        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
        data = make_tf_dataset(splits.x_train, splits.y_train, batch_size=config.batch_size,
                               shuffle=True, seed=seed)
        val = make_tf_dataset(splits.x_val, splits.y_val, batch_size=512)
        student.fit(data, validation_data=val, epochs=config.epochs, verbose=0)

    def trial():
        plan = fit.TeacherPlan(train_logits=train_logits, val_logits=val_logits,
                               distilled=True)
        hypermodel = DistillHyperModel(config, splits, seed=seed, plan=plan)
        with tempfile.TemporaryDirectory() as directory:
            tuner = make_tuner(config, hypermodel, directory, "bench")
            tuner.search(verbose=0)

    timings = {"plain": [], "trial": []}
    for name, run in (("plain", plain), ("trial", trial)):
        run()  # warm-up: the first build of each path pays one-off costs
    for _ in range(FLAGS.repeats):
        for name, run in (("plain", plain), ("trial", trial)):
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    plain_s, trial_s = (statistics.median(timings[k]) for k in ("plain", "trial"))
    print(f"\n{FLAGS.repeats} repeats of {config.epochs} epochs, digits, cnn, "
          f"{FLAGS.num_teachers} teachers (median seconds):")
    print("| plain student fit (s) | one tune trial (s) | ratio | target |")
    print("|---:|---:|---:|---|")
    print(f"| {plain_s:.2f} | {trial_s:.2f} | {trial_s / plain_s:.2f} | <= 1.15: "
          f"{'met' if trial_s / plain_s <= 1.15 else 'not met'} |")
    print("all plain: " + ", ".join(f"{t:.2f}" for t in timings["plain"]))
    print("all trial: " + ", ".join(f"{t:.2f}" for t in timings["trial"]))


if __name__ == "__main__":
    app.run(main)
