"""Distiller: one training path for supervised training, distillation and self-distillation.

    loss = alpha * CE(y, student)
         + (1 - alpha) * distillation_loss(teacher_logits, student_logits)
         + hint.weight * HintLoss(teacher_features, adapter(student_features))

alpha = 1 with no teachers is plain supervised training; alpha = 0 is pure
distillation. Teachers are frozen and always run with `training=False`.

Precomputed teacher outputs: feed `x` as a dict
``{"inputs": x, "teacher_logits": t}`` (see `with_teacher_logits`); the
Distiller then runs no teacher forward pass (unless a hint loss needs the
teacher's features, which the cache does not hold).

The Distiller is built as soon as it knows its input: at construction when the
student and teachers are built (functional models, Sequential models with an
Input or loaded from `.keras`), otherwise from the first batch of `fit` or
`evaluate`, before any callback starts. So `save_weights`, `ModelCheckpoint`,
`BackupAndRestore` and keras-tuner work with no `build()` call of the user's.
"""

import dataclasses
import math
import numbers

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# NOTE: modules, not names: importing Keras registers tfkd's saveable classes by importing
# these modules (see tfkd/__init__.py), possibly while one of them is half imported.
from tfkd import ensemble as ensemble_lib
from tfkd import losses as losses_lib
from tfkd import metrics as metrics_lib

INPUTS_KEY = "inputs"
TEACHER_LOGITS_KEY = "teacher_logits"


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _batch_share(y):
    """This replica's share of the global batch, times the replica count: 1 when the global
    batch splits evenly, else what makes the replicas' losses add up to the global batch's.

    NOTE: Keras Loss objects average over the replica's own batch and divide by the
    replica count, which weighs every replica alike. A global batch that does not split
    evenly (63 over 2 replicas, any batch over 3, an epoch's last partial batch) then gives
    a different update from one device: by 0.25 in the weights for a last batch of one
    example over 3 replicas. Weighing each replica by its examples restores the
    one-device update whatever the split.
    """
    replicas = _replicas()
    context = tf.distribute.get_replica_context()
    if replicas == 1 or context is None:
        return None
    local = tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tf.float32)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
    return tf.math.divide_no_nan(local * replicas, total)


def _multi_worker(strategy):
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.cluster_resolver is not None
            and len(strategy.extended.worker_devices) < strategy.num_replicas_in_sync)


def with_teacher_logits(inputs, teacher_logits):
    """Packs inputs and precomputed teacher logits the way the Distiller reads them."""
    return {INPUTS_KEY: inputs, TEACHER_LOGITS_KEY: teacher_logits}


def split_teacher_logits(x):
    """(inputs, teacher_logits or None) from a batch's x."""
    if isinstance(x, dict) and TEACHER_LOGITS_KEY in x:
        return x[INPUTS_KEY], x[TEACHER_LOGITS_KEY]
    return x, None


def check_teachers(teachers, student, student_name="the student"):
    """The teachers' models as a list (from a model, a list or an Ensemble), after a
    ValueError naming the first one whose classes or input shape differ from the student's."""
    if isinstance(teachers, ensemble_lib.Ensemble):
        members = teachers.members
    else:
        members = list(teachers) if isinstance(teachers, (list, tuple)) else [teachers]
    ensemble_lib.check_compatible(members, [f"teacher {i}" for i in range(len(members))],
                                  reference=student, reference_name=student_name)
    return members


# NOTE: keyword-only, because the command line writes TEACHER_LAYER:STUDENT_LAYER and an
# earlier positional Hint(student_layer, teacher_layer) read the other way round.
@dataclasses.dataclass(frozen=True, kw_only=True)
class Hint:
    """FitNets hint: regress `student_layer`'s output, through a learned adapter, onto `teacher_layer`'s.

    `Hint(teacher_layer="features", student_layer="features", weight=0.5)`; the
    fields are keyword-only. With an ensemble of teachers the hint comes from its
    first member.
    """

    teacher_layer: str
    student_layer: str
    weight: float = 1.0

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"hint weight must be >= 0, got {self.weight!r}")


def _check_student(student):
    """`student` if it is a single keras.Model; a ValueError that says what went wrong otherwise."""
    if student is None:
        raise ValueError("Distiller needs student=, the keras.Model that trains")
    ensemble = isinstance(student, ensemble_lib.Ensemble)
    if ensemble or (isinstance(student, (list, tuple)) and student):
        # The likeliest cause: arguments swapped, as core Keras's Distiller(teacher, student).
        what = "a tfkd.Ensemble" if ensemble else "a list of models"
        raise ValueError(
            f"student is {what}, which looks like the teachers: write "
            "Distiller(student=new_model, teachers=ensemble_or_list)")
    if not isinstance(student, keras.Model):
        raise ValueError(f"student must be a keras.Model, got {type(student).__name__}")
    return student


def _teacher_outputs(teacher_outputs, teachers):
    """The teachers' output kind (one, or a list of one per teacher): the argument, else an
    Ensemble's own, else "logits"."""
    if isinstance(teacher_outputs, (list, tuple)):
        count = len(teachers) if isinstance(teachers, (list, tuple)) else 1
        if isinstance(teachers, ensemble_lib.Ensemble):
            count = len(teachers.members)
        ensemble_lib.output_kinds(teacher_outputs, count, "teacher_outputs")
        teacher_outputs = list(teacher_outputs)
    elif teacher_outputs is not None and teacher_outputs not in ensemble_lib.OUTPUTS:
        raise ValueError(f"unknown teacher_outputs {teacher_outputs!r}; choose one of: "
                         f"{', '.join(ensemble_lib.OUTPUTS)}, or a list of one per teacher")
    if isinstance(teachers, ensemble_lib.Ensemble):
        if teacher_outputs is not None and teacher_outputs != teachers.member_outputs:
            raise ValueError(
                f"teacher_outputs={teacher_outputs!r} conflicts with the Ensemble's "
                f"member_outputs={teachers.member_outputs!r}; set it on the Ensemble")
        return teachers.member_outputs
    return teacher_outputs or "logits"


def _first_replica(value, strategy):
    """One local replica's part of a distributed batch (the batch itself otherwise)."""
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _check_classes(width, student_loss, distillation_loss, with_teachers):
    """A ValueError when the student has one output unit and a loss over classes would read
    it: a softmax over one class is 1, so that loss is exactly 0 and nothing trains."""
    if width != 1:
        return
    readers = [("student_loss", student_loss)]
    if with_teachers:
        readers.append(("distillation_loss", distillation_loss))
    for argument, loss in readers:
        if losses_lib.over_classes(loss):
            raise ValueError(
                f"the student has one output unit, where {argument} "
                f"{type(loss).__name__} (a loss over classes) is exactly 0: the built-in "
                "losses are for classifiers with 2 or more classes. For regression, pass "
                "student_loss= and distillation_loss= losses of the raw outputs, such as "
                "keras.losses.MeanSquaredError() (docs/library.md)")


def _check_widths(student_logits, teacher_logits, cached):
    """A ValueError naming both class counts when teacher and student outputs differ in width.

    Static shapes, so it costs nothing per step and fires when the step is traced.
    """
    if teacher_logits is None:
        return
    student_classes, teacher_classes = student_logits.shape[-1], teacher_logits.shape[-1]
    if None not in (student_classes, teacher_classes) and student_classes != teacher_classes:
        source = "the precomputed teacher_logits have" if cached else "the teachers predict"
        raise ValueError(f"{source} {teacher_classes} classes but the student predicts "
                         f"{student_classes}; teachers and student must share the label set")


class _Inference:
    """The teachers a Distiller's steps run (folded, or as given) and their folded copies."""

    teachers = None
    folds = ()


def _layer_output(model, name, role):
    try:
        return model.get_layer(name).output
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers)
        raise ValueError(
            f"{role} has no layer named {name!r}; its layers are: {names}"
        ) from None


def _build_adapter(student_shape, teacher_shape, seed=None):
    """A 1x1 projection from the student's feature channels to the teacher's."""
    if student_shape[1:-1] != teacher_shape[1:-1]:
        raise ValueError(
            f"hint layers differ in spatial shape: student {student_shape[1:-1]} vs "
            f"teacher {teacher_shape[1:-1]}; pick layers of the same resolution"
        )
    channels = teacher_shape[-1]
    rank = len(student_shape)
    init = keras.initializers.GlorotUniform(seed=seed)
    if rank == 2:
        return keras.layers.Dense(channels, kernel_initializer=init, name="hint_adapter")
    if rank == 3:
        return keras.layers.Conv1D(channels, 1, kernel_initializer=init, name="hint_adapter")
    if rank == 4:
        return keras.layers.Conv2D(channels, 1, kernel_initializer=init, name="hint_adapter")
    raise ValueError(f"hint features of rank {rank} are not supported (2, 3 or 4)")


class StudentCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` that saves a Distiller's student alone.

    A Distiller's own checkpoint holds every teacher too (gigabytes for ten large
    teachers, in every file); the student is what a checkpoint is for. Arguments are
    ModelCheckpoint's: `monitor` reads the Distiller's logs ("val_accuracy", ...), and
    `save_weights_only=False` writes a plain Keras model that loads without tfkd. On a
    model that is not a Distiller it is ModelCheckpoint itself.
    """

    # NOTE: the Distiller stays the callback's model, so that the monitored metric's
    # direction is read from its compiled metrics as ModelCheckpoint does; only the save
    # (ModelCheckpoint._save_model, Keras 3) sees the student.
    def _save_model(self, epoch, batch, logs):
        distiller = self.model
        self.set_model(getattr(distiller, "student", distiller))
        try:
            super()._save_model(epoch, batch, logs)
        finally:
            self.set_model(distiller)


# Examples of the first batch the teachers' outputs are checked on.
_PROBE_EXAMPLES = 8


class TeacherOutputError(ValueError):
    """The first-batch probe found teacher outputs that cannot teach (`_check_batch`).

    `teacher` is the index of the member at fault among the Distiller's teachers, or None
    (precomputed logits, or the temperature).
    """

    def __init__(self, message, teacher=None):
        super().__init__(message)
        self.teacher = teacher


def _check_finite(outputs, who, cause, teacher=None):
    """A TeacherOutputError naming the first non-finite value of `outputs` (rows x classes)."""
    values = np.asarray(outputs, dtype=np.float64)
    values = values.reshape(len(values), -1) if values.ndim else values.reshape(1, 1)
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = divmod(int(np.argmax(bad)), values.shape[1])
        raise TeacherOutputError(
            f"{who} output {values[row, column]} (example {row}, output {column}) on the first "
            f"batch: {cause} hold non-finite values (a damaged or diverged model); retrain it "
            "or give other teachers", teacher=teacher)


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(keras.Model):
    """Trains `student` on ground truth and on the (averaged, frozen) outputs of `teachers`.

    `Distiller(student=model, teachers=[t1, t2], alpha=0.5)`: every argument is a
    keyword (core Keras's `keras.distillation.Distiller` takes the teacher first;
    a positional call here is refused rather than read either way).

    Args:
      student: the keras.Model that trains; it outputs one tensor of logits over 2 or
        more classes (a model of several outputs is refused; one output unit needs
        losses of your own, see `student_loss`). It stays a plain Keras model: save it
        with `distiller.student.save(...)` and load it without tfkd.
      teachers: None, a keras.Model, a list of models, or an `Ensemble`. None is
        allowed when alpha = 1 or when every batch carries precomputed
        `teacher_logits`.
      teacher: one teacher model, as core Keras's Distiller names it (give
        `teachers` or `teacher`, not both).
      alpha: weight of the ground-truth loss, in [0, 1] (any finite value with
        `extrapolate=True`).
      temperature: softening temperature (> 0) of the distillation loss.
      distillation_loss: "kl" (soft-target KL, T^2-scaled), "probability_mse",
        or any `keras.losses.Loss` taking (teacher_logits, student_logits).
      teacher_average: "logits" or "probabilities", how a list of teachers is
        averaged (an `Ensemble` passed in keeps its own).
      teacher_outputs: what the teachers (and precomputed `teacher_logits`) hold:
        "logits" (default) or "probabilities" (models ending in a softmax), which
        are taken as the logits log(p); or a list of one kind per teacher, to mix
        logits and softmax teachers (precomputed `teacher_logits` are then the
        ensemble's, logits). A teacher whose outputs contradict its kind (a softmax
        declared "logits", rows that are not probabilities declared
        "probabilities") is refused with a ValueError on the first batch.
      hint: optional `Hint` (or a dict of its fields).
      student_loss: ground-truth loss; by default `tfkd.losses.CrossEntropy`,
        which takes integer labels or one-hot labels. A student of one output unit
        (regression) needs a student_loss and a distillation_loss of raw outputs,
        such as `keras.losses.MeanSquaredError()`: the built-in losses compare
        distributions over classes, exactly 0 for one unit, and are refused there.
      seed: seeds the initialisation of the hint adapter (the only weights
        the Distiller creates itself).
      extrapolate: accept alpha outside [0, 1]. alpha > 1 gives the teacher a
        negative weight (less smoothing than the teacher), alpha < 0 the labels.
        In ridge regression the optimal mixing weight can lie there (Borup &
        Andersen's chain; a 2026 follow-up); with a network, a negatively weighted
        term is unbounded below, so watch the loss.
      fold_teachers: run the teachers with each BatchNormalization folded into the
        convolution or Dense layer before it (`tfkd.folding`): the same outputs to float
        rounding for a cheaper forward pass, at the cost of a second copy of the teachers'
        weights. The copy is made from the first batch that needs the teachers and
        refolded when `load_weights` loads theirs; after changing a teacher's weights
        yourself, call `refold_teachers()`. Not used with a hint loss.
    """

    def __init__(self, *args, student=None, teachers=None, teacher=None, alpha=0.5,
                 temperature=4.0, distillation_loss="kl", teacher_average=None,
                 teacher_outputs=None, hint=None, student_loss=None, seed=None,
                 extrapolate=False, fold_teachers=True, **kwargs):
        if args:
            raise TypeError(
                "Distiller takes its models by keyword: Distiller(student=..., teachers=...) "
                "(core Keras's Distiller takes the teacher first, tfkd's took the student "
                "first: keywords leave no doubt)")
        super().__init__(**kwargs)
        student = _check_student(student)
        if teacher is not None:
            if teachers is not None:
                raise ValueError("give teachers= or teacher=, not both")
            if not isinstance(teacher, keras.Model) or isinstance(teacher, ensemble_lib.Ensemble):
                raise ValueError(f"teacher= takes one keras.Model, got {type(teacher).__name__}; "
                                 "pass several models, or an Ensemble, as teachers=")
            teachers = teacher
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (
                (0.0 <= alpha <= 1.0) or (extrapolate and math.isfinite(alpha))):
            raise ValueError(f"alpha must be in [0, 1] (the ground-truth weight), got {alpha!r}"
                             + ("" if extrapolate else "; extrapolate=True allows other values"))
        self.alpha = float(alpha)
        self.extrapolate = bool(extrapolate)
        self.temperature = losses_lib._check_temperature(temperature)
        self.student = student
        self.teacher_outputs = _teacher_outputs(teacher_outputs, teachers)
        self.teachers = self._wrap_teachers(teachers, teacher_average, self.teacher_outputs,
                                            student)
        if self.teachers is not None:
            # NOTE: freezing here, not in fit, so the teachers' weights are never
            # in trainable_weights, whatever the caller does next.
            self.teachers.trainable = False
        self.distillation_loss = losses_lib.get_distillation_loss(
            distillation_loss, temperature=self.temperature)
        self.student_loss = student_loss or losses_lib.CrossEntropy()
        signature = ensemble_lib.model_signature(student)
        _check_classes(signature and signature[1], self.student_loss, self.distillation_loss,
                       self._with_teachers)
        self.hint = Hint(**hint) if isinstance(hint, dict) else hint
        self.seed = seed
        self.fold_teachers = bool(fold_teachers)
        # The folded teachers, in an object Keras does not track: their weights are a
        # function of the teachers', never saved, restored or counted with the Distiller's.
        self._inference = _Inference()
        self._build_hint()

        # NOTE: accuracy and any other label metrics come from compile(metrics=...),
        # so that Keras callbacks (EarlyStopping, ModelCheckpoint) know their direction.
        with_teachers = self._with_teachers
        self._trackers = {
            "loss": keras.metrics.Mean(name="loss"),
            "student_loss": keras.metrics.Mean(name="student_loss"),
            "distillation_loss": (keras.metrics.Mean(name="distillation_loss")
                                  if with_teachers else None),
            "hint_loss": keras.metrics.Mean(name="hint_loss") if self.hint else None,
            "teacher_agreement": (metrics_lib.TeacherAgreement(name="teacher_agreement")
                                  if with_teachers else None),
        }
        # Whether the teachers' outputs on a first batch were looked at (see _check_batch).
        self._teachers_probed = False
        if self.student.built and (self.teachers is None or self.teachers.built):
            # Nothing is left to create: Keras's own models are built the same way.
            self.built = True

    @property
    def _with_teachers(self):
        return self.teachers is not None or self.alpha != 1.0

    # -- construction helpers ------------------------------------------------

    @staticmethod
    def _wrap_teachers(teachers, teacher_average, teacher_outputs, student):
        if teacher_average is not None and teacher_average not in ensemble_lib.AVERAGES:
            raise ValueError(
                f"unknown teacher_average {teacher_average!r}; choose one of: "
                f"{', '.join(ensemble_lib.AVERAGES)}")
        if teachers is None:
            return None
        if isinstance(teachers, (list, tuple)) and not teachers:
            raise ValueError("teachers is an empty list; pass at least one teacher, or None "
                             "with alpha=1 for plain supervised training")
        if isinstance(teachers, ensemble_lib.Ensemble):
            if teacher_average is not None and teacher_average != teachers.average:
                raise ValueError(
                    f"teacher_average={teacher_average!r} conflicts with the Ensemble's "
                    f"average={teachers.average!r}; set it on the Ensemble")
        members = check_teachers(teachers, student)
        if any(member is student for member in members):
            raise ValueError("the student is also one of the teachers; a Distiller trains a "
                             "new student: Distiller(student=new_model, teachers=...)")
        if isinstance(teachers, ensemble_lib.Ensemble):
            return teachers
        ensemble_lib.check_outputs(members, [f"teacher {i}" for i in range(len(members))],
                                   teacher_outputs, "teacher_outputs='probabilities'")
        return ensemble_lib.Ensemble(members, average=teacher_average or "logits",
                                     member_outputs=teacher_outputs, name="teachers")

    def _build_hint(self):
        self.hint_adapter = None
        if self.hint is None:
            return
        if self.teachers is None:
            raise ValueError("a hint loss needs teacher models (teachers=None was given)")
        teacher = self.teachers.members[0]
        student_features = _layer_output(self.student, self.hint.student_layer, "the student")
        teacher_features = _layer_output(teacher, self.hint.teacher_layer, "teacher 0")
        # Functional views that share the original layers, so one forward pass
        # yields both logits and features.
        self._student_with_features = keras.Model(
            self.student.inputs, [self.student.outputs[0], student_features])
        self._teacher_with_features = keras.Model(
            teacher.inputs, [teacher.outputs[0], teacher_features])
        self.hint_adapter = _build_adapter(tuple(student_features.shape),
                                           tuple(teacher_features.shape), self.seed)
        self.hint_adapter.build(tuple(student_features.shape))
        self.hint_loss = losses_lib.HintLoss()

    # -- forward passes ------------------------------------------------------

    def build(self, input_shape):
        """Builds the student and the teachers for inputs of `input_shape` (batch axis first).

        Needed only for models that are not built yet (a Sequential without an Input,
        a subclassed model); fit and evaluate call it from their first batch.
        """
        shape, _ = split_teacher_logits(input_shape)
        inputs = keras.tree.map_shape_structure(keras.KerasTensor, shape)
        # A symbolic call builds any kind of model, as its first real call would; one model
        # at a time, so that one of several outputs is named here, not inside an Ensemble's
        # call, where Keras would wrap the error in its own.
        models = [(self.student, "the student")]
        if self.teachers is not None:
            models += [(m, f"teacher {i}") for i, m in enumerate(self.teachers.members)]
        for model, name in models:
            if not model.built:
                ensemble_lib.single_output(model(inputs), name)
        if self.teachers is not None and not self.teachers.built:
            self.teachers.build(shape)

    def call(self, inputs, training=False):
        inputs, _ = split_teacher_logits(inputs)
        return self.student(inputs, training=training)

    def _student_forward(self, inputs, training):
        if self.hint is None:
            logits = ensemble_lib.single_output(self.student(inputs, training=training),
                                                "the student")
            # Static: checked once per trace, for students whose width shows only here.
            _check_classes(logits.shape[-1], self.student_loss, self.distillation_loss,
                           self._with_teachers)
            return logits, None
        logits, features = self._student_with_features(inputs, training=training)
        return logits, self.hint_adapter(features)

    def _cached_logits(self, teacher_logits):
        """Precomputed teacher outputs as logits (see teacher_outputs; with one kind per
        teacher they are the ensemble's output, logits)."""
        if teacher_logits is not None and self.teacher_outputs == "probabilities":
            return ensemble_lib.probabilities_to_logits(teacher_logits)
        return teacher_logits

    def _teacher_forward(self, inputs, teacher_logits):
        """(teacher logits, teacher hint features or None), outside any gradient tape."""
        if self.hint is None and teacher_logits is not None:
            return teacher_logits, None
        if self.teachers is None:
            raise ValueError(
                "alpha < 1 needs teacher outputs: pass teachers to the Distiller or feed "
                "batches with precomputed teacher_logits (see tfkd.with_teacher_logits)")
        if self.hint is None:
            return self._inference_teachers()(inputs, training=False), None
        first_outputs, features = self._teacher_with_features(inputs, training=False)
        if teacher_logits is None:
            outputs = [first_outputs] + [m(inputs, training=False)
                                         for m in self.teachers.members[1:]]
            outputs = ensemble_lib.as_logits(outputs, self.teachers.output_kinds)
            teacher_logits = ensemble_lib.average_logits(outputs, self.teachers.average)
        return teacher_logits, features

    def _needs_teachers(self, teacher_logits):
        return self.hint is not None or (
            teacher_logits is None and (self.alpha != 1.0 or self.teachers is not None))

    # -- loss and steps ------------------------------------------------------

    def _loss_terms(self, y, student_logits, teacher_logits, student_features,
                    teacher_features, sample_weight):
        """Each term as returned by its Keras Loss, i.e. already divided by the replica count."""
        terms = {"student_loss": self.student_loss(y, student_logits, sample_weight)}
        if teacher_logits is not None:
            terms["distillation_loss"] = self.distillation_loss(
                ops.stop_gradient(teacher_logits), student_logits, sample_weight)
        if self.hint is not None:
            terms["hint_loss"] = self.hint_loss(
                ops.stop_gradient(teacher_features), student_features, sample_weight)
        # Terms with weight 0 are left out, not multiplied by 0, so that alpha = 1
        # is exactly plain cross-entropy and a NaN in an unused term cannot leak.
        weighted = []
        if self.alpha != 0.0:
            weighted.append(terms["student_loss"] if self.alpha == 1.0
                            else self.alpha * terms["student_loss"])
        if self.alpha != 1.0:
            weighted.append((1.0 - self.alpha) * terms["distillation_loss"])
        if self.hint is not None and self.hint.weight > 0.0:
            weighted.append(self.hint.weight * terms["hint_loss"])
        regularization = self.student.losses
        if regularization:
            # Keras Loss objects divide by the replica count; these raw sums must too.
            weighted.append(ops.sum(regularization) / _replicas())
        terms["loss"] = weighted[0] if len(weighted) == 1 else ops.sum(ops.stack(weighted))
        return terms

    def compile_from_config(self, config):
        # NOTE: keras.saving.load_model does not replay compile() for a model that overrides
        # it (it warns and leaves the model "compiled" with no optimizer). Ours takes
        # Keras's own arguments, so the saved optimizer and metrics can be replayed.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            # The optimizer's variables must exist for its saved state to be loaded into them.
            self.optimizer.build(self.trainable_variables)

    def compile(self, optimizer="adam", metrics=None, **kwargs):
        """keras.Model.compile without `loss`: the Distiller builds its own.

        `metrics` compare the labels with the student's logits ("accuracy" by default).
        """
        if kwargs.get("loss") is not None:
            raise ValueError("the Distiller builds its own loss; set student_loss= and "
                             "distillation_loss= in its constructor instead of compile(loss=)")
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, metrics=["accuracy"] if metrics is None else metrics,
                        **kwargs)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        inputs, teacher_logits = split_teacher_logits(x)
        cached = teacher_logits is not None
        teacher_logits = self._cached_logits(teacher_logits)
        teacher_features = None
        if self._needs_teachers(teacher_logits):
            teacher_logits, teacher_features = self._teacher_forward(inputs, teacher_logits)
        with tf.GradientTape() as tape:
            student_logits, student_features = self._student_forward(inputs, training=True)
            _check_widths(student_logits, teacher_logits, cached)
            terms = self._loss_terms(y, student_logits, teacher_logits, student_features,
                                     teacher_features, sample_weight)
            share = _batch_share(y)
            loss = terms["loss"] if share is None else terms["loss"] * share
            loss = self.optimizer.scale_loss(loss)
        trainable_weights = self.trainable_weights
        gradients = tape.gradient(loss, trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, trainable_weights))
        logs = self._update_metrics(x, terms, y, student_logits, teacher_logits, sample_weight)
        return self._shape_logs(logs)

    def test_step(self, data):
        """The student's own metrics: loss is its ground-truth loss."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        inputs, teacher_logits = split_teacher_logits(x)
        cached = teacher_logits is not None
        teacher_logits = self._cached_logits(teacher_logits)
        student_logits = self.student(inputs, training=False)
        if teacher_logits is None and self.teachers is not None:
            teacher_logits = self._inference_teachers()(inputs, training=False)
        _check_widths(student_logits, teacher_logits, cached)
        terms = {"loss": self.student_loss(y, student_logits, sample_weight)}
        logs = self._update_metrics(x, terms, y, student_logits, teacher_logits, sample_weight)
        return self._shape_logs(logs)

    def _shape_logs(self, logs):
        """Per-step logs with a leading dimension of 1 across workers, so axis 0 exists."""
        # NOTE: Keras 3's TensorFlow trainer reduces the per-step logs under
        # MultiWorkerMirroredStrategy with strategy.reduce("MEAN", v, axis=0), which fails
        # on scalars (keras-team/keras#20585).
        if not _multi_worker(self.distribute_strategy):
            return logs
        return {k: ops.reshape(v, (1,)) for k, v in logs.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # NOTE: Keras builds a model from its first batch here only under a tf.distribute
        # strategy; otherwise it waits for the first traced step, after callbacks such as
        # BackupAndRestore have found the model unbuilt and the optimizer without variables
        # to restore. The Distiller always builds here (models, compiled metrics, optimizer),
        # from one local replica's batch where Keras averages the replicas' (which fails
        # under MultiWorkerMirroredStrategy, keras-team/keras#20585): shapes are all it needs.
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        if data_batch is None:
            return
        strategy = self.distribute_strategy
        data_batch = tf.nest.map_structure(lambda v: _first_replica(v, strategy), data_batch)
        self._check_batch(data_batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)
            self._fold(data_batch)

    def _fold(self, batch):
        """Makes the teachers' inference copy (`_inference.teachers`) from a first batch."""
        if self.teachers is None or self._inference.teachers is not None:
            return
        x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        inputs, teacher_logits = split_teacher_logits(x)
        if not self.fold_teachers or self.hint is not None:
            self._inference.teachers = self.teachers
        elif teacher_logits is None:  # batches of cached logits need no teachers
            sample = tf.nest.map_structure(lambda v: v[:8], inputs)
            self._inference.teachers, self._inference.folds = ensemble_lib.for_inference(
                self.teachers, sample)

    def _inference_teachers(self):
        # As given until _fold ran (a train_step traced by hand, without fit).
        return self._inference.teachers or self.teachers

    def refold_teachers(self):
        """Folds the teachers' current weights into their inference copy again."""
        for folded in self._inference.folds:
            folded.refresh()

    def load_weights(self, *args, **kwargs):
        """keras.Model.load_weights, with the optimizer's state too when compiled.

        NOTE: a freshly compiled Distiller's optimizer has no slots yet, and Keras then
        skips the saved optimizer state with a warning ("Skipping variable loading for
        optimizer") that makes users doubt their weights loaded. Building the optimizer
        first loads that state as well, as for a model that has trained.
        """
        optimizer = getattr(self, "optimizer", None)
        if self.built and optimizer is not None and not optimizer.built:
            optimizer.build(self.trainable_variables)
        super().load_weights(*args, **kwargs)
        self.refold_teachers()

    def _check_batch(self, batch):
        """Builds what is not built yet from a first batch; refuses teacher outputs that
        cannot teach: probabilities read as logits (or the reverse), non-finite outputs (a
        teacher with NaN weights), and a temperature at which the distillation loss of
        finite outputs is not finite. Each is a TeacherOutputError naming the cause, where
        training would otherwise diverge with a message blaming the learning rate."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        inputs, teacher_logits = split_teacher_logits(x)
        if not self.built or (self.teachers is not None and not self.teachers.built):
            self.build(tf.nest.map_structure(lambda v: (None,) + tuple(v.shape[1:]), x))
        if self.alpha == 1.0:
            return
        sample = tf.nest.map_structure(lambda v: v[:_PROBE_EXAMPLES], inputs)
        if teacher_logits is not None:
            _check_finite(teacher_logits[:64], "the precomputed teacher_logits",
                          "the teachers that computed them")
            kind = "probabilities" if self.teacher_outputs == "probabilities" else "logits"
            problem = ensemble_lib.kind_problem(teacher_logits[:64], kind)
            if problem and kind == "logits":
                raise TeacherOutputError(
                    "the precomputed teacher_logits are probabilities (non-negative, each row "
                    "sums to 1), which would be read as logits; pass "
                    "teacher_outputs='probabilities' (or their log)")
            if problem:
                raise TeacherOutputError(f"the precomputed teacher_logits: teacher_outputs "
                                         f"{problem}; pass teacher_outputs='logits'")
            targets = teacher_logits[:_PROBE_EXAMPLES]
        elif self.teachers is not None and not self._teachers_probed:
            # Once per Distiller, on a few examples: a softmax the constructor could not see
            # (a subclassed teacher, a Lambda), logits declared as probabilities, or damaged
            # weights show in the values.
            self._teachers_probed = True
            kinds = self.teachers.output_kinds
            outputs = []
            for i, (member, kind) in enumerate(zip(self.teachers.members, kinds)):
                output = ensemble_lib.single_output(member(sample, training=False),
                                                    f"teacher {i}")
                _check_finite(output, f"teacher {i} ({member.name})", "its weights", teacher=i)
                problem = ensemble_lib.kind_problem(output, kind)
                if problem:
                    other = "logits" if kind == "probabilities" else "probabilities"
                    raise TeacherOutputError(
                        f"teacher {i} {problem}; declare it {other!r} in teacher_outputs "
                        "(one kind, or a list of one per teacher; member_outputs= for an "
                        "Ensemble of yours)", teacher=i)
                outputs.append(output)
            targets = ensemble_lib.average_logits(ensemble_lib.as_logits(outputs, kinds),
                                                  self.teachers.average)
        else:
            return
        self._check_temperature(sample, targets)

    def _check_temperature(self, sample, teacher_logits):
        """A TeacherOutputError if the distillation loss of these finite teacher outputs and
        the student's finite outputs is not finite: the temperature is the cause (T^2 * KL
        overflows float32 for T near 1e20, softmax(z / T) for T near 1e-40)."""
        student_logits = self.student(sample, training=False)
        if not np.isfinite(np.asarray(student_logits, dtype=np.float64)).all():
            return  # not the temperature's doing; divergence is reported when it happens
        if tuple(student_logits.shape) != tuple(teacher_logits.shape):
            return  # other widths: the step's _check_widths names both
        value = float(self.distillation_loss(teacher_logits, student_logits))
        if not math.isfinite(value):
            raise TeacherOutputError(
                f"temperature={self.temperature:g} makes the distillation loss {value} on the "
                "first batch, although the teachers' and the student's outputs are finite: the "
                "soft targets overflow float32 at this temperature; choose a temperature "
                "such as 1 to 20")

    def _update_metrics(self, x, terms, y, student_logits, teacher_logits, sample_weight):
        """The step's logs: compiled metrics and the trackers this step updated, no others."""
        batch_size = ops.shape(student_logits)[0]
        updated = set()
        for name, value in terms.items():
            tracker = self._trackers[name]
            if tracker is None:  # e.g. cached teacher logits fed to an alpha = 1 Distiller
                continue
            # Loss values come divided by the replica count; the trackers show the
            # global-batch loss, as Keras's own loss tracker does.
            tracker.update_state(value * _replicas(), sample_weight=batch_size)
            updated.add(name)
        agreement = self._trackers["teacher_agreement"]
        # Every example counts once, as in the metrics compile(metrics=...) reports beside
        # it (Keras weighs only compile(weighted_metrics=...) by sample_weight). One output
        # unit (regression) has no top-1 class to agree on.
        if teacher_logits is not None and agreement is not None and student_logits.shape[-1] != 1:
            agreement.update_state(student_logits, teacher_logits)
            updated.add("teacher_agreement")
        logs = self.compute_metrics(x, y, student_logits, sample_weight)
        # A tracker not updated (validation without teacher outputs; the training terms
        # in test_step) would report its initial 0.0 as if it had been measured.
        return {k: v for k, v in logs.items() if k not in self._trackers or k in updated}

    @property
    def metrics(self):
        own = [m for m in self._trackers.values() if m is not None]
        # Keras adds a "loss" tracker of its own in compile(); ours is the one updated.
        keras_metrics = [m for m in super().metrics
                         if m.name != "loss" and not any(m is o for o in own)]
        return own + keras_metrics

    # -- serialisation -------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "student": keras.saving.serialize_keras_object(self.student),
            "teachers": (keras.saving.serialize_keras_object(self.teachers)
                         if self.teachers is not None else None),
            "teacher_outputs": self.teacher_outputs,
            "alpha": self.alpha,
            "temperature": self.temperature,
            "distillation_loss": keras.saving.serialize_keras_object(self.distillation_loss),
            "hint": dataclasses.asdict(self.hint) if self.hint else None,
            "student_loss": keras.saving.serialize_keras_object(self.student_loss),
            "seed": self.seed,
            "extrapolate": self.extrapolate,
            "fold_teachers": self.fold_teachers,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teachers", "distillation_loss", "student_loss"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
