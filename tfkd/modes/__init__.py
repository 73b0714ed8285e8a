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

# Modes that enter the distribution strategy's scope themselves (see tune.run).
OWN_STRATEGY_SCOPE = ("tune",)


def get_mode(name):
    """The run function of mode `name`."""
    return importlib.import_module(MODES[name]).run
