"""ensemble: evaluate the average of the saved members."""

from tfkd.modes import common


def run(config, workdir, splits=None, progress=None):
    splits = splits or common.load_splits(config)
    members, _ = common.load_members(config, workdir)
    _, row = common.ensemble_row(config, workdir, splits, members, name="ensemble",
                                 kind="ensemble")
    return [row]
