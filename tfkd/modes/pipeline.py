"""pipeline: train, ensemble, distill, self_distill, in order, on one workdir."""

from tfkd.modes import distill, ensemble, inputs, results, self_distill, train


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    # Members, the distilled student, and every self-distillation fit.
    progress = progress or results.Progress(
        config.num_models + 1 + self_distill.num_fits(config))
    rows = []
    for stage in (train, ensemble, distill, self_distill):
        rows += stage.run(config, workdir, splits, progress)
    return rows
