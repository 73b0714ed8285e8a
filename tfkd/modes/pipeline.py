"""pipeline: train, ensemble, distill, self_distill, in order, on one workdir."""

from tfkd.modes import common, distill, ensemble, self_distill, train


def run(config, workdir, splits=None, progress=None):
    splits = splits or common.load_splits(config)
    # Members, the distilled student, and every self-distillation fit (two per step
    # with alpha=optimal: the alpha = 0 probe and the step).
    fits_per_step = 2 if "optimal" in config.step_alphas() else 1
    progress = progress or common.Progress(
        config.num_models * (1 + config.self_distill_steps * fits_per_step) + 1)
    rows = []
    for stage in (train, ensemble, distill, self_distill):
        rows += stage.run(config, workdir, splits, progress)
    return rows
