"""Self-distillation chains with fixed and estimated alpha, over seeds and datasets.

For each dataset and seed, one model trained on the labels (step 0) starts a chain of
--steps self-distillation steps for every --settings entry: a fixed ground-truth weight
alpha, or "optimal" (alpha estimated before every step, see `tfkd --helpfull`,
--self_distill_alpha). Prints, per dataset, test accuracy per step (mean +- std over seeds)
and the estimated alphas, and plots accuracy against step:

    python tools/self_distill_chain.py --datasets=digits,mnist1d --seeds=0,1,2 --steps=5 \
        --settings=0,0.6,optimal --distillation_loss=probability_mse

Any other tfkd flag (--model, --epochs, --learning_rate, --checkpoint, ...) applies to
every model, as in `tfkd --mode=self_distill`. Workdirs go under --root and are reused
when the command is run again.
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from tfkd import cli  # noqa: E402

flags.DEFINE_list("datasets", ["digits", "mnist1d"], "Datasets to run the chains on.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "First seeds; one chain per seed and setting.")
flags.DEFINE_integer("steps", 5, "Self-distillation steps per chain.")
flags.DEFINE_list("settings", ["0", "0.6", "optimal"],
                  "Ground-truth weight of every step: a number, or 'optimal'.")
flags.DEFINE_string("root", "runs/self_distill_chain", "Where the workdirs go.")
flags.DEFINE_string("plot", None, "Where the plot goes (default <root>/self_distill_chain.png; "
                    "the committed one is docs/self_distill_chain.png).")
FLAGS = flags.FLAGS


def chain(base, dataset, seed, setting):
    """Test accuracies of steps 0..steps and the alphas of steps 1..steps of one chain."""
    from tfkd.modes import self_distill, train
    from tfkd.workdir import Workdir

    # Every setting's chain starts from the same step-0 model, trained once per seed.
    members = Workdir(os.path.join(FLAGS.root, dataset, f"seed{seed}", "step0")).create()
    config = dataclasses.replace(
        base, mode="self_distill", dataset=dataset, seed=seed, num_models=1,
        self_distill_steps=FLAGS.steps, self_distill_alpha=setting, teacher_dir=members.root,
        workdir=os.path.join(FLAGS.root, dataset, f"seed{seed}", f"alpha_{setting}"))
    train.run(dataclasses.replace(config, mode="train", workdir=members.root,
                                  teacher_dir=None), members)
    workdir = Workdir(config.workdir).create()
    self_distill.run(config, workdir)
    rows = [members.read_metrics("member_0")["row"]] + [
        workdir.read_metrics(self_distill.chain_name(0, g))["row"]
        for g in range(1, FLAGS.steps + 1)]
    return [r["test_accuracy"] for r in rows], [r["alpha"] for r in rows[1:]]


def mean_std(values):
    values = 100 * np.asarray(values)
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def main(argv):
    del argv
    cli.setup_logging()
    base = cli.config_from_flags(remember=False)[0].shrunk()
    print("command: python " + " ".join(sys.argv))
    results = {}
    for dataset in FLAGS.datasets:
        for setting in FLAGS.settings:
            runs = [chain(base, dataset, int(seed), setting) for seed in FLAGS.seeds]
            results[dataset, setting] = ([r[0] for r in runs], [r[1] for r in runs])
            logging.info("%s, alpha=%s: done", dataset, setting)
    for dataset in FLAGS.datasets:
        print(f"\n### {dataset}: test accuracy (%) per step, mean ± std over "
              f"{len(FLAGS.seeds)} seeds\n")
        print("| step | " + " | ".join(f"alpha = {s}" for s in FLAGS.settings) + " |")
        print("|---:|" + "---:|" * len(FLAGS.settings))
        for step in range(FLAGS.steps + 1):
            cells = [mean_std([acc[step] for acc in results[dataset, s][0]])
                     for s in FLAGS.settings]
            print(f"| {step} | " + " | ".join(cells) + " |")
        for setting in FLAGS.settings:
            if setting == "optimal":
                alphas = np.asarray(results[dataset, setting][1])
                print("\nestimated alpha per step (mean ± std): " + ", ".join(
                    f"{g + 1}: {alphas[:, g].mean():.3f} ± {alphas[:, g].std():.3f}"
                    for g in range(FLAGS.steps)))
    from tfkd.workdir import save_figure

    path = FLAGS.plot or os.path.join(FLAGS.root, "self_distill_chain.png")
    save_figure(plot(results, FLAGS.datasets, FLAGS.settings, FLAGS.steps), path, dpi=120)
    print(f"\nplot: {path}")


def plot(results, datasets, settings, steps):
    """The test accuracy per step, mean ± std over seeds, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(datasets), 3.6))
    axes = figure.subplots(1, len(datasets), squeeze=False)
    positions = np.arange(steps + 1)
    for ax, dataset in zip(axes[0], datasets):
        for setting in settings:
            accuracies = 100 * np.asarray(results[dataset, setting][0])
            ax.errorbar(positions, accuracies.mean(0), yerr=accuracies.std(0), capsize=3,
                        marker="o", label=f"alpha = {setting}")
        ax.set_xticks(positions)  # steps are whole numbers
        ax.set_title(dataset)
        ax.set_xlabel("self-distillation step (0: labels only)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    cli.define_flags()
    app.run(main, flags_parser=cli.parse_flags)
