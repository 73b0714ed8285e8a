"""tune: a keras-tuner search over the distillation hyper-parameters.

The ensemble of the members in --teacher_dir (default --workdir; trained first if
missing) teaches one student per trial, built exactly as `distill` builds it, with the
trial's temperature (log scale), alpha, learning rate and, with --hint_layer, hint weight,
and the method (among --tune_methods) with its own settings, each searched in the trials
that run its method (--tune_params picks which are searched; the others keep their flag
values). The objective is the student's validation
accuracy; the test split is never looked at. The teachers' logits are computed once into
the workdir's cache, so no trial runs a teacher (with --augment the teachers must see each
augmented batch and run online; with a hint loss the first teacher runs for its features).

    <workdir>/tune/<project>/   keras-tuner's state: a re-run continues the search
    <workdir>/tune/best.flags   the best trial as a flagfile for --mode=distill
    <workdir>/tune/trials.{md,csv,png}   every trial, and the objective against T and alpha
"""

import csv
import dataclasses
import io
import os

import keras_tuner as kt
import numpy as np
import tensorflow as tf
from absl import logging

from tfkd import choices
from tfkd.choices import SEARCHABLE, load
from tfkd.config import FIELDS, ConfigError, identity_fields, identity_of
from tfkd.modes import fit, inputs, store, train
from tfkd.report import cell, markdown_table
from tfkd.workdir import save_figure, write_text

# {name: keras-tuner class}, the names those of tfkd.choices; what --tune_params may search
# (and the scale of each) is listed there too.
TUNERS = {name: load(target) for name, target in choices.TUNERS.items()}
OBJECTIVE = "val_accuracy"


def trial_config(hp, config):
    """The config of one trial: the searched settings drawn from `hp`, the others as given.

    The method first (a choice among --tune_methods); a method's own setting is a
    hyper-parameter conditional on its method (keras-tuner's parent_name/parent_values):
    drawn only in the trials that run that method, absent from the others' values."""
    values = {}
    if "distillation_loss" in config.tune_params:
        values["distillation_loss"] = hp.Choice("distillation_loss", list(config.tune_methods))
    for name in config.tune_params:
        if name == "distillation_loss":
            continue
        condition = {}
        owners = FIELDS[name].metadata["methods"]
        if owners and "distillation_loss" in config.tune_params:
            condition = dict(parent_name="distillation_loss",
                             parent_values=[m for m in config.tune_methods if m in owners])
        value = hp.Float(name, *getattr(config, f"tune_{name}"), sampling=SEARCHABLE[name],
                         **condition)
        if value is not None:  # None: its method is not this trial's
            values[name] = value
    return dataclasses.replace(config, **values)


class DistillHyperModel(kt.HyperModel):
    """Builds and fits the `distill` student for one trial's hyper-parameters, through the
    same fit path as `distill` (`tfkd.modes.fit`); `plan` says how it meets its teachers."""

    def __init__(self, config, splits, *, seed, plan):
        super().__init__(name="distill")
        self.config, self.splits, self.seed, self.plan = config, splits, seed, plan

    def build(self, hp):
        config = trial_config(hp, self.config)
        student = fit.build_student(config, self.splits, self.seed, "student")
        distiller = fit.make_distiller(config, self.splits, student, self.plan,
                                       alpha=config.alpha, seed=self.seed)
        return distiller

    def fit(self, hp, model, *args, epochs=None, initial_epoch=0, callbacks=None, **kwargs):
        # Hyperband continues a trial from an earlier one's weights: initial_epoch > 0.
        epochs = epochs or self.config.epochs
        train_data, val_data = fit.make_datasets(self.config, self.splits, self.seed,
                                                 self.plan, epochs=epochs,
                                                 initial_epoch=initial_epoch)
        return model.fit(train_data, validation_data=val_data, epochs=epochs,
                         initial_epoch=initial_epoch,
                         steps_per_epoch=fit.steps_per_epoch(self.config, self.splits),
                         shuffle=False, callbacks=callbacks, verbose=self.config.verbose)


def tuner_seed(seed):
    """keras-tuner's seed for tfkd's --seed: seed + 1. keras-tuner's Oracle takes a seed of
    0 for no seed at all (`seed or random.randint(1, 10000)`), so tfkd's default --seed=0
    passed as it is sampled other trials on every run."""
    return seed + 1


def make_tuner(config, hypermodel, directory, project_name, strategy=None):
    common_args = dict(
        hypermodel=hypermodel, objective=kt.Objective(OBJECTIVE, direction="max"),
        seed=tuner_seed(config.seed), directory=directory, project_name=project_name, overwrite=False,
        distribution_strategy=strategy)
    if config.tuner == "hyperband":
        return kt.Hyperband(max_epochs=config.epochs, factor=3, hyperband_iterations=1,
                            **common_args)
    return TUNERS[config.tuner](max_trials=config.max_trials, **common_args)


def run(config, workdir, splits=None, progress=None, strategy=None):
    """The search. `strategy`: the distribution strategy every trial builds and trains
    under. NOTE: keras-tuner clears the Keras session before each trial, which drops any
    strategy scope entered around the search, so it must enter the scope itself per trial;
    the command therefore calls this mode outside its usual `strategy.scope()`."""
    splits = splits or inputs.load_splits(config)
    strategy = strategy or tf.distribute.get_strategy()
    if train.missing_members(config, workdir):
        with strategy.scope():
            train.run(config, workdir, splits)
    _, teachers = inputs.ensemble_teachers(config, workdir, splits)
    seed = config.seed + config.num_models  # the distilled student's seed
    plan = fit.plan_teachers(config, workdir, splits, teachers, seed,
                             members=fit._reads_members(config))
    hypermodel = DistillHyperModel(config, splits, seed=seed, plan=plan)
    # A project per search: other ranges, tuner or student settings start a new one
    # rather than continuing a search they do not belong to.
    settings = store.model_identity(config, seed=seed, teachers=teachers, alpha=config.alpha,
                                    extra={f: getattr(config, f)
                                           for f in identity_fields("search")})
    project = f"search-{store.state_key(settings)}"
    directory = workdir.tune_path()
    default = strategy is tf.distribute.get_strategy()  # called outside any scope
    tuner = make_tuner(config, hypermodel, directory, project, None if default else strategy)
    done = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    if done:
        logging.info("tune: %d finished trials found in %s; continuing the search", done,
                     os.path.join(directory, project))
    tuner.search(verbose=1)
    trials = trial_rows(tuner)
    if not trials:
        raise ConfigError("tune: no trial finished; see the messages above")
    if workdir.writable:
        write_results(config, trials, directory, inputs.teacher_dir(config, workdir))
    best = trials[0]
    logging.info("tune: best of %d trials: %s = %.4f with %s", len(trials), OBJECTIVE,
                 best[OBJECTIVE], ", ".join(f"{k}={cell(best[k], '{:.4g}')}"
                                            for k in config.tune_params if k in best))
    return []


def trial_rows(tuner):
    """Finished trials, best first: {trial, <hyper-parameters>, val_accuracy}."""
    rows = []
    for trial_id, trial in tuner.oracle.trials.items():
        if trial.status != "COMPLETED" or trial.score is None:
            continue
        rows.append({"trial": trial_id, **trial.hyperparameters.values,
                     OBJECTIVE: float(trial.score)})
    return sorted(rows, key=lambda r: (-r[OBJECTIVE], r["trial"]))


def best_flagfile(config, best, teacher_dir):
    """A flagfile for --mode=distill with the best trial's values and the search's settings:
    every setting of the student's identity, and the members and seeds it was taught by:
    the best trial's method and that method's own settings (none of another method's)."""
    config = dataclasses.replace(config, **{k: best[k] for k in config.tune_params if k in best})
    # The method's own settings all, defaults included: a flagfile says what it runs.
    own = tuple(name for name, f in FIELDS.items()
                if config.distillation_loss in f.metadata["methods"])
    fields = ("num_models", "seed") + tuple(dict.fromkeys(identity_of(config, True) + own))
    values = {f: getattr(config, f) for f in fields if f != "smoke"}
    lines = [f"# The best trial of a `tfkd --mode=tune` search: {OBJECTIVE} "
             f"{best[OBJECTIVE]:.4f} (trial {best['trial']}).",
             "#",
             "#   tfkd --flagfile=<this file> --workdir=<a new workdir>",
             "--mode=distill", f"--teacher_dir={teacher_dir}"]
    for name, value in values.items():
        if value is None or value == ():
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, (tuple, list)):
            lines.append(f"--{name}={','.join(map(str, value))}")
        elif isinstance(value, float):
            lines.append(f"--{name}={value!r}")
        else:
            lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"


def write_results(config, trials, directory, teacher_dir):
    columns = ["trial", *config.tune_params, OBJECTIVE]
    write_text(os.path.join(directory, "best.flags"),
               best_flagfile(config, trials[0], teacher_dir))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(trials)
    write_text(os.path.join(directory, "trials.csv"), buffer.getvalue())
    lines = markdown_table(columns, [[row.get(c) for c in columns] for row in trials],
                           number="{:.4g}")
    write_text(os.path.join(directory, "trials.md"),
               f"# tune: {len(trials)} trials, best first ({OBJECTIVE}, validation split)\n\n"
               + "\n".join(lines) + "\n")
    plot_trials(config, trials, os.path.join(directory, "trials.png"))


def plot_trials(config, trials, path):
    """The objective against each searched hyper-parameter (log axis for T and lr)."""
    save_figure(trials_figure(config, trials), path, dpi=110)


def trials_figure(config, trials):
    """The figure of `plot_trials`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    params = list(config.tune_params)
    figure = Figure(figsize=(4 * len(params), 3.4))
    scores = 100 * np.array([t[OBJECTIVE] for t in trials])
    for i, name in enumerate(params, start=1):
        ax = figure.add_subplot(1, len(params), i)
        # A method's setting: only the trials that ran its method have a value.
        has = [name in t for t in trials]
        values = [t[name] for t in trials if name in t]
        if SEARCHABLE[name] == "choice":  # the methods as categories, in their order
            order = list(config.tune_methods)
            values = [order.index(v) for v in values]
            ax.set_xticks(range(len(order)), order)
            ax.set_xlim(-0.5, len(order) - 0.5)
        ax.scatter(values, scores[has], c=scores[has], cmap="viridis")
        if has[0]:
            ax.scatter(values[:1], scores[:1], marker="*", s=200, color="red", label="best")
        if SEARCHABLE[name] == "log":
            ax.set_xscale("log")
            # Over a range of a decade or less matplotlib labels minor ticks too, or falls
            # back to linear ticks, and the labels overlap. Four ticks spread evenly in
            # log over the searched range, at two significant digits, plain numbers.
            low, high = getattr(config, f"tune_{name}")
            ticks = np.unique([float(f"{v:.2g}") for v in np.geomspace(low, high, 4)])
            ax.set_xlim(low / 1.15, high * 1.15)
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(name)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    # The first panel with the best trial on it (a method's setting may not be).
    for ax in figure.axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
            break
    figure.suptitle(f"tune: {len(trials)} trials ({config.tuner})")
    figure.tight_layout()
    return figure


