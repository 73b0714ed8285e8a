"""train: N independent members, seeds s..s+N-1, each plain cross-entropy (alpha = 1)."""

from tfkd.modes import common


def run(config, workdir, splits=None, progress=None):
    splits = splits or common.load_splits(config)
    progress = progress or common.Progress(config.num_models)
    rows = []
    for i, name in enumerate(common.member_names(config)):
        _, row = common.fit_model(config, workdir, splits, name=name, kind="member",
                                  seed=config.seed + i, progress=progress)
        rows.append(row)
    return rows
