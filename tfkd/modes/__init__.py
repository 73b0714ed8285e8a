"""Modes: each a function run(config, workdir) -> result rows, all through one Distiller path."""

from tfkd.modes import distill, ensemble, joint, pipeline, self_distill, train


def _tune(config, workdir, splits=None, progress=None, strategy=None):
    # Deferred: keras-tuner is imported only by the mode that uses it.
    from tfkd.modes import tune

    return tune.run(config, workdir, splits, progress, strategy=strategy)


def _analyze(config, workdir, splits=None, progress=None):
    # Deferred, like tune: the analysis modules and matplotlib serve this mode only.
    from tfkd.modes import analyze

    return analyze.run(config, workdir, splits, progress)


# Modes that enter the distribution strategy's scope themselves (see tune.run).
OWN_STRATEGY_SCOPE = ("tune",)

MODES = {
    "pipeline": pipeline.run,
    "train": train.run,
    "ensemble": ensemble.run,
    "distill": distill.run,
    "self_distill": self_distill.run,
    "joint": joint.run,
    "tune": _tune,
    "analyze": _analyze,
}
