"""The cost of one `--mode=tune` trial, as a ratio to a plain student fit of the same epochs.

    python tools/benchmark_tune.py                 # digits, cnn, 5 teachers, 30 epochs, 5 repeats
    python tools/benchmark_tune.py --epochs=3      # short trials: fixed costs weigh more
    python tools/benchmark_tune.py --dataset=keras:fashion_mnist --train_size=3000 \
        --batch_size=128 --augment=crop_flip --epochs=5 --repeats=5   # with augmentation

In one process, interleaved (plain, trial, plain, trial, ...) so that machine noise hits
both alike, each repeat times from a fresh model to the end of its training:

  plain: build the student, compile `keras.Model` with cross-entropy, `fit` for --epochs
         on the same tf.data pipeline shape (`make_tf_dataset`, batch 64, full shuffle);
  trial: one keras-tuner RandomSearch trial of tfkd's tune mode (`DistillHyperModel`: the
         same student inside a Distiller, the ensemble's cached logits in every batch,
         keras-tuner's per-epoch best-weights checkpoint and trial bookkeeping), in a fresh
         tuner directory.

The teachers' logits are computed once before timing, as the tune mode does before its
first trial: on the training set, or with --augment on every epoch's views (the view
cache; both plain fit and trial then train on the same augmented views). Reports the
median of each and the ratio of the medians (target <= 1.15), the median of the per-repeat
ratios, and the one-off cache build; each both as the whole run's wall time and as its
epoch loops after the first (`on_epoch_begin` to `on_epoch_end`, summed: the steps and the
validation, without the set-up, tear-down and idle waits around `fit`, and without the
first epoch's one-off work, which Keras does partly before the first epoch for a Distiller).
"""

import functools
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

flags.DEFINE_integer("repeats", 5, "Timed repeats of each.")
flags.DEFINE_integer("epochs", 30, "Epochs per fit / trial (30: the tune default); >= 2.",
                     lower_bound=2)
flags.DEFINE_integer("num_teachers", 5, "Members of the teacher ensemble.")
flags.DEFINE_string("dataset", "digits", "Dataset, as tfkd's --dataset.")
flags.DEFINE_integer("train_size", 0, "Training examples (a stratified sample, as tfkd's --train_size); 0: all.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_string("augment", "none", "Augmentation of plain fit and trial alike.")
FLAGS = flags.FLAGS

# Epoch-loop seconds of the run being timed. A module-level store: keras-tuner deep-copies
# the callbacks it is given for every trial, so a callback's own attributes never come back.
EPOCH_LOOPS = []


class EpochLoops(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        EPOCH_LOOPS.append(time.perf_counter() - self._started)


def main(argv):
    del argv

    from tfkd import cache
    from tfkd.config import Config
    from tfkd.data import augmented_views
    from tfkd.ensemble import Ensemble
    from tfkd.modes import fit, inputs
    from tfkd.modes.tune import DistillHyperModel, make_tuner

    config = Config(mode="tune", epochs=FLAGS.epochs, num_models=FLAGS.num_teachers,
                    max_trials=1, dataset=FLAGS.dataset, train_size=FLAGS.train_size,
                    batch_size=FLAGS.batch_size, augment=FLAGS.augment, data_seed=0)
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
    started = time.perf_counter()
    if config.augment == "none":
        train_logits, views = cache.predict_logits(ensemble, splits.x_train).astype("float16"), None
    else:
        train_logits = None
        # As tfkd builds it: every epoch's views in one inference pass (store.view_logits).
        n = len(splits.x_train)
        every = functools.reduce(lambda a, b: a.concatenate(b), (augmented_views(
            splits.x_train, augment=config.augment, augment_seed=config.data_seed, epoch=e)
            for e in range(config.epochs)))
        logits = cache.predict_logits(ensemble, every).astype("float16")
        views = [logits[e * n:(e + 1) * n] for e in range(config.epochs)]
    val_logits = cache.predict_logits(ensemble, splits.x_val).astype("float16")
    build_s = time.perf_counter() - started
    seed = config.seed + config.num_models

    def plain():
        keras.utils.set_random_seed(seed)
        student = fit.build_student(config, splits, seed, "student")
        student.compile(keras.optimizers.Adam(config.learning_rate),
                        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
        # The training pipeline a distilled student gets, without teacher logits.
        data, val = fit.make_datasets(config, splits, seed, fit.TeacherPlan())
        student.fit(data, validation_data=val, epochs=config.epochs, verbose=0,
                    steps_per_epoch=fit.steps_per_epoch(config, splits),
                    callbacks=[EpochLoops()])

    def trial():
        plan = fit.TeacherPlan(train_logits=train_logits, view_logits=views,
                               val_logits=val_logits, distilled=True)
        hypermodel = DistillHyperModel(config, splits, seed=seed, plan=plan)
        with tempfile.TemporaryDirectory() as directory:
            tuner = make_tuner(config, hypermodel, directory, "bench")
            tuner.search(verbose=0, callbacks=[EpochLoops()])

    timings = {"plain": [], "trial": []}
    loops = {"plain": [], "trial": []}
    for name, run in (("plain", plain), ("trial", trial)):
        run()  # warm-up: the first build of each path pays one-off costs
    for _ in range(FLAGS.repeats):
        for name, run in (("plain", plain), ("trial", trial)):
            EPOCH_LOOPS.clear()
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
            if len(EPOCH_LOOPS) != config.epochs:
                raise RuntimeError(f"{name}: {len(EPOCH_LOOPS)} epochs timed, expected "
                                   f"{config.epochs}")
            # After the first epoch: the first one holds one-off work (tracing, the
            # pipeline's start) that Keras does inside the epoch for a plain model and
            # partly before it for the Distiller, which builds itself from a first batch.
            loops[name].append(sum(EPOCH_LOOPS[1:]))
    print(f"\n{FLAGS.repeats} repeats of {config.epochs} epochs, {config.dataset} "
          f"({len(splits.x_train)} training examples, batch {config.batch_size}, augment "
          f"{config.augment}), cnn, {FLAGS.num_teachers} teachers (median seconds); the "
          f"teachers' logits took {build_s:.1f} s to compute, once:")
    print("| measure | plain student fit (s) | one tune trial (s) | trial / plain | median of "
          "per-repeat ratios | target <= 1.15 |")
    print("|---|---:|---:|---:|---:|---|")
    for label, times in (("whole run", timings), ("epoch loops after the first", loops)):
        plain_s, trial_s = (statistics.median(times[k]) for k in ("plain", "trial"))
        paired = statistics.median(t / p for t, p in zip(times["trial"], times["plain"]))
        print(f"| {label} | {plain_s:.2f} | {trial_s:.2f} | {trial_s / plain_s:.2f} | "
              f"{paired:.2f} | {'met' if trial_s / plain_s <= 1.15 else 'not met'} |")
    for label, times in (("whole run", timings), ("epoch loops after the first", loops)):
        for name in ("plain", "trial"):
            print(f"all {name} ({label}): " + ", ".join(f"{t:.2f}" for t in times[name]))


if __name__ == "__main__":
    app.run(main)
