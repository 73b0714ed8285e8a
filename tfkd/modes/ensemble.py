"""ensemble: evaluate the average of the saved members."""

from tfkd.modes import inputs, results


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    members, _ = inputs.load_members(config, workdir, splits)
    _, row = results.ensemble_row(config, workdir, splits, members, name="ensemble",
                                  kind="ensemble")
    return [row]
