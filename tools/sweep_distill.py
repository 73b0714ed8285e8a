"""Grid over (alpha, temperature, hint weight) for distillation, scored on validation accuracy.

Each setting distills every teacher ensemble into students of several seeds and
reports the mean validation and test accuracy; pick by validation, never by test.
The teachers are the members of workdirs made with `tfkd --mode=train`:

    for s in 0 1 2; do tfkd --mode=train --seed=$s --workdir=runs/teachers_$s; done
    python tools/sweep_distill.py --teacher_dirs=runs/teachers_0,runs/teachers_1,runs/teachers_2

Any other tfkd flag (--dataset, --model, --epochs, --lr_schedule, ...) applies to the
students, as in `tfkd --mode=distill`. With --hint_layer, --hint_weights adds FitNets hint
weights to the grid (0: no hint):

    python tools/sweep_distill.py --teacher_dirs=... --alphas=0.1 --temperatures=4 \
        --hint_layer=features --hint_weights=0,0.1,1,10
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
flags.DEFINE_list("hint_weights", ["0"], "Hint-loss weights to try (0: no hint); weights > 0 "
                  "need --hint_layer.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tfkd.modes import fit, inputs, store
    from tfkd.workdir import Workdir

    cli.setup_logging()
    base = cli.config_from_flags(remember=False)[0].shrunk()
    splits = inputs.load_splits(base)
    teacher_dirs = [Workdir(d) for d in FLAGS.teacher_dirs]
    ensembles = [inputs.ensemble_teachers(dataclasses.replace(base, teacher_dir=d.root), d,
                                          splits)[1]
                 for d in teacher_dirs]
    ensembles = [dataclasses.replace(t, name=f"ensemble_{k}") for k, t in enumerate(ensembles)]
    member_test = [d.read_metrics(n)["row"]["test_accuracy"]
                   for d in teacher_dirs for n in store.member_names(base.num_models)]
    print(f"members: test {100 * np.mean(member_test):.2f}% (mean of {len(member_test)})")
    try:
        hint_weights = [float(w) for w in FLAGS.hint_weights]
    except ValueError:
        raise app.UsageError(f"--hint_weights must be numbers, got {FLAGS.hint_weights}")
    if any(not w >= 0 for w in hint_weights) or (any(hint_weights) and not base.hint_layer):
        raise app.UsageError(f"--hint_weights={','.join(FLAGS.hint_weights)} must be >= 0, "
                             "and weights > 0 need --hint_layer")
    print("| alpha | T | hint weight | val acc (%) | test acc (%) | students |")
    print("|---|---|---|---:|---:|---:|")
    # One scratch workdir for the whole grid: each ensemble's logits are cached once.
    scratch = tempfile.TemporaryDirectory(prefix="tfkd_sweep_")
    workdir = Workdir(scratch.name).create()
    for alpha, temperature, hint_weight in itertools.product(
            map(float, FLAGS.alphas), map(float, FLAGS.temperatures), hint_weights):
        config = dataclasses.replace(
            base, alpha=alpha, temperature=temperature, hint_weight=hint_weight or 1.0,
            hint_layer=base.hint_layer if hint_weight else "")
        val, test = [], []
        for k, teachers in enumerate(ensembles):
            for seed in map(int, FLAGS.student_seeds):
                _, row = fit.fit_model(
                    config, workdir, splits,
                    name=f"student_{alpha:g}_{temperature:g}_{hint_weight:g}_{k}_{seed}",
                    kind="distilled", seed=seed + 10 * k, teachers=teachers)
                val.append(row["val_accuracy"])
                test.append(row["test_accuracy"])
        print(f"| {alpha:g} | {temperature:g} | {hint_weight:g} | {100 * np.mean(val):.2f} | "
              f"{100 * np.mean(test):.2f} | {len(val)} |", flush=True)


if __name__ == "__main__":
    cli.define_flags()
    flags.mark_flag_as_required("teacher_dirs")
    app.run(main, flags_parser=cli.parse_flags)
