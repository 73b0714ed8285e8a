"""self_distill: for each member, a chain of generations, each a fresh model taught by the last.

Chain i starts from member_i (seed s+i); generation g of it has seed s+100*g+i,
so every student has a seed of its own. The last generations of all chains are
also averaged (the replication note's "ensemble of self-distilled students").
Members missing from the workdir are trained first: they are each chain's step 0.
"""

from tfkd.modes import common, train


def chain_name(member, generation):
    return f"self_distilled_{member}_g{generation}"


def run(config, workdir, splits=None, progress=None):
    splits = splits or common.load_splits(config)
    missing = [n for n in common.member_names(config) if not workdir.has_model(n)]
    progress = progress or common.Progress(
        (config.num_models if missing else 0) + config.num_models * config.self_distill_steps)
    rows = train.run(config, workdir, splits, progress) if missing else []
    members, paths = common.load_members(config, workdir)
    last_generation = []
    for i, (teacher, teacher_path) in enumerate(zip(members, paths)):
        teacher_name = common.member_names(config)[i]
        for g in range(1, config.self_distill_steps + 1):
            name = chain_name(i, g)
            teacher, row = common.fit_model(
                config, workdir, splits, name=name, kind="self_distilled",
                seed=config.seed + 100 * g + i, teachers=teacher, teacher_name=teacher_name,
                teacher_paths=[teacher_path], generation=g, progress=progress)
            rows.append(row)
            teacher_name, teacher_path = name, workdir.model_path(name)
        last_generation.append(teacher)
    if len(last_generation) > 1:
        _, row = common.ensemble_row(config, workdir, splits, last_generation,
                                     name="self_distilled_ensemble",
                                     kind="self_distilled_ensemble")
        rows.append(row)
    return rows
