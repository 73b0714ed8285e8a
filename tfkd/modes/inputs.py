"""What a mode starts from: the data splits (with --smoke and the checks that need the
data), and the members that teach (from the workdir or --teacher_dir)."""

import os

from tfkd.config import ConfigError
from tfkd.data import DatasetError, load_dataset
from tfkd.ensemble import Ensemble, model_signature
from tfkd.models import input_problem, models_for
from tfkd.modes import fit, results, store

SMOKE_EXAMPLES = 256


def load_splits(config):
    try:
        splits = load_dataset(config.dataset, val_size=config.val_size or None,
                              data_dir=config.data_dir, image_size=config.image_size or None,
                              input_scaling=config.input_scaling)
    except DatasetError as e:
        raise ConfigError(str(e)) from None
    problem = input_problem(config.model, splits.input_shape)
    if problem:  # found before anything trains, not when the first model is built
        raise ConfigError(f"model: {problem} ({config.dataset}); models that read this data: "
                          f"{', '.join(models_for(splits.input_shape))}")
    if config.augment != "none" and len(splits.input_shape) != 3:
        raise ConfigError(f"--augment={config.augment} needs images; {config.dataset} inputs "
                          f"have shape {splits.input_shape}")
    if config.train_size:
        if config.train_size > len(splits.x_train):
            raise ConfigError(f"train_size={config.train_size} exceeds the {len(splits.x_train)} "
                              f"training examples of {config.dataset}; give at most "
                              f"{len(splits.x_train)}, or 0 for all")
        # Stratified, not the first N: data stored in class order would give one class.
        splits = splits.subset(train=config.train_size)
    if config.smoke:
        # A few batches: at most 4 steps per epoch.
        n = min(SMOKE_EXAMPLES, 4 * config.batch_size)
        splits = splits.subset(train=n, val=n // 2, test=n // 2)
    # Checked before any training, not when the first student is reached.
    check_method(config, splits)
    if config.hint_layer:
        check_hint_layers(config, splits)
    return splits


def check_method(config, splits):
    """A ConfigError unless the run's distillation method serves this data (DKD and NKD need
    3 or more classes) and the teachers each student has (a multi-teacher method 2 or more)."""
    from tfkd.modes import TEACHERS

    teachers = TEACHERS[config.mode](config)
    if teachers is None:
        return
    for name in config.run_methods():
        _check_one_method(config, splits, name, teachers)


def _check_one_method(config, splits, name, teachers):
    from tfkd import terms

    try:
        terms.from_settings(name, config).check_classes(splits.num_classes)
    except ValueError as e:
        raise ConfigError(f"distillation_loss={name}: {e} ({config.dataset})") from None
    needed = terms.get(name).min_teachers
    if teachers < needed:
        who = (f"--mode={config.mode} trains self-distillation students, of one teacher each"
               if config.mode == "self_distill"
               else f"this run has --num_models={config.num_models}")
        raise ConfigError(f"distillation_loss={name} weighs each teacher's own logits and needs "
                          f"{needed} or more teachers, but {who}; use --mode=distill with "
                          f"--num_models={needed} or more, or --distillation_loss=kl")


def check_hint_layers(config, splits):
    """A ConfigError unless the student architecture has the --hint_layer layer(s).

    The teacher's layer is checked here only when the teachers are of the student's
    architecture (no --teacher_dir); teachers from elsewhere may be another network, and
    the Distiller checks them once they are loaded.
    """
    hint = config.hint()
    model = fit.build_student(config, splits, 0, "hint_check")
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


def teacher_dir(config, workdir):
    """Where the members that teach live: --teacher_dir, or else the run's own workdir."""
    return os.path.abspath(config.teacher_dir) if config.teacher_dir else workdir.root


def load_members(config, workdir, splits):
    """The members that teach this run, as they are: (models, their files); a ConfigError
    if one cannot read `splits` or predicts other classes."""
    directory = teacher_dir(config, workdir)
    how = (f"run --mode=train --workdir={directory} first, or --mode=pipeline"
           if directory == workdir.root or os.path.isdir(os.path.join(directory, "models"))
           else "add .keras models to the folder, or lower --num_models")
    members, paths = store.load_members(config, directory, how_to_train=how)
    outside = directory != workdir.root
    for member, path in zip(members, paths):
        shape, classes = model_signature(member)
        if shape != tuple(splits.input_shape) or classes != splits.num_classes:
            raise ConfigError(
                f"teacher {path} takes inputs of shape {shape} and predicts {classes} "
                f"classes, but {config.dataset} has inputs of shape {tuple(splits.input_shape)} "
                f"and {splits.num_classes} classes; give the --dataset its members were "
                "trained on, or teachers of this data (--teacher_dir)")
    if outside and workdir.writable:
        # Teachers from elsewhere are evaluated on this run's data: their rows go into the
        # results table, and one that scores far below its own record is warned about.
        results.record_teachers(workdir, splits, members, paths)
    return members, paths


def ensemble_teachers(config, workdir, splits):
    """The members' ensemble as the `Teachers` of a student: (members, teachers)."""
    members, paths = load_members(config, workdir, splits)
    ensemble = Ensemble(members, average=config.teacher_average, name="teachers")
    return members, fit.Teachers(ensemble, "ensemble", tuple(paths))
