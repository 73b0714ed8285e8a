"""The one fit path: build the student, make the Distiller with cached or online teachers,
make the datasets, fit, save. Every mode and tune's HyperModel go through it.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfkd import cache, optim, resume, runtime, terms
from tfkd.choices import CHECKPOINTS
from tfkd.config import ConfigError, TrainingError
from tfkd.data import make_tf_dataset
from tfkd.distiller import Distiller, TeacherOutputError, check_teachers
from tfkd.models import build_model
from tfkd.modes import results, store

EVAL_BATCH = 512

# --smoke keeps a recipe's architecture family but not its size: a WRN-28-10 step takes
# seconds on a CPU, and a smoke run exercises the recipe's wiring, not its capacity.
SMOKE_MODELS = {
    "wrn": ("wrn", {"depth": 10, "width": 1}),
    "wrn28_10": ("wrn", {"depth": 10, "width": 1}),
    "wrn16_4": ("wrn", {"depth": 10, "width": 1}),
    "wrn16_1": ("wrn", {"depth": 10, "width": 1}),
    "resnet18": ("resnet18", {"width": 8, "blocks_per_stage": (1, 1, 1, 1)}),
    "resnet50": ("resnet50", {"width": 8, "blocks_per_stage": (1, 1, 1, 1)}),
}


def architecture(config):
    """(registered model name, builder keyword arguments) of config.model, --smoke applied."""
    if config.smoke and config.model in SMOKE_MODELS:
        return SMOKE_MODELS[config.model]
    return config.model, {}


def build_student(config, splits, seed, name):
    # Named after its workdir entry: a Distiller's teachers and student need distinct
    # names, also when the teachers were loaded from files written by another process.
    model, kwargs = architecture(config)
    return build_model(model, splits.input_shape, splits.num_classes, seed=seed,
                       model_name=name, **kwargs)


@dataclasses.dataclass(frozen=True)
class Teachers:
    """The teachers of a student: one model (a member, an `Ensemble`, a chain's last step),
    the name its students record, and its files, whose content hash is its identity."""

    model: keras.Model
    name: str
    paths: tuple = ()

    @property
    def identity(self):
        return cache.fingerprint(self.paths, ()) if self.paths else self.name


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherPlan:
    """How a student meets its teachers: `online` runs in every step (None: not at all),
    `train_logits` / `val_logits` are the teachers' cached outputs (None: not cached).
    `distilled` is False for a model trained on the labels alone."""

    online: object = None
    train_logits: object = None
    val_logits: object = None
    distilled: bool = False
    view_logits: object = None


def _reads_members(config):
    """Whether the run's distillation terms read each member's logits, not only the
    ensemble's: then the teacher caches hold every member's (`plan_teachers`)."""
    return "members" in terms.reads(config)


def plan_teachers(config, workdir, splits, teachers, seed, view_cache=True, *,
                  members=False):
    """The one place that decides between cached and online teachers.

    Cached when --teacher_cache is on and the teachers are files (their hash names the
    cache): their logits on the training split, or with --augment on every epoch's views
    of it (`store.view_logits`: exact, since a view depends on the augmentation seed, the
    epoch and the example only; online if the cache would be too large, or when the caller
    says no other student will train on those views (`view_cache=False`: building the
    cache would cost what running the teachers online costs, and the disk). Validation
    batches are never augmented. A term reading layers (a hint, a feature method) needs the
    first teacher's features, so that teacher still runs; the cached logits serve the rest.
    With `members`, the cached logits are each member's, (examples, members, classes)
    (`store.teacher_logits`).
    """
    if teachers is None:
        return TeacherPlan()
    if not (config.teacher_cache and teachers.paths):
        return TeacherPlan(online=teachers.model, distilled=True)
    # A term reading a teacher's layers (the hint, a feature method) needs that teacher run.
    online = teachers.model if "layers" in terms.reads(config) else None
    views = None
    if config.augment != "none":
        views = store.view_logits(config, workdir, splits, teachers, seed,
                                  members=members) if view_cache else None
        if views is None:
            return TeacherPlan(online=teachers.model, distilled=True)
    train_logits, val_logits = store.teacher_logits(config, workdir, splits, teachers,
                                                    train=views is None, members=members)
    return TeacherPlan(online=online, train_logits=train_logits, view_logits=views,
                       val_logits=val_logits, distilled=True)


def teacher_cause(error, teachers, splits):
    """The Distiller's first-batch refusal of its teachers' outputs, with the file of the
    teacher at fault when one is known. Cached logits do not say which member made them
    non-finite: then each member is run on a few training examples to find it."""
    if teachers is None or not teachers.paths:
        return str(error)
    members = list(getattr(teachers.model, "members", [teachers.model]))
    index = error.teacher
    if index is None and "precomputed teacher_logits output" in str(error):
        sample = splits.x_train[:8]
        index = next((i for i, member in enumerate(members) if not np.isfinite(
            np.asarray(member(sample, training=False), dtype=np.float64)).all()), None)
    if index is not None and len(teachers.paths) == len(members):
        return f"teacher file {teachers.paths[index]}: {error}"
    return f"{error} (teacher files: {', '.join(teachers.paths)})"


class EpochLog(keras.callbacks.Callback):
    """With --verbose=0, one line per epoch through absl logging, as the run's other
    progress lines: "member_0: epoch 3/30  loss 0.4120  val_accuracy 0.9130  12.3s".
    (--verbose=1 and 2 are Keras's own progress bars and epoch lines instead.)"""

    SHOWN = ("loss", "val_loss", "val_accuracy")

    def __init__(self, name, epochs):
        super().__init__()
        self.name, self.epochs = name, epochs
        self.started = None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        values = "  ".join(f"{key} {float(logs[key]):.4f}" for key in self.SHOWN if key in logs)
        logging.info("%s: epoch %d/%d  %s  %.1fs", self.name, epoch + 1, self.epochs, values,
                     time.time() - self.started)


def steps_per_epoch(config, splits):
    return -(-len(splits.x_train) // config.batch_size)


def make_distiller(config, splits, student, plan, *, alpha, seed):
    """The compiled Distiller of `student` under `config` (its optimiser, schedule, weight
    decay, temperature, loss and hint)."""
    try:
        distiller = Distiller(student=student, teachers=plan.online, alpha=alpha,
                              temperature=config.temperature,
                              distillation_loss=terms.from_settings(config.distillation_loss,
                                                                    config), seed=seed,
                              extrapolate=not config.alpha_clip,
                              hint=config.hint() if plan.distilled else None)
    except ValueError as e:
        raise ConfigError(f"cannot train {student.name}: {e}") from None
    optim.add_weight_decay(student, config.weight_decay, config.optimizer)
    distiller.compile(optimizer=optim.make_optimizer(config, steps_per_epoch(config, splits)),
                      jit_compile=runtime.resolve_jit_compile(config.jit_compile,
                                                              tf.distribute.get_strategy()))
    return distiller


def make_datasets(config, splits, seed, plan, *, epochs=None, initial_epoch=0):
    """(train, validation) tf.data pipelines: training batches indexed by epoch, so a
    resumed fit sees exactly the batches an uninterrupted one would."""
    train = make_tf_dataset(splits.x_train, splits.y_train, batch_size=config.batch_size,
                            shuffle=True, seed=seed, teacher_logits=plan.train_logits,
                            augment=config.augment,
                            augment_seed=store.augment_seed(config, seed),
                            view_logits=plan.view_logits, epochs=epochs or config.epochs,
                            initial_epoch=initial_epoch)
    val = make_tf_dataset(splits.x_val, splits.y_val, batch_size=EVAL_BATCH,
                          teacher_logits=plan.val_logits)
    return train, val


def fit_model(config, workdir, splits, *, name, kind, seed, teachers=None, generation=None,
              progress=None, alpha=None, build=None, extra_settings=None, view_cache=True):
    """Trains one model through the Distiller (alpha = 1 without teachers) and saves it.

    `teachers`: a `Teachers`, or None for a model trained on the labels alone; `alpha`
    overrides config.alpha (a self-distillation step's own ground-truth weight);
    `build(config, splits, seed, name)` replaces `build_student` (e.g. a jointly trained
    average), and `extra_settings` are what else the model's identity holds; `view_cache`
    False: the teachers' outputs on augmented views serve this student alone, so they run
    online instead of being cached (see `plan_teachers`).

    A model already finished in the workdir with the same identity is loaded instead of
    retrained (`tfkd.modes.store`). Returns (model, result row).
    """
    alpha = 1.0 if teachers is None else config.alpha if alpha is None else alpha
    settings = store.model_identity(config, seed=seed, teachers=teachers, alpha=alpha,
                                    extra=extra_settings)
    finished = store.find_finished(config, workdir, name, settings, teachers)
    if finished is not None:
        if progress:
            progress.report(finished[1])
        return finished

    started = time.time()
    keras.utils.set_random_seed(seed)
    student = (build or build_student)(config, splits, seed, name)
    if teachers is not None:
        # Checked before the cache is computed: a refused run computes nothing, and cached
        # teachers never reach the Distiller's own check.
        try:
            check_teachers(teachers.model, student, f"the student {name}")
        except ValueError as e:
            raise ConfigError(f"cannot train {name}: {e}") from None
    plan = plan_teachers(config, workdir, splits, teachers, seed, view_cache,
                         members=_reads_members(config))
    distiller = make_distiller(config, splits, student, plan, alpha=alpha, seed=seed)
    # After every epoch the student's state is saved; a killed run resumes from it.
    state = resume.TrainingState(workdir.state_path(name, store.state_key(settings)), distiller,
                                 keep_best=CHECKPOINTS[config.checkpoint])
    initial_epoch = state.restore()
    if initial_epoch:
        logging.info("%s: resuming after epoch %d of %d", name, initial_epoch, config.epochs)
    if initial_epoch < config.epochs:
        train, val = make_datasets(config, splits, seed, plan, initial_epoch=initial_epoch)
        callbacks = [keras.callbacks.TensorBoard(workdir.logs_path(name)),
                     resume.StopOnDivergence(name, f" (--learning_rate={config.learning_rate:g})"),
                     state]
        if not config.verbose:
            callbacks.append(EpochLog(name, config.epochs))
        try:
            distiller.fit(train, validation_data=val, epochs=config.epochs,
                          initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch(
                              config, splits), shuffle=False, verbose=config.verbose,
                          callbacks=callbacks)
        except resume.TrainingDiverged as e:
            raise TrainingError(str(e)) from None
        except TeacherOutputError as e:
            # Found on the first batch, before any step: the cause named, not a divergence.
            raise ConfigError(f"cannot train {name}: {teacher_cause(e, teachers, splits)}"
                              ) from None
    history = state.finish()

    row = {"name": name, "kind": kind, "seed": seed, "generation": generation,
           "teacher": teachers.name if teachers else None, "alpha": float(alpha),
           **results.evaluate_model(student, splits)}
    # A --smoke run checks wiring on a few batches, where accuracy means nothing.
    verdict, why = (None, None) if config.allow_chance or config.smoke else (
        results.chance_verdict(splits, row["val_accuracy"]))
    if verdict == "too_small":
        logging.warning("tfkd: warning: %s may have learned nothing: %s; kept", name, why)
    elif verdict == "chance":
        # Its state stays: the same command with --allow_chance saves it without training.
        raise TrainingError(
            f"{name} learned nothing in {config.epochs} epochs: {why}; it was not saved. "
            f"Likely causes: a learning rate too high or too low for this model "
            f"(--learning_rate={config.learning_rate:g}), too few epochs, or labels that do "
            "not depend on the inputs; --allow_chance keeps such a model")
    workdir.save_model(student, name)
    workdir.write_metrics(name, {"row": row, "role": kind, "history": history,
                                 "settings": settings,
                                 "sha": store.file_sha(workdir.model_path(name)),
                                 "teacher_files": store.teacher_files(teachers),
                                 "seconds": time.time() - started})
    state.discard()
    if progress:
        progress.report(row, time.time() - started)
    return student, row
