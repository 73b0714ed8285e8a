"""Modes: each a function run(config, workdir) -> result rows, all through one Distiller path."""

from tfkd.modes import distill, ensemble, pipeline, self_distill, train

MODES = {
    "pipeline": pipeline.run,
    "train": train.run,
    "ensemble": ensemble.run,
    "distill": distill.run,
    "self_distill": self_distill.run,
}
