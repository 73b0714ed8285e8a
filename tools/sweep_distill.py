"""Grid over (alpha, temperature) for distillation, scored on validation accuracy.

Each setting distills every teacher ensemble into students of several seeds and
reports the mean validation and test accuracy; pick by validation, never by test.
The teachers are the members of workdirs made with `tfkd --mode=train`:

    for s in 0 1 2; do tfkd --mode=train --seed=$s --workdir=runs/teachers_$s; done
    python tools/sweep_distill.py --teacher_dirs=runs/teachers_0,runs/teachers_1,runs/teachers_2

Any other tfkd flag (--dataset, --model, --epochs, --lr_schedule, ...) applies to the
students, as in `tfkd --mode=distill`.
"""

import dataclasses
import itertools
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tfkd import cli  # noqa: E402

flags.DEFINE_list("teacher_dirs", None, "Workdirs whose members form one teacher ensemble each.")
flags.DEFINE_list("alphas", ["0.1", "0.5", "0.9"], "Ground-truth weights to try.")
flags.DEFINE_list("temperatures", ["1", "2", "4", "8"], "Temperatures to try.")
flags.DEFINE_list("student_seeds", ["50", "51"], "Student seeds per teacher ensemble.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tfkd.ensemble import Ensemble
    from tfkd.modes import common
    from tfkd.workdir import Workdir

    base = cli.config_from_flags()
    splits = common.load_splits(base)
    teacher_dirs = [Workdir(d) for d in FLAGS.teacher_dirs]
    loaded = [common.load_members(base, d) for d in teacher_dirs]
    ensembles = [(Ensemble(members, average=base.teacher_average, name="teachers"), paths)
                 for members, paths in loaded]
    member_test = [d.read_metrics(n)["row"]["test_accuracy"]
                   for d in teacher_dirs for n in common.member_names(base)]
    print(f"members: test {100 * np.mean(member_test):.2f}% (mean of {len(member_test)})")
    print("| alpha | T | val acc (%) | test acc (%) | students |")
    print("|---|---|---:|---:|---:|")
    # One scratch workdir for the whole grid: each ensemble's logits are cached once.
    scratch = tempfile.TemporaryDirectory(prefix="tfkd_sweep_")
    workdir = Workdir(scratch.name).create()
    for alpha, temperature in itertools.product(map(float, FLAGS.alphas),
                                                map(float, FLAGS.temperatures)):
        config = dataclasses.replace(base, alpha=alpha, temperature=temperature)
        val, test = [], []
        for k, (teachers, paths) in enumerate(ensembles):
            for seed in map(int, FLAGS.student_seeds):
                _, row = common.fit_model(
                    config, workdir, splits, name=f"student_{alpha:g}_{temperature:g}_{k}_{seed}",
                    kind="distilled", seed=seed + 10 * k, teachers=teachers,
                    teacher_name=f"ensemble_{k}", teacher_paths=paths)
                val.append(row["val_accuracy"])
                test.append(row["test_accuracy"])
        print(f"| {alpha:g} | {temperature:g} | {100 * np.mean(val):.2f} | "
              f"{100 * np.mean(test):.2f} | {len(val)} |", flush=True)


if __name__ == "__main__":
    cli.define_flags()
    flags.mark_flag_as_required("teacher_dirs")
    app.run(main)
