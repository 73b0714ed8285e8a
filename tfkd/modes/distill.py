"""distill: the ensemble of saved members teaches one new model (seed s+N)."""

from tfkd.modes import fit, inputs, results


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    _, teachers = inputs.ensemble_teachers(config, workdir, splits)
    _, row = fit.fit_model(config, workdir, splits, name="distilled", kind="distilled",
                           seed=config.seed + config.num_models, teachers=teachers,
                           progress=progress or results.Progress(1))
    return [row]
