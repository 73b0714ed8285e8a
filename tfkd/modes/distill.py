"""distill: the ensemble of saved members teaches one new model (seed s+N), named distilled,
or distilled_<model> when --model is another architecture than the members'."""

from tfkd.modes import fit, inputs, results, store


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    _, teachers = inputs.ensemble_teachers(config, workdir, splits)
    # A student of another architecture than its teachers' is distilled_<model>.
    name = "distilled" + store.student_suffix(config, inputs.teacher_dir(config, workdir))
    _, row = fit.fit_model(config, workdir, splits, name=name, kind="distilled",
                           seed=config.seed + config.num_models, teachers=teachers,
                           progress=progress or results.Progress(1))
    return [row]
