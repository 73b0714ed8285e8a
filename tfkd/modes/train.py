"""train: N independent members, seeds s..s+N-1, each plain cross-entropy (alpha = 1)."""

from tfkd.modes import fit, inputs, results, store


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    progress = progress or results.Progress(config.num_models)
    rows = []
    for i, name in enumerate(store.member_names(config.num_models)):
        _, row = fit.fit_model(config, workdir, splits, name=name, kind="member",
                               seed=config.seed + i, progress=progress)
        rows.append(row)
    return rows


def missing_members(config, workdir):
    """How many of the run's --num_models members its own workdir lacks (teachers from
    --teacher_dir are never trained by the run)."""
    if config.teacher_dir:
        return 0
    return max(0, config.num_models - store.count_members(workdir.root))


def ensure_members(config, workdir, splits, progress=None):
    """Trains the members when the workdir lacks some; the ones it holds are then models
    this run trains, compared with its settings. Returns their rows."""
    return run(config, workdir, splits, progress) if missing_members(config, workdir) else []
