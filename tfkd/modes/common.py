"""What every mode shares: data, optimiser, one Distiller fit per model, evaluation, progress."""

import dataclasses
import json
import os
import time

import keras
import tensorflow as tf
from absl import logging

from tfkd import cache, metrics, optim, resume, runtime
from tfkd.config import ConfigError, TrainingError
from tfkd.data import DatasetError, load_dataset, make_tf_dataset
from tfkd.distiller import Distiller, check_teachers
from tfkd.ensemble import Ensemble
from tfkd.models import build_model
from tfkd.workdir import Workdir

SMOKE_EXAMPLES = 256
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

# The settings a trained model depends on; a model in the workdir is reused only
# when they match (plus its seed and its teachers).
DATA_SETTINGS = ("dataset", "val_size", "image_size")
TRAINING_SETTINGS = (DATA_SETTINGS + ("model", "epochs", "batch_size", "augment")
                     + optim.OPTIMIZER_SETTINGS + ("checkpoint", "precision", "smoke"))
DISTILLATION_SETTINGS = ("alpha", "temperature", "distillation_loss", "teacher_average")
# Part of a distilled model's settings only when a hint loss is on, so that models
# trained without one keep matching.
HINT_SETTINGS = ("hint_layer", "hint_weight")


def load_splits(config):
    try:
        splits = load_dataset(config.dataset, val_size=config.val_size or None,
                              data_dir=config.data_dir, image_size=config.image_size or None)
    except DatasetError as e:
        raise ConfigError(str(e)) from None
    if config.augment != "none" and len(splits.input_shape) != 3:
        raise ConfigError(f"--augment={config.augment} needs images; {config.dataset} inputs "
                          f"have shape {splits.input_shape}")
    if config.smoke:
        # A few batches: at most 4 steps per epoch.
        n = min(SMOKE_EXAMPLES, 4 * config.batch_size)
        splits = dataclasses.replace(
            splits, x_train=splits.x_train[:n], y_train=splits.y_train[:n],
            x_val=splits.x_val[:n // 2], y_val=splits.y_val[:n // 2],
            x_test=splits.x_test[:n // 2], y_test=splits.y_test[:n // 2])
    if config.hint_layer:
        # Checked before any training, not when the first student is reached.
        check_hint_layers(config, splits)
    return splits


def check_hint_layers(config, splits):
    """A ConfigError unless the student architecture has the --hint_layer layer(s).

    The teacher's layer is checked here only when the teachers are of the student's
    architecture (no --teacher_dir); teachers from another workdir may be another
    network, and the Distiller checks them once they are loaded.
    """
    hint = config.hint()
    model = new_model(config, splits, 0, "hint_check")
    names = [layer.name for layer in model.layers]
    roles = [("student", hint.student_layer)]
    if not config.teacher_dir:
        roles.insert(0, ("teacher", hint.teacher_layer))
    for role, layer in roles:
        if layer not in names:
            shown = ", ".join(names if len(names) <= 30 else names[-30:])
            raise ConfigError(
                f"hint_layer: {config.model} has no layer {layer!r} (the {role}'s hint layer); "
                f"its {'' if len(names) <= 30 else 'last 30 '}layers are: {shown}")


def new_model(config, splits, seed, name):
    # Named after its workdir entry: a Distiller's teachers and student need distinct
    # names, also when the teachers were loaded from files written by another process.
    model, kwargs = config.model, {}
    if config.smoke and config.model in SMOKE_MODELS:
        model, kwargs = SMOKE_MODELS[config.model]
    return build_model(model, splits.input_shape, splits.num_classes, seed=seed,
                       model_name=name, **kwargs)


def evaluate_logits(splits, logits_val, logits_test):
    """A result row's metric fields from validation and test logits."""
    test = metrics.classification_report(splits.y_test, logits_test)
    return {
        "val_accuracy": metrics.accuracy(splits.y_val, logits_val),
        "test_accuracy": test["accuracy"],
        "test_nll": test["nll"],
        "test_ece": test["ece"],
    }


def evaluate_model(model, splits, batch_size=512):
    return evaluate_logits(splits, model.predict(splits.x_val, batch_size=batch_size, verbose=0),
                           model.predict(splits.x_test, batch_size=batch_size, verbose=0))


class Progress:
    """One line per finished (or reused) model: what it is, how good, how long."""

    def __init__(self, total):
        self.total, self.done = total, 0

    def report(self, row, seconds=None):
        self.done += 1
        took = f" in {seconds:.1f}s" if seconds is not None else " (reused)"
        logging.info("[%d/%d] %-28s val %.2f%%  test %.2f%%%s", self.done, self.total,
                     row["name"], 100 * row["val_accuracy"], 100 * row["test_accuracy"], took)


def fit_model(config, workdir, splits, *, name, kind, seed, teachers=None, teacher_name=None,
              teacher_paths=None, generation=None, progress=None, alpha=None, build=None,
              extra_settings=None):
    """Trains one model through the Distiller (alpha = 1 without teachers) and saves it.

    `alpha` overrides config.alpha (a self-distillation step's own ground-truth weight);
    `build(config, splits, seed, name)` replaces `new_model` (e.g. a jointly trained average),
    and `extra_settings` are what else the model depends on.

    A model already finished in the workdir is loaded instead of retrained. With
    `teacher_paths` (the teachers' .keras files) and config.teacher_cache, the
    teachers' logits come from the workdir's cache and no teacher runs in training.
    Returns (model, result row).
    """
    if teachers is None:
        alpha = 1.0
    elif alpha is None:
        alpha = config.alpha
    settings = model_settings(config, seed, teacher_name, teacher_paths, teachers is not None)
    if teachers is not None:
        settings["alpha"] = float(alpha)
    settings.update(extra_settings or {})
    finished = load_finished(config, workdir, name, settings, teacher_paths)
    if finished is not None:
        if progress:
            progress.report(finished[1])
        return finished

    started = time.time()
    keras.utils.set_random_seed(seed)
    student = (build or new_model)(config, splits, seed, name)
    if teachers is not None:
        # Checked here, not only by the Distiller: cached teachers never reach it.
        try:
            check_teachers(teachers, student, f"the student {name}")
        except ValueError as e:
            raise ConfigError(f"cannot train {name}: {e}") from None
    hint = config.hint() if teachers is not None else None
    # With augmentation the teachers must see each augmented batch: no cache then.
    cached = (teachers is not None and config.teacher_cache and bool(teacher_paths)
              and config.augment == "none")
    # A hint needs the first teacher's features: with a cache it still runs, the others not.
    online_teachers = teachers if not cached or hint else None
    try:
        distiller = Distiller(student, online_teachers, alpha=alpha,
                              temperature=config.temperature,
                              distillation_loss=config.distillation_loss, seed=seed,
                              extrapolate=not config.alpha_clip, hint=hint)
    except ValueError as e:
        raise ConfigError(f"cannot train {name}: {e}") from None
    train_logits = val_logits = None
    if cached:  # after the checks above: a refused run computes nothing
        train_logits, val_logits = teacher_logits(config, workdir, splits, teachers,
                                                  teacher_name, teacher_paths)
    steps_per_epoch = -(-len(splits.x_train) // config.batch_size)
    optim.add_weight_decay(student, config.weight_decay, config.optimizer)
    distiller.compile(optimizer=optim.make_optimizer(config, steps_per_epoch),
                      jit_compile=runtime.resolve_jit_compile(config.jit_compile,
                                                              tf.distribute.get_strategy()))
    # After every epoch the student's state is saved; a killed run resumes from it.
    state = resume.TrainingState(
        workdir.state_path(name, state_key(settings)), distiller,
        keep_best="val_loss" if config.checkpoint == "best_val" else None)
    initial_epoch = state.restore()
    if initial_epoch:
        logging.info("%s: resuming after epoch %d of %d", name, initial_epoch, config.epochs)
    if initial_epoch < config.epochs:
        train = make_tf_dataset(splits.x_train, splits.y_train, batch_size=config.batch_size,
                                shuffle=True, seed=seed, teacher_logits=train_logits,
                                augment=config.augment, epochs=config.epochs,
                                initial_epoch=initial_epoch)
        val = make_tf_dataset(splits.x_val, splits.y_val, batch_size=512,
                              teacher_logits=val_logits)
        callbacks = [keras.callbacks.TensorBoard(workdir.logs_path(name)),
                     resume.StopOnDivergence(name, f" (--learning_rate={config.learning_rate:g})"),
                     state]
        try:
            distiller.fit(train, validation_data=val, epochs=config.epochs,
                          initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                          shuffle=False, verbose=config.verbose, callbacks=callbacks)
        except resume.TrainingDiverged as e:
            raise TrainingError(str(e)) from None
    history = state.finish()

    row = {"name": name, "kind": kind, "seed": seed, "generation": generation,
           "teacher": teacher_name, "alpha": float(alpha), **evaluate_model(student, splits)}
    workdir.save_model(student, name)
    workdir.write_metrics(name, {"row": row, "history": history, "settings": settings,
                                 "seconds": time.time() - started})
    workdir.trained.add(workdir.model_path(name))
    state.discard()
    if progress:
        progress.report(row, time.time() - started)
    return student, row


def state_key(settings):
    """A short hash of a model's training settings: a state saved under other settings is
    never resumed."""
    return cache.fingerprint((), json.dumps(settings, sort_keys=True))


def load_finished(config, workdir, name, settings, teacher_paths=None):
    """(model, row) of `name` if the workdir holds it finished with `settings`, else None.

    A finished model trained with other settings is a ConfigError (unless --overwrite);
    an unreadable model or metrics file is reported and the model trained again, and so
    is every student of a teacher trained again in this run.
    """
    if not workdir.has_model(name):
        return None
    try:
        record = workdir.read_metrics(name)
        row = record["row"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return _redo(workdir, name, workdir.metrics_path(name), e)
    retrained = [p for p in teacher_paths or () if p in workdir.trained]
    if retrained and record.get("settings", {}).get("teachers") != settings.get("teachers"):
        logging.info("%s: training it again, its teacher %s was trained again in this run",
                     name, os.path.basename(retrained[0]))
        return None
    if not reusable(config, workdir, name, settings, record):
        return None
    try:
        return workdir.load_model(name), row
    except Exception as e:  # noqa: BLE001 -- Keras raises many kinds for a damaged file
        return _redo(workdir, name, workdir.model_path(name), e)


def _redo(workdir, name, path, error):
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    logging.warning("%s: %s is unreadable (%s: %s); training it again", name, path,
                    type(error).__name__, reason[:200])
    workdir.remove_model(name)
    return None


def model_settings(config, seed, teacher_name, teacher_paths, distilled):
    fields = TRAINING_SETTINGS + (DISTILLATION_SETTINGS if distilled else ())
    if distilled and config.hint_layer:
        fields += HINT_SETTINGS
    settings = {field: getattr(config, field) for field in fields}
    settings["seed"] = seed
    if distilled:
        settings["teachers"] = (cache.fingerprint(teacher_paths, ()) if teacher_paths
                                else teacher_name)
    return json.loads(json.dumps(settings))  # as it reads back from the metrics file


def reusable(config, workdir, name, settings, record=None):
    """True if the finished model `name` was trained with `settings`; with --overwrite a
    mismatch means retrain, without it a ConfigError naming the first difference."""
    record = workdir.read_metrics(name) if record is None else record
    stored = record.get("settings", {})
    changed = [k for k in settings if stored.get(k) != settings[k]]
    # A model trained with a hint does not stand for one trained without.
    changed += [k for k in HINT_SETTINGS if k in stored and k not in settings]
    if not changed:
        return True
    if config.overwrite:
        logging.info("%s: retraining (%s changed; --overwrite)", name, ", ".join(changed))
        return False
    field = changed[0]
    raise ConfigError(
        f"{workdir.root} already holds {name} trained with {field}={stored.get(field)!r}, "
        f"but this run asks for {field}={settings.get(field)!r}; use another --workdir, or "
        "--overwrite to retrain what differs")


def teacher_logits(config, workdir, splits, teachers, teacher_name, teacher_paths):
    """The teachers' (train, validation) logits, from the workdir's cache or computed into it."""
    if runtime.task_from_tf_config() is not None:
        # In a cluster, predict is a collective op: every worker must run it, none may
        # skip it by reading a file that only the chief writes.
        # Rounded as the cache file would be, so a cluster trains what one process does.
        return tuple(cache.predict_logits(teachers, x).astype("float16")
                     for x in (splits.x_train, splits.x_val))
    key = cache.fingerprint(teacher_paths, tuple(getattr(config, f) for f in DATA_SETTINGS)
                            + (config.smoke, len(splits.x_train), len(splits.x_val)))
    return tuple(
        cache.cached_logits(teachers, x, workdir.path("cache", f"{teacher_name}-{key}.{split}.npy"))
        for split, x in (("train", splits.x_train), ("val", splits.x_val)))


def ensemble_row(config, workdir, splits, members, *, name, kind):
    """Evaluates the average of `members`, records it as a result row."""
    ensemble = Ensemble(members, average=config.teacher_average)
    # One pass of the members per split gives both the row and the disagreement.
    report = ensemble.evaluate_members(splits.x_val, splits.y_val)
    test = ensemble.evaluate_members(splits.x_test, splits.y_test)
    row = {"name": name, "kind": kind, "seed": None, "generation": None, "teacher": None,
           **evaluate_logits(splits, report["logits"], test["logits"]),
           "disagreement_val": report["disagreement"]}
    workdir.write_metrics(name, {"row": row, "members": [m.name for m in members]})
    logging.info("%-32s val %.2f%%  test %.2f%%  (%d members, disagreement %.3f)", name,
                 100 * row["val_accuracy"], 100 * row["test_accuracy"], len(members),
                 report["disagreement"] or 0.0)
    return ensemble, row


def teacher_workdir(config, workdir):
    """Where the members that teach live: --teacher_dir, or else the run's own workdir."""
    return Workdir(config.teacher_dir) if config.teacher_dir else workdir


def member_names(config):
    return [f"member_{i}" for i in range(config.num_models)]


def load_members(config, directory):
    """The trained members in `directory` (a Workdir) and their files, or a ConfigError
    saying how to get them."""
    names = member_names(config)
    missing = [n for n in names if not directory.has_model(n)]
    if missing:
        raise ConfigError(
            f"no trained teacher {missing[0]!r} in {directory.root} ({len(missing)} of "
            f"{len(names)} members missing); run --mode=train with --workdir={directory.root} "
            "first, or use --mode=pipeline")
    models = []
    for n in names:
        try:
            models.append(directory.load_model(n))
        except Exception as e:  # noqa: BLE001 -- Keras raises many kinds for a damaged file
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ConfigError(
                f"teacher file {directory.model_path(n)} is unreadable ({type(e).__name__}: "
                f"{reason}); retrain it with --mode=train --workdir={directory.root}") from None
    return models, [directory.model_path(n) for n in names]
