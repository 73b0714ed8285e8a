"""Modes: each a function run(config, workdir, ...) -> result rows, all through one fit path
(`tfkd.modes.fit`).

The registry maps a mode's name to its module and is importable without TensorFlow, so the
settings schema takes its choice list from here (`--mode`) while a mode's module, and
whatever it imports, loads only when that mode runs.
"""

import importlib

MODES = {
    "pipeline": "tfkd.modes.pipeline",
    "train": "tfkd.modes.train",
    "ensemble": "tfkd.modes.ensemble",
    "distill": "tfkd.modes.distill",
    "self_distill": "tfkd.modes.self_distill",
    "joint": "tfkd.modes.joint",
    "tune": "tfkd.modes.tune",
    "analyze": "tfkd.modes.analyze",
}



def self_distill_fits(config):
    """How many models the self-distillation chains train: one per step and member, two
    with alpha=optimal (the alpha = 0 probe and the step)."""
    fits_per_step = 2 if "optimal" in config.step_alphas() else 1
    return config.num_models * config.self_distill_steps * fits_per_step


# How many models each mode trains at most (members it trains when they are missing
# included), from the settings alone: arithmetic, no TensorFlow, so that the settings can
# refuse a slip (--num_models=1000) before anything loads. One entry per mode in MODES.
FITS = {
    "pipeline": lambda c: c.num_models + 1 + self_distill_fits(c),
    "train": lambda c: c.num_models,
    "ensemble": lambda c: 0,
    "distill": lambda c: 1,
    "self_distill": lambda c: c.num_models + self_distill_fits(c),
    "joint": lambda c: 1,
    "tune": lambda c: c.max_trials,
    "analyze": lambda c: 2 * c.analysis_students - 1,
}


# How many teachers each student a mode trains has (None: the mode trains no student): a
# method that weighs several teachers is refused before anything loads where it has one.
# One entry per mode in MODES.
TEACHERS = {
    # Its distilled student; the self-distillation students have one member each, and a
    # method that needs more leaves them out (tfkd.modes.pipeline).
    "pipeline": lambda c: c.num_models,
    "train": lambda c: None,
    "ensemble": lambda c: None,
    "distill": lambda c: c.num_models,
    "self_distill": lambda c: 1,
    "joint": lambda c: None,
    "tune": lambda c: c.num_models,
    "analyze": lambda c: c.num_models,
}


def planned_fits(config):
    """How many models a run of `config` trains at most (see FITS)."""
    return FITS[config.mode](config)


def plan_text(config):
    """One line of what a run will train, for its start."""
    fits = planned_fits(config)
    return (f"plan: at most {fits} model fit{'s' if fits != 1 else ''} of {config.epochs} "
            f"epoch{'s' if config.epochs != 1 else ''} each" if fits else
            "plan: no model to train")


# Modes that enter the distribution strategy's scope themselves (see tune.run).
OWN_STRATEGY_SCOPE = ("tune",)


def get_mode(name):
    """The run function of mode `name`."""
    return importlib.import_module(MODES[name]).run
