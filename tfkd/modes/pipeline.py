"""pipeline: train, ensemble, distill, self_distill, in order, on one workdir."""

from tfkd.modes import common, distill, ensemble, self_distill, train


def run(config, workdir, splits=None, progress=None):
    splits = splits or common.load_splits(config)
    progress = progress or common.Progress(
        config.num_models * (1 + config.self_distill_steps) + 1)
    rows = []
    for stage in (train, ensemble, distill, self_distill):
        rows += stage.run(config, workdir, splits, progress)
    return rows
