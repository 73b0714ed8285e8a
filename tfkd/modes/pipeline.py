"""pipeline: train, ensemble, distill, self_distill, in order, on one workdir.

A method that weighs several teachers (a multi-teacher one) distils the ensemble's student;
the self-distillation chains, whose students have one teacher each, are then left out,
which the run says."""

from absl import logging

from tfkd import terms
from tfkd.modes import distill, ensemble, inputs, results, self_distill, train


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    stages = [train, ensemble, distill, self_distill]
    if terms.get(config.distillation_loss).min_teachers > 1:
        logging.info("self_distill: left out: --distillation_loss=%s weighs several teachers, "
                     "and a self-distillation student has one", config.distillation_loss)
        stages.remove(self_distill)
    # Members, the distilled student, and every self-distillation fit.
    progress = progress or results.Progress(
        config.num_models + 1 + (self_distill.num_fits(config) if self_distill in stages else 0))
    rows = []
    for stage in stages:
        rows += stage.run(config, workdir, splits, progress)
    return rows
