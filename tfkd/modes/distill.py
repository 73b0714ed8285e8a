"""distill: the ensemble of saved members teaches one new model (seed s+N)."""

from tfkd.ensemble import Ensemble
from tfkd.modes import common


def run(config, workdir, splits=None, progress=None):
    splits = splits or common.load_splits(config)
    teacher_dir = common.teacher_workdir(config, workdir)
    members, paths = common.load_members(config, teacher_dir)
    teachers = Ensemble(members, average=config.teacher_average, name="teachers")
    progress = progress or common.Progress(1)
    _, row = common.fit_model(config, workdir, splits, name="distilled", kind="distilled",
                              seed=config.seed + config.num_models, teachers=teachers,
                              teacher_name="ensemble", teacher_paths=paths,
                              progress=progress)
    return [row]
