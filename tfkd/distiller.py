"""Distiller: one training path for supervised training, distillation and self-distillation.

    loss = alpha * CE(y, student) + sum over terms of weight * term(teacher, student, y)

Each term is a distillation method (`tfkd.terms`): `distillation_loss=` gives one with
weight 1 - alpha, `hint=` a FitNets hint with its own weight, `terms=[(term, weight), ...]`
any list of them. alpha = 1 with no teachers is plain supervised training; alpha = 0 is
pure distillation. Teachers are frozen and always run with `training=False`.

Precomputed teacher outputs: feed `x` as a dict
``{"inputs": x, "teacher_logits": t}`` (see `with_teacher_logits`), t the ensemble's
logits (N, C) or each teacher's (N, M, C); the Distiller then runs no teacher forward pass
unless a term reads what t lacks (a teacher's layers; each teacher's logits).

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
from tfkd import terms as terms_lib
from tfkd.terms import base as terms_base

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


def _check_classes(width, student_loss, terms, logs):
    """A ValueError when the student has one output unit and a loss over classes would read
    it: a softmax over one class is 1, so that loss is exactly 0 and nothing trains; and
    whatever a term refuses for this class count (DKD's 3 or more)."""
    if width is None:
        return
    if width == 1:
        readers = [("student_loss", student_loss)] + [
            (log if log == "distillation_loss" else f"the term {log}",
             getattr(term, "wrapped", term)) for term, log in zip(terms, logs)
            if term.over_classes]
        for argument, loss in readers:
            if losses_lib.over_classes(loss) or isinstance(loss, terms_base.Term):
                raise ValueError(
                    f"the student has one output unit, where {argument} "
                    f"{type(loss).__name__} (a loss over classes) is exactly 0: the built-in "
                    "losses are for classifiers with 2 or more classes. For regression, pass "
                    "student_loss= and distillation_loss= losses of the raw outputs, such as "
                    "keras.losses.MeanSquaredError() (docs/library.md)")
    for term in terms:
        term.check_classes(width)


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
    """What a Distiller runs but does not save: the teachers its steps run (folded, or as
    given) and their folded copies, the feature extractors, the training loop's epoch."""

    teachers = None
    folds = ()
    student_features = None
    teacher_features = None
    epoch = None


def _weighted_terms(terms):
    """[(term, weight)] from a list of terms and (term, weight) pairs, checked."""
    if not isinstance(terms, (list, tuple)):
        raise ValueError(f"terms= takes a list of terms or (term, weight) pairs, got "
                         f"{type(terms).__name__}")
    weighted = []
    for item in terms:
        term, weight = item if isinstance(item, (list, tuple)) and len(item) == 2 else (item, 1.0)
        if not isinstance(term, terms_base.Term):
            raise ValueError(f"terms= entries are tfkd terms (tfkd.terms) or (term, weight) "
                             f"pairs, got {item!r}")
        weight = terms_base.check_number(f"the weight of term {term.name}", weight)
        weighted.append((term, weight))
    if len({id(term) for term, _ in weighted}) != len(weighted):
        raise ValueError("terms= lists one term object twice; make one object per term")
    return weighted


def _extractor(model, layers, role):
    """A functional view of `model` whose outputs are its output and the named layers'
    (sharing its layers, so one forward pass yields all), or None without layers."""
    if not layers:
        return None
    features = [terms_base.layer_output(model, name, role) for name in layers]
    return keras.Model(model.inputs, [model.outputs[0], *features])


def _observed_log(term_log, key):
    """The log name of a value a term observes (Term.observes): "distillation_temperature"."""
    return f"{term_log.removesuffix('_loss')}_{key}"


class _EpochClock(keras.callbacks.Callback):
    """Tells the Distiller's terms the training loop's epoch (counted from 0), for methods
    with an epoch schedule; a resumed fit (initial_epoch, BackupAndRestore) starts at its
    own epoch, so the schedule resumes where it stopped."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


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
      distillation_loss: the method, of weight 1 - alpha: a name of `tfkd.terms.NAMES`
        ("kl", the soft-target KL, T^2-scaled; "dkd", ...), made at `temperature`; a
        term (`tfkd.terms`, e.g. `DKD(beta=8)`); or any `keras.losses.Loss` taking
        (teacher_logits, student_logits). Not used when `terms` is given.
      terms: a list of distillation terms, each a term or a (term, weight) pair, e.g.
        `[(DKD(beta=8), 1.0)]`; the loss is alpha * CE + the weighted terms. The
        Distiller builds one feature extractor per model from the layers they name.
      teacher_average: "logits" or "probabilities", how a list of teachers is
        averaged (an `Ensemble` passed in keeps its own).
      teacher_outputs: what the teachers (and precomputed `teacher_logits`) hold:
        "logits" (default) or "probabilities" (models ending in a softmax), which
        are taken as the logits log(p); or a list of one kind per teacher, to mix
        logits and softmax teachers (precomputed `teacher_logits` are then the
        ensemble's, logits). A teacher whose outputs contradict its kind (a softmax
        declared "logits", rows that are not probabilities declared
        "probabilities") is refused with a ValueError on the first batch.
      hint: optional `Hint` (or a dict of its fields): a FitNets term
        (`tfkd.terms.hint.FitNet`) of weight `hint.weight`, added to the others.
      student_loss: ground-truth loss; by default `tfkd.losses.CrossEntropy`,
        which takes integer labels or one-hot labels. A student of one output unit
        (regression) needs a student_loss and a distillation_loss of raw outputs,
        such as `keras.losses.MeanSquaredError()`: the built-in losses compare
        distributions over classes, exactly 0 for one unit, and are refused there.
      seed: seeds the initialisation of the hint adapter.
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
        yourself, call `refold_teachers()`. Not used when a term reads a teacher's layers.
    """

    def __init__(self, *args, student=None, teachers=None, teacher=None, alpha=0.5,
                 temperature=4.0, distillation_loss="kl", teacher_average=None,
                 teacher_outputs=None, hint=None, student_loss=None, seed=None,
                 extrapolate=False, fold_teachers=True, terms=None, **kwargs):
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
        self.distillation_loss = (distillation_loss if isinstance(
            distillation_loss, (keras.losses.Loss, terms_base.Term))
            else terms_base.as_term(distillation_loss, self.temperature))
        self.student_loss = student_loss or losses_lib.CrossEntropy()
        self.hint = Hint(**hint) if isinstance(hint, dict) else hint
        self.seed = seed
        self.fold_teachers = bool(fold_teachers)
        # The folded teachers, the feature extractors and the epoch, in an object Keras
        # does not track: none of them is part of what the Distiller saves or restores.
        self._inference = _Inference()
        self._inference.epoch = tf.Variable(0, trainable=False, dtype="int64", name="epoch")
        self._explicit_terms = None if terms is None else _weighted_terms(terms)
        specs = []  # (term, weight, log name)
        if self._explicit_terms is None and (self.teachers is not None or self.alpha != 1.0):
            specs.append((terms_base.as_term(self.distillation_loss, self.temperature),
                          1.0 - self.alpha, "distillation_loss"))
        if self.hint is not None:
            specs.append((terms_lib.get("hint")(teacher_layer=self.hint.teacher_layer,
                                                student_layer=self.hint.student_layer,
                                                seed=seed), self.hint.weight, "hint_loss"))
        for term, weight in self._explicit_terms or ():
            name = f"{term.key or term.name}_loss"
            while name in [n for _, _, n in specs] + ["loss", "student_loss"]:
                name = f"{term.key or term.name}_{len(specs)}_loss"
            specs.append((term, weight, name))
        # NOTE: a list of layers, so Keras tracks the weights the terms own (adapters, a
        # temperature): they train, save and restore with the Distiller.
        self.terms = [term for term, _, _ in specs]
        self._term_weights = tuple(weight for _, weight, _ in specs)
        self._term_logs = tuple(name for _, _, name in specs)
        signature = ensemble_lib.model_signature(student)
        _check_classes(signature and signature[1], self.student_loss, self.terms,
                       self._term_logs)
        self._setup_terms(signature and signature[1])

        # NOTE: accuracy and any other label metrics come from compile(metrics=...),
        # so that Keras callbacks (EarlyStopping, ModelCheckpoint) know their direction.
        self._trackers = {
            "loss": keras.metrics.Mean(name="loss"),
            "student_loss": keras.metrics.Mean(name="student_loss"),
            **{name: keras.metrics.Mean(name=name) for name in self._term_logs},
            **{log: keras.metrics.Mean(name=log) for log in (
                _observed_log(name, key) for term, _, name in specs for key in term.observes)},
            "teacher_agreement": (metrics_lib.TeacherAgreement(name="teacher_agreement")
                                  if self._with_teachers else None),
        }
        # Whether the teachers' outputs on a first batch were looked at (see _check_batch).
        self._teachers_probed = False
        if self.student.built and (self.teachers is None or self.teachers.built):
            # Nothing is left to create: Keras's own models are built the same way.
            self.built = True

    @property
    def _with_teachers(self):
        return bool(self.terms)

    @property
    def hint_adapter(self):
        """The first term's adapter, where files saved before terms (tfkd <= c52b635) keep
        the FitNets hint's weights ("hint_adapter/..."): Keras saves an object at the
        first attribute path it meets, so this keeps those files loading."""
        return next((t.adapter for t in self.terms if getattr(t, "adapter", None)), None)

    def _reads(self, what):
        return any(what in term.reads for term in self.terms)

    def _layers_of(self, side):
        """The layer names the terms read from the student or the (first) teacher."""
        names = [n for term in self.terms for n in getattr(term, f"{side}_layers")]
        return tuple(dict.fromkeys(names))

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

    def _setup_terms(self, classes):
        """Each term checks the models and makes its weights; then the feature extractors:
        functional views sharing the models' layers, so one forward pass yields the logits
        and every layer the terms read."""
        teacher = self.teachers.members[0] if self.teachers is not None else None
        count = len(self.teachers.members) if self.teachers is not None else None
        for term in self.terms:
            if count is not None and count < term.min_teachers:
                raise ValueError(f"{type(term).__name__} weighs each teacher's own logits: it "
                                 f"needs {term.min_teachers} or more teachers, got {count}")
            term.setup(self.student, teacher, classes)
        self._inference.student_features = _extractor(self.student, self._layers_of("student"),
                                                      "the student")
        self._inference.teacher_features = (
            _extractor(teacher, self._layers_of("teacher"), "teacher 0")
            if teacher is not None else None)

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
        """The student's outputs: {"logits": ..., "layers": {name: output}} for the terms."""
        extractor = self._inference.student_features
        if extractor is None:
            logits = ensemble_lib.single_output(self.student(inputs, training=training),
                                                "the student")
            # Static: checked once per trace, for students whose width shows only here.
            _check_classes(logits.shape[-1], self.student_loss, self.terms, self._term_logs)
            return {"logits": logits}
        logits, *features = extractor(inputs, training=training)
        return {"logits": logits, "layers": dict(zip(self._layers_of("student"), features))}

    def _cached_outputs(self, teacher_logits):
        """Precomputed teacher outputs as a dict of logits: "logits", the ensemble's, and for
        outputs of each teacher (N, M, C) also "members" (see teacher_outputs; with one kind
        per teacher they are logits already)."""
        if teacher_logits is None:
            return None
        if self.teacher_outputs == "probabilities":
            teacher_logits = ensemble_lib.probabilities_to_logits(teacher_logits)
        if len(teacher_logits.shape) != 3:
            return {"logits": teacher_logits}
        average = self.teachers.average if self.teachers is not None else "logits"
        members = [teacher_logits[:, i] for i in range(teacher_logits.shape[1])]
        return {"logits": ensemble_lib.average_logits(members, average),
                "members": teacher_logits}

    def _teacher_forward(self, inputs, cached):
        """The teachers' outputs the terms read, outside any gradient tape: the cached ones,
        and a forward pass for what the cache lacks (a teacher's layers; each teacher's
        logits)."""
        layers = self._layers_of("teacher")
        members = self._reads("members") and (cached is None or "members" not in cached)
        if cached is not None and not layers and not members:
            return cached
        if self.teachers is None:
            raise ValueError(
                "distillation terms need teacher outputs: pass teachers to the Distiller or "
                "feed batches with precomputed teacher_logits (see tfkd.with_teacher_logits)")
        outputs = dict(cached or {})
        if layers:
            first, *features = self._inference.teacher_features(inputs, training=False)
            outputs["layers"] = dict(zip(layers, features))
            if cached is None or members:
                rest = [m(inputs, training=False) for m in self.teachers.members[1:]]
                logits = ensemble_lib.as_logits([first] + rest, self.teachers.output_kinds)
        elif members:
            logits = self._inference_teachers().member_logits(inputs, training=False)
        elif cached is None:
            outputs["logits"] = self._inference_teachers()(inputs, training=False)
        if "logits" not in outputs:
            outputs["logits"] = ensemble_lib.average_logits(logits, self.teachers.average)
        if members:
            outputs["members"] = ops.stack(logits, axis=1)
        return outputs

    def _needs_teachers(self, cached):
        if cached is None:
            return bool(self.terms) or self.teachers is not None
        return bool(self._layers_of("teacher")) or (
            self._reads("members") and "members" not in cached)

    # -- loss and steps ------------------------------------------------------

    def _loss_terms(self, y, student, teacher, sample_weight):
        """Each term as Keras reduces a loss, i.e. already divided by the replica count."""
        values = {"student_loss": self.student_loss(y, student["logits"], sample_weight)}
        # Terms with weight 0 are left out, not multiplied by 0, so that alpha = 1
        # is exactly plain cross-entropy and a NaN in an unused term cannot leak.
        weighted = []
        if self.alpha != 0.0:
            weighted.append(values["student_loss"] if self.alpha == 1.0
                            else self.alpha * values["student_loss"])
        if teacher is not None:
            teacher = tf.nest.map_structure(ops.stop_gradient, teacher)
            epoch = self._inference.epoch
            for term, weight, name in zip(self.terms, self._term_weights, self._term_logs):
                values[name] = terms_base.reduce(term(teacher, student, labels=y, epoch=epoch),
                                                 sample_weight)
                if weight != 0.0:
                    weighted.append(weight * values[name])
        regularization = self.student.losses
        if regularization:
            # Keras Loss objects divide by the replica count; these raw sums must too.
            weighted.append(ops.sum(regularization) / _replicas())
        values["loss"] = weighted[0] if len(weighted) == 1 else ops.sum(ops.stack(weighted))
        return values

    def fit(self, *args, **kwargs):
        """keras.Model.fit, with the epoch told to the terms (`_EpochClock`)."""
        args = list(args)
        # callbacks is fit's 6th argument: (x, y, batch_size, epochs, verbose, callbacks).
        given = args[5] if len(args) > 5 else kwargs.get("callbacks")
        if isinstance(given, keras.callbacks.CallbackList):
            given = list(given.callbacks)
        callbacks = [_EpochClock(self._inference.epoch), *(given or [])]
        if len(args) > 5:
            args[5] = callbacks
        else:
            kwargs["callbacks"] = callbacks
        return super().fit(*args, **kwargs)

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
        teacher = self._cached_outputs(teacher_logits)
        if self._needs_teachers(teacher):
            teacher = self._teacher_forward(inputs, teacher)
        with tf.GradientTape() as tape:
            student = self._student_forward(inputs, training=True)
            teacher_logits = teacher["logits"] if teacher is not None else None
            _check_widths(student["logits"], teacher_logits, cached)
            values = self._loss_terms(y, student, teacher, sample_weight)
            share = _batch_share(y)
            loss = values["loss"] if share is None else values["loss"] * share
            loss = self.optimizer.scale_loss(loss)
        trainable_weights = self.trainable_weights
        gradients = tape.gradient(loss, trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, trainable_weights))
        logs = self._update_metrics(x, values, y, student["logits"], teacher_logits,
                                    sample_weight)
        for term, name in zip(self.terms, self._term_logs):
            for key, value in term.observed().items():
                # NOTE: a tracker, not the value itself: a replica's own tensor among the
                # step's logs makes Keras average every log's per-replica reading, which
                # miscounts the other trackers under MirroredStrategy.
                log = _observed_log(name, key)
                self._trackers[log].update_state(value)
                logs[log] = self._trackers[log].result()
        return self._shape_logs(logs)

    def test_step(self, data):
        """The student's own metrics: loss is its ground-truth loss."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        inputs, teacher_logits = split_teacher_logits(x)
        cached = teacher_logits is not None
        teacher = self._cached_outputs(teacher_logits)
        teacher_logits = teacher["logits"] if teacher is not None else None
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
        if not self.fold_teachers or self._layers_of("teacher"):
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
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        inputs, teacher_logits = split_teacher_logits(x)
        if not self.built or (self.teachers is not None and not self.teachers.built):
            self.build(tf.nest.map_structure(lambda v: (None,) + tuple(v.shape[1:]), x))
        if not any(self._term_weights):  # nothing is learnt from the teachers
            return
        sample = tf.nest.map_structure(lambda v: v[:_PROBE_EXAMPLES], inputs)
        if teacher_logits is not None:
            _check_finite(teacher_logits[:64], "the precomputed teacher_logits",
                          "the teachers that computed them")
            kind = "probabilities" if self.teacher_outputs == "probabilities" else "logits"
            rows = np.asarray(teacher_logits[:64])
            problem = ensemble_lib.kind_problem(rows.reshape(-1, rows.shape[-1]), kind)
            if problem and kind == "logits":
                raise TeacherOutputError(
                    "the precomputed teacher_logits are probabilities (non-negative, each row "
                    "sums to 1), which would be read as logits; pass "
                    "teacher_outputs='probabilities' (or their log)")
            if problem:
                raise TeacherOutputError(f"the precomputed teacher_logits: teacher_outputs "
                                         f"{problem}; pass teacher_outputs='logits'")
            targets = self._cached_outputs(tf.convert_to_tensor(
                teacher_logits[:_PROBE_EXAMPLES]))
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
            logits = ensemble_lib.as_logits(outputs, kinds)
            targets = {"logits": ensemble_lib.average_logits(logits, self.teachers.average),
                       "members": ops.stack([ops.cast(z, "float32") for z in logits], axis=1)}
        else:
            return
        labels = None if y is None else tf.nest.map_structure(
            lambda v: v[:_PROBE_EXAMPLES], y)
        self._check_temperature(sample, labels, targets)

    def _check_temperature(self, sample, labels, teacher):
        """A TeacherOutputError if a term's loss of these finite teacher outputs and the
        student's finite outputs is not finite: the temperature is the cause (T^2 * KL
        overflows float32 for T near 1e20, softmax(z / T) for T near 1e-40)."""
        student_logits = self.student(sample, training=False)
        if not np.isfinite(np.asarray(student_logits, dtype=np.float64)).all():
            return  # not the temperature's doing; divergence is reported when it happens
        if tuple(student_logits.shape) != tuple(teacher["logits"].shape):
            return  # other widths: the step's _check_widths names both
        for term in self.terms:
            if term.student_layers or term.teacher_layers or (
                    "labels" in term.reads and labels is None):
                continue
            value = float(term.loss(teacher, {"logits": student_logits}, labels=labels,
                                    epoch=self._inference.epoch))
            if not math.isfinite(value):
                raise TeacherOutputError(
                    f"temperature={self.temperature:g} makes the distillation loss "
                    f"({term.name}) {value} on the first batch, although the teachers' and "
                    "the student's outputs are finite: the soft targets overflow float32 at "
                    "this temperature; choose a temperature such as 1 to 20")

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
            "terms": None if self._explicit_terms is None else [
                [keras.saving.serialize_keras_object(term), weight]
                for term, weight in self._explicit_terms],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teachers", "distillation_loss", "student_loss"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if config.get("terms") is not None:
            config["terms"] = [(keras.saving.deserialize_keras_object(term), weight)
                               for term, weight in config["terms"]]
        return cls(**config)
