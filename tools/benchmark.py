"""Epoch time and student accuracy: plain training vs tfkd vs core Keras distillation.

In one run, on one dataset, with one student architecture and one teacher ensemble, this
times one training epoch of

  (a) plain student training, `keras.Model.fit` with cross-entropy on logits;
  (b) `tfkd.Distiller` with the teacher ensemble run online, on every step (with their
      BatchNorm folded into their convolutions, tfkd's default: `tfkd.folding`);
  (c) `tfkd.Distiller` with teachers=None, fed teacher logits computed once
      (`tfkd.cache.predict_logits`, as tfkd caches them) through
      `make_tf_dataset(..., teacher_logits=...)`;
  (d) core Keras `keras.distillation.Distiller` with the ensemble as its one teacher (run
      as given),
  (e) `tfkd.Distiller` with the ensemble online on `--augment`ed batches,
  (e') plain student training on the same augmented batches,
  (f) `tfkd.Distiller` with teachers=None on the same augmented batches, fed the teachers'
      logits on exactly those views (`augmented_views`, computed once: the view cache),
  (g) as (c), with the DKD method (`distillation_loss="dkd"`, tfkd.terms) instead of KD,
  (h) as (c), with CA-MKD's confidence weighting of each teacher (`"camkd"`), fed each
      teacher's own cached logits (N, M, C),

and the test accuracy each variant's student reaches after `--epochs` epochs.

    python tools/benchmark.py     # real Fashion-MNIST, 3,000 images, cnn, batch 128, 5 teachers
    python tools/benchmark.py --repeats=15          # steadier medians on a busy machine
    python tools/benchmark.py --dataset=digits --train_size=0 --batch_size=64   # the old one

The default workload is one where an epoch is seconds of compute (real 28x28 images, not
digits' 17 steps of 8x8 ones, where fit's fixed costs and this machine's idle waits decide
the ratios). It needs Debian's dataset-fashion-mnist (docs/data.md).

Method. Every variant gets a fresh student (same architecture and seed), its own Adam
optimizer and the same tf.data pipeline shape (`make_tf_dataset`: batch size, full shuffle,
prefetch). One warm-up epoch absorbs tracing; then `--repeats` single epochs per variant are
timed with `time.perf_counter()` around `fit(epochs=1, verbose=0)`, interleaved a, b, c, d,
a, b, ... so that machine noise hits every variant alike. A callback also times each
epoch's step loop (on_epoch_begin to on_epoch_end), which leaves out fit's set-up and
tear-down (see `EpochLoopTimer`). The accuracy column comes from separate fresh students
trained for `--epochs` epochs (the timed epochs are not counted in them), evaluated on the
test split with the student model itself; `--accuracy_seeds` students per variant.

NOTE: core Keras's `LogitsDistillation()` with its default `loss="kl_divergence"` does not
compute the KD loss: `keras.losses.get("kl_divergence")` returns the *function*
`kl_divergence`, so its `isinstance(loss_fn, keras.losses.KLDivergence)` branch (softmax,
T^2) never runs and the function is applied to the raw logits / T, clipped to [1e-7, 1].
Variant (d) therefore passes `loss=keras.losses.KLDivergence()`, which gives
T^2 * KL(softmax(t/T) || softmax(s/T)), the loss tfkd uses; `--core_kd_loss=default`
times and trains core's default instead.
"""

import gc
import os
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import tfkd  # noqa: E402
import tfkd.cache  # noqa: E402
from tfkd.data import augmented_views, load_dataset, make_tf_dataset  # noqa: E402
from tfkd.ensemble import for_inference  # noqa: E402
from tfkd.workdir import Workdir  # noqa: E402

flags.DEFINE_string("dataset", "keras:fashion_mnist", "Dataset, as tfkd's --dataset.")
flags.DEFINE_integer("train_size", 3000, "Training examples (a stratified sample, as tfkd's --train_size); 0: all.")
flags.DEFINE_string("augment", "crop_flip", "Augmentation of variants (e), (e') and (f).")
flags.DEFINE_string("model", "cnn", "Architecture of teachers and students (tfkd.build_model).")
flags.DEFINE_integer("batch_size", 128, "Batch size of every variant's training pipeline.")
flags.DEFINE_integer("epochs", 20,
                     "Epochs each variant's student trains for the accuracy column (fresh "
                     "students, separate from the timed epochs).")
flags.DEFINE_integer("repeats", 5,
                     "Timed single epochs per variant, after one untimed warm-up epoch.")
flags.DEFINE_integer("num_teachers", 5, "Members of the teacher ensemble.")
flags.DEFINE_integer("teacher_epochs", 15, "Epochs per teacher when the teachers are trained here.")
flags.DEFINE_string("teacher_dir", None,
                    "A tfkd workdir whose models/member_i.keras (i < --num_teachers) are the "
                    "teachers; default: train them here first.")
flags.DEFINE_float("alpha", 0.1, "Ground-truth weight (core Keras: student_loss_weight).")
flags.DEFINE_float("temperature", 4.0, "Distillation temperature T.")
flags.DEFINE_float("learning_rate", 3e-3, "Adam learning rate of every model (tfkd's default).")
flags.DEFINE_integer("seed", 0,
                     "Teachers get seeds seed..seed+N-1, the students seed+100+k, the same "
                     "for every variant.")
flags.DEFINE_integer("accuracy_seeds", 0,
                     "Student seeds per variant for the accuracy column (mean ± std if > 1; "
                     "0: no accuracy column).")
flags.DEFINE_enum("core_kd_loss", "KLDivergence", ["KLDivergence", "default"],
                  "Loss of core Keras's LogitsDistillation in (d): a KLDivergence() instance "
                  "(the real T^2-scaled KD loss) or its default 'kl_divergence' string.")
flags.DEFINE_boolean("profile", False,
                     "Also time one training step of each variant and its parts (student "
                     "forward, backward, optimizer update, teacher forward) on one batch, "
                     "each as a tf.function, without tf.data or fit.")
FLAGS = flags.FLAGS

VARIANTS = {
    "a": "(a) plain `keras.Model.fit`",
    "b": "(b) tfkd Distiller, teachers online",
    "c": "(c) tfkd Distiller, cached teacher logits",
    "d": "(d) core `keras.distillation.Distiller`",
    "e": "(e) tfkd Distiller, teachers online, augmented",
    "p": "(e') plain `keras.Model.fit`, augmented",
    "f": "(f) tfkd Distiller, view cache, augmented",
    "g": "(g) tfkd Distiller, cached teacher logits, DKD",
    "h": "(h) tfkd Distiller, each teacher's cached logits, CA-MKD",
}
AUGMENTED = ("e", "p", "f")
VIEW_SEED = 0  # the --data_seed of the augmented variants: (e), (e') and (f) see one set of views


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores available ({os.cpu_count()} logical CPUs), "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}")


class Bench:
    """Data, teachers and their cached logits, shared by every variant."""

    def __init__(self):
        self.data = load_dataset(FLAGS.dataset)
        if FLAGS.train_size:
            self.data = self.data.subset(train=FLAGS.train_size)  # as tfkd's --train_size
        started = time.perf_counter()
        if FLAGS.teacher_dir:
            workdir = Workdir(FLAGS.teacher_dir)
            names = [f"member_{i}" for i in range(FLAGS.num_teachers)]
            missing = [n for n in names if not os.path.exists(workdir.model_path(n))]
            if missing:
                raise app.UsageError(f"no {workdir.model_path(missing[0])}; train teachers "
                                     f"with tfkd --mode=train --workdir={FLAGS.teacher_dir}")
            self.teachers = [workdir.load_model(n) for n in names]
            self.teacher_source = f"loaded from {FLAGS.teacher_dir}"
        else:
            self.teachers = []
            for i in range(FLAGS.num_teachers):
                seed = FLAGS.seed + i
                keras.utils.set_random_seed(seed)
                teacher = tfkd.build_model(FLAGS.model, self.data.input_shape,
                                           self.data.num_classes, seed=seed,
                                           model_name=f"member_{i}")
                teacher.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
                                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                fit(teacher, self.train_dataset(seed), FLAGS.teacher_epochs)
                self.teachers.append(teacher)
            self.teacher_source = f"trained here, {FLAGS.teacher_epochs} epochs each"
        self.teacher_seconds = time.perf_counter() - started
        ensemble = tfkd.Ensemble(self.teachers, name="teachers")
        self.teacher_accuracy = self.correct(ensemble) / len(self.data.y_test)
        started = time.perf_counter()
        self.cached_logits = tfkd.cache.predict_logits(ensemble, self.data.x_train, fold=True)
        self.cache_seconds = time.perf_counter() - started
        self.member_logits = np.stack([tfkd.cache.predict_logits(t, self.data.x_train, fold=True)
                                       for t in self.teachers], axis=1)
        # The view cache of the timed epoch (every timed repeat replays epoch 0's views), as
        # tfkd builds it: a parallel map of the views, prefetched, the ensemble's inference.
        started = time.perf_counter()
        self.view_logits = [tfkd.cache.predict_logits(ensemble, augmented_views(
            self.data.x_train, augment=FLAGS.augment, augment_seed=VIEW_SEED, epoch=0),
            fold=True).astype(np.float16)]
        self.view_cache_seconds = time.perf_counter() - started

    def train_dataset(self, seed, teacher_logits=None, augment="none", view_logits=None):
        if augment == "none":
            return make_tf_dataset(self.data.x_train, self.data.y_train,
                                   batch_size=FLAGS.batch_size, shuffle=True, seed=seed,
                                   teacher_logits=teacher_logits)
        # One epoch, the first: the epoch-indexed pipeline tfkd trains on with --augment.
        return make_tf_dataset(self.data.x_train, self.data.y_train,
                               batch_size=FLAGS.batch_size, shuffle=True, seed=seed,
                               augment=augment, augment_seed=VIEW_SEED,
                               view_logits=view_logits, epochs=1)

    def correct(self, model):
        """How many test examples `model` classifies correctly (an exact count, not a float)."""
        logits = model.predict(self.data.x_test, batch_size=512, verbose=0)
        return int(np.sum(np.argmax(logits, axis=-1) == self.data.y_test))

    def variant(self, key, seed):
        """(model to fit, its student, its training dataset), freshly built and compiled."""
        keras.utils.set_random_seed(seed)
        student = tfkd.build_model(FLAGS.model, self.data.input_shape, self.data.num_classes,
                                   seed=seed, model_name=f"student_{key}")
        optimizer = keras.optimizers.Adam(FLAGS.learning_rate)
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        dataset = self.train_dataset(seed)
        if key in AUGMENTED:
            dataset = self.train_dataset(seed, augment=FLAGS.augment,
                                         view_logits=self.view_logits if key == "f" else None)
        if key in ("a", "p"):
            model = student
            model.compile(optimizer=optimizer, loss=cross_entropy, metrics=["accuracy"])
        elif key in ("b", "e"):
            model = tfkd.Distiller(student=student, teachers=tfkd.Ensemble(self.teachers, name="teachers"),
                                   alpha=FLAGS.alpha, temperature=FLAGS.temperature)
            model.compile(optimizer=optimizer, metrics=["accuracy"])
        elif key in ("c", "f", "g", "h"):
            method = {"g": "dkd", "h": "camkd"}.get(key, "kl")
            model = tfkd.Distiller(student=student, alpha=FLAGS.alpha,
                                   temperature=FLAGS.temperature, distillation_loss=method)
            model.compile(optimizer=optimizer, metrics=["accuracy"])
            if key in ("c", "g"):
                dataset = self.train_dataset(seed, teacher_logits=self.cached_logits)
            elif key == "h":
                dataset = self.train_dataset(seed, teacher_logits=self.member_logits)
        elif key == "d":
            kd_loss = (keras.distillation.LogitsDistillation(temperature=FLAGS.temperature)
                       if FLAGS.core_kd_loss == "default" else
                       keras.distillation.LogitsDistillation(
                           temperature=FLAGS.temperature, loss=keras.losses.KLDivergence()))
            model = keras.distillation.Distiller(
                teacher=tfkd.Ensemble(self.teachers, name="teachers"), student=student,
                distillation_losses=kd_loss, student_loss_weight=FLAGS.alpha)
            model.compile(optimizer=optimizer, loss=cross_entropy, metrics=["accuracy"])
        else:
            raise ValueError(f"unknown variant {key!r}")
        return model, student, dataset


class EpochLoopTimer(keras.callbacks.Callback):
    """Seconds from on_epoch_begin to on_epoch_end: the training steps, without fit's set-up
    and tear-down.

    NOTE: on a 2-core CPU machine `fit` often sat idle (under 1 ms of CPU) for tens of ms,
    up to ~0.15 s, after its last step and its `on_train_end`, before returning; that rounds
    a ~0.1 s epoch's wall time up to ~0.145 or ~0.306 s. The step loop leaves it out.
    """

    seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self._started


def fit(model, dataset, epochs, *callbacks):
    # shuffle=False: the tf.data pipeline shuffles already (fit would only warn about it).
    return model.fit(dataset, epochs=epochs, verbose=0, shuffle=False, callbacks=list(callbacks))


def time_epochs(bench):
    """({variant: [fit seconds]}, {variant: [step-loop seconds]}, {variant: (model, student,
    dataset)}), the epochs interleaved across variants."""
    runs = {key: bench.variant(key, FLAGS.seed + 100) for key in VARIANTS}
    timer = EpochLoopTimer()
    for model, _, dataset in runs.values():
        fit(model, dataset, 1, timer)  # warm-up: tracing, first-call costs
    fit_times = {key: [] for key in VARIANTS}
    loop_times = {key: [] for key in VARIANTS}
    for _ in range(FLAGS.repeats):
        for key, (model, _, dataset) in runs.items():
            gc.collect()  # so that no variant pays for another's garbage
            started = time.perf_counter()
            fit(model, dataset, 1, timer)
            fit_times[key].append(time.perf_counter() - started)
            loop_times[key].append(timer.seconds)
    return fit_times, loop_times, runs


PROFILE_ROUNDS, PROFILE_CALLS = 15, 20


def profile_steps(bench, runs, rounds=PROFILE_ROUNDS, calls=PROFILE_CALLS):
    """{name: median ms per call} of one training step per variant and of its parts.

    Every function is a tf.function on one fixed batch, called `calls` times in a row per
    round, the functions interleaved per round; the median over rounds is reported.
    """
    x = tf.constant(bench.data.x_train[:FLAGS.batch_size])
    y = tf.constant(bench.data.y_train[:FLAGS.batch_size])
    cached = tf.constant(bench.cached_logits[:FLAGS.batch_size])
    members = tf.constant(bench.member_logits[:FLAGS.batch_size])
    functions = {}
    for key, (model, _, _) in runs.items():
        inputs = (tfkd.with_teacher_logits(x, cached) if key in ("c", "f", "g") else
                  tfkd.with_teacher_logits(x, members) if key == "h" else x)
        # The variant's own train_step, as fit runs it (its model is already warmed up).
        functions[f"{key}: train_step"] = (
            lambda step=tf.function(model.train_step), data=(inputs, y): step(data))

    student = tfkd.build_model(FLAGS.model, bench.data.input_shape, bench.data.num_classes,
                               seed=FLAGS.seed + 100, model_name="profile_student")
    optimizer = keras.optimizers.Adam(FLAGS.learning_rate)
    optimizer.build(student.trainable_variables)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kd_loss = tfkd.SoftTargetKL(temperature=FLAGS.temperature)
    ensemble = tfkd.Ensemble(bench.teachers, name="profile_teachers")
    folded, _ = for_inference(ensemble, x[:8])

    @tf.function
    def student_forward():
        return student(x, training=True)

    @tf.function
    def student_forward_backward():
        with tf.GradientTape() as tape:
            loss = cross_entropy(y, student(x, training=True))
        return tape.gradient(loss, student.trainable_variables)

    @tf.function
    def student_forward_backward_kd():
        with tf.GradientTape() as tape:
            logits = student(x, training=True)
            loss = (FLAGS.alpha * cross_entropy(y, logits)
                    + (1 - FLAGS.alpha) * kd_loss(cached, logits))
        return tape.gradient(loss, student.trainable_variables)

    gradients = student_forward_backward()

    @tf.function
    def optimizer_update():
        optimizer.apply(gradients, student.trainable_variables)
        return optimizer.iterations

    functions.update({
        "student forward (training=True)": student_forward,
        "student forward + backward, CE": student_forward_backward,
        "student forward + backward, CE + KD": student_forward_backward_kd,
        "Adam update": optimizer_update,
        "one teacher forward (training=False)": tf.function(
            lambda: bench.teachers[0](x, training=False)),
        f"ensemble of {len(bench.teachers)} forward (training=False)": tf.function(
            lambda: ensemble(x, training=False)),
        f"ensemble of {len(bench.teachers)} forward, BatchNorm folded": tf.function(
            lambda: folded(x, training=False)),
    })
    for function in functions.values():
        for _ in range(3):
            function()  # tracing
    samples = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            for _ in range(calls):
                out = function()
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
            samples[name].append(1000 * (time.perf_counter() - started) / calls)
    return {name: statistics.median(ms) for name, ms in samples.items()}


def train_accuracies(bench):
    """{variant: [correct test examples of each student seed]} after --epochs epochs."""
    accuracies = {key: [] for key in VARIANTS}
    for k in range(FLAGS.accuracy_seeds):
        for key in VARIANTS:
            model, student, dataset = bench.variant(key, FLAGS.seed + 100 + k)
            fit(model, dataset, FLAGS.epochs)
            accuracies[key].append(bench.correct(student))
    return accuracies


def percent(counts, total):
    if not counts:
        return "-"
    values = [100 * c / total for c in counts]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("batch_size", "epochs", "repeats", "num_teachers", "teacher_epochs"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    # Each variant's fresh model traces its own predict function; TF warns about "retracing".
    tf.get_logger().setLevel("ERROR")
    command = "python tools/benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    started = time.perf_counter()
    bench = Bench()
    times, loop_times, runs = time_epochs(bench)
    step_ms = profile_steps(bench, runs) if FLAGS.profile else None
    accuracies = train_accuracies(bench)

    medians = {key: statistics.median(ts) for key, ts in times.items()}
    loop_medians = {key: statistics.median(ts) for key, ts in loop_times.items()}
    steps = -(-len(bench.data.x_train) // FLAGS.batch_size)
    print(f"command: `{command.strip()}`")
    print(f"machine: {machine()}")
    print(f"data: {FLAGS.dataset}, {len(bench.data.x_train)} training examples, batch "
          f"{FLAGS.batch_size} ({steps} steps per epoch), {len(bench.data.x_test)} test "
          f"examples; model: {FLAGS.model}; alpha {FLAGS.alpha:g}, T {FLAGS.temperature:g}, "
          f"Adam {FLAGS.learning_rate:g}")
    print(f"teachers: {FLAGS.num_teachers} x {FLAGS.model}, {bench.teacher_source} "
          f"({bench.teacher_seconds:.1f} s); ensemble test accuracy "
          f"{100 * bench.teacher_accuracy:.2f}%; caching their logits on the training set "
          f"took {bench.cache_seconds:.2f} s (once, not in (c)'s epoch time); on one "
          f"epoch's {FLAGS.augment} views {bench.view_cache_seconds:.2f} s (once per epoch of "
          f"views, not in (f)'s epoch time)")
    print(f"timing: median of {FLAGS.repeats} interleaved single epochs after 1 warm-up "
          f"epoch, as wall time of fit(epochs=1) and as its step loop (on_epoch_begin to "
          f"on_epoch_end); accuracy: {FLAGS.accuracy_seeds} fresh student(s) per variant trained "
          f"{FLAGS.epochs} epochs (timed epochs not counted)")
    n_test = len(bench.data.y_test)
    print()
    print("| variant | median epoch (s) | ratio to (a) | median step loop (s) | ratio to (a) "
          "| test accuracy (%) |")
    print("|---|---:|---:|---:|---:|---:|")
    labels = dict(VARIANTS)
    if FLAGS.core_kd_loss == "default":
        labels["d"] += ", default `LogitsDistillation` loss"
    for key, label in labels.items():
        print(f"| {label} | {medians[key]:.3f} | {medians[key] / medians['a']:.2f} | "
              f"{loop_medians[key]:.3f} | {loop_medians[key] / loop_medians['a']:.2f} | "
              f"{percent(accuracies[key], n_test)} |")
    print()
    for key in VARIANTS:
        print(f"epoch times ({key}), fit / step loop, s: " + ", ".join(
            f"{t:.3f}/{u:.3f}" for t, u in zip(times[key], loop_times[key])))
    # Neighbouring epochs of one repeat share the machine's load, so their ratio is
    # steadier than a ratio of medians when other work comes and goes.
    for name, ts in (("fit", times), ("step loop", loop_times)):
        paired = {pair: statistics.median(x / y for x, y in zip(ts[pair[0]], ts[pair[1]]))
                  for pair in ("ca", "bd", "fa", "fp", "ea", "gc", "hc")}
        print(f"median of per-repeat ratios ({name}): (c)/(a) {paired['ca']:.3f}, "
              f"(b)/(d) {paired['bd']:.3f}, (f)/(a) {paired['fa']:.3f}, (f)/(e') "
              f"{paired['fp']:.3f}, (e)/(a) {paired['ea']:.3f}, (g)/(c) {paired['gc']:.3f}, "
              f"(h)/(c) {paired['hc']:.3f}")
    for key, counts in accuracies.items():
        print(f"correct test examples ({key}), per student seed: "
              + ", ".join(f"{c}/{n_test}" for c in counts))
    print()
    ratio_c = medians["c"] / medians["a"]
    loop_ratio_c = loop_medians["c"] / loop_medians["a"]
    core = sum(accuracies["d"])
    tfkd_correct = {key: sum(accuracies[key]) for key in ("b", "c")}
    total = max(n_test * FLAGS.accuracy_seeds, 1)

    def share(count):
        return f"{100 * count / total:.2f}% ({count}/{total})"

    ratio_f = medians["f"] / medians["a"]
    loop_ratio_f = loop_medians["f"] / loop_medians["a"]
    ratio_g = statistics.median(g / c for g, c in zip(times["g"], times["c"]))
    loop_ratio_g = statistics.median(g / c for g, c in zip(loop_times["g"], loop_times["c"]))
    targets = [
        (f"(g)/(c) <= 1.05, DKD against KD from the cache (fit, paired): {ratio_g:.3f}",
         ratio_g <= 1.05),
        (f"(g)/(c) <= 1.05 (step loop, paired): {loop_ratio_g:.3f}", loop_ratio_g <= 1.05),
        (f"(f)/(a) <= 1.15 (fit): {ratio_f:.3f}", ratio_f <= 1.15),
        (f"(f)/(a) <= 1.15 (step loop): {loop_ratio_f:.3f}", loop_ratio_f <= 1.15),
        (f"(c)/(a) <= 1.10 (fit): {ratio_c:.3f}", ratio_c <= 1.10),
        (f"(c)/(a) <= 1.10 (step loop): {loop_ratio_c:.3f}", loop_ratio_c <= 1.10),
        (f"(b) <= (d) (fit): {medians['b']:.3f} s vs {medians['d']:.3f} s "
         f"({100 * (medians['b'] / medians['d'] - 1):+.1f}%)", medians["b"] <= medians["d"]),
        (f"(b) <= (d) (step loop): {loop_medians['b']:.3f} s vs {loop_medians['d']:.3f} s "
         f"({100 * (loop_medians['b'] / loop_medians['d'] - 1):+.1f}%)",
         loop_medians["b"] <= loop_medians["d"]),
    ]
    if FLAGS.accuracy_seeds:
        targets.append(
            (f"tfkd student accuracy >= core Keras: (b) {share(tfkd_correct['b'])}, "
             f"(c) {share(tfkd_correct['c'])} vs (d) {share(core)}",
             min(tfkd_correct.values()) >= core))
    for text, met in targets:
        print(f"- [{'x' if met else ' '}] {text} -> {'met' if met else 'NOT met'}")
    if step_ms:
        print(f"\nper-step profile (batch {FLAGS.batch_size}; ms per call, median of "
              f"{PROFILE_ROUNDS} rounds of {PROFILE_CALLS} calls, interleaved):\n")
        print("| what | ms per step |")
        print("|---|---:|")
        for name, ms in step_ms.items():
            print(f"| {name} | {ms:.2f} |")
    print(f"\ntotal wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    app.run(main)
