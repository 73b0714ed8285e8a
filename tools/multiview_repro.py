"""Allen-Zhu & Li's multi-view mechanism on generated data, with the random-feature contrast.

For each model (default: "patch_net", the paper's learner, and "random_features", its first
layer frozen at random) the tool trains, on the same generated data:

- `--members` single models with plain cross-entropy, differing only in their seed;
- their ensemble (the mean of their logits);
- knowledge distillation from that ensemble into `--kd_students` fresh models
  (tfkd.Distiller, on the ensemble's logits computed once);
- self-distillation: each of the first `--sd_teachers` single models into a fresh model;
- the jointly trained average of `--joint_k` models (tfkd.models.build_joint).

and reports test accuracy on multi-view and single-view samples separately: the paper
predicts the ensemble's and KD's gains on single-view samples for patch_net, little or no
KD gain for random features, and no gain from joint training.

    python tools/multiview_repro.py                              # about 5 minutes on 2 cores
    python tools/multiview_repro.py --multi_view_fraction=0.9    # any generator parameter
    python tools/multiview_repro.py --dataset=digits,mnist1d     # the CNN on real data

With --dataset=digits,mnist1d (or either) the same rows are computed for `--models`
(default "cnn") on the embedded datasets, which have no view split: one test accuracy each.

Training: Adam, constant learning rate, last-epoch weights (validation data is not used to
pick anything), the generator's documented regime (lr 3e-3, batch 64, 30 epochs).
NOTE: the single models are trained side by side in one `fit` (tfkd.models.joint.
build_side_by_side): each sees only its own loss, so this is `--members` independent
trainings on the same batches, i.e. models that differ only in their initialisation, as in
the paper, at a fraction of the time of separate `fit` calls.
"""

import argparse
import dataclasses
import json
import re
import shlex
import sys
import time

import numpy as np

# Generated data from tfkd.data.multiview; every other --dataset name goes to load_dataset.
MULTIVIEW = "multiview"
ROWS = (
    ("single", "single model"),
    ("ensemble", "ensemble of {members}"),
    ("kd", "KD from the ensemble"),
    ("self_distill", "self-distillation"),
    ("joint", "joint average of {joint_k}"),
)


# ----------------------------------------------------------------------------- flags


def _generator_fields():
    """[(name, default, help)] for every MultiViewConfig field, help taken from its docstring."""
    from tfkd.data.multiview import MultiViewConfig

    helps, current = {}, None
    attributes = MultiViewConfig.__doc__.split("Attributes:")[1].split("\n\n")[0]
    for line in attributes.splitlines():
        match = re.match(r"\s{6}([\w, ]+): (.*)", line)
        if match:
            current = [n.strip() for n in match.group(1).split(",")]
            for name in current:
                helps[name] = match.group(2)
        elif current and line.strip():
            for name in current:
                helps[name] += " " + line.strip()
    # Lines that read well in the docstring but not alone under a flag.
    helps["noise_feature_weight"] = "per-patch weight of the noise features."
    for split in ("train", "val", "test"):
        helps[f"{split}_size"] = f"samples in the {split} split."
    return [(f.name, f.default, helps.get(f.name, f"MultiViewConfig.{f.name}"))
            for f in dataclasses.fields(MultiViewConfig)]


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _name_list(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def _kwargs(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {e}")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=_name_list, default=[MULTIVIEW],
                        help="'multiview' (generated, split into multi- and single-view test "
                             "samples), or comma-separated embedded datasets: digits, mnist1d.")
    parser.add_argument("--models", type=_name_list, default=None,
                        help="Comma-separated registered models; default patch_net,"
                             "random_features for multiview, cnn otherwise.")
    parser.add_argument("--model_kwargs", type=_kwargs, default={},
                        help='JSON object of builder arguments for every model, e.g. '
                             '\'{"neurons_per_class": 4}\' (see tfkd/models/patchnet.py).')
    parser.add_argument("--members", type=int, default=10,
                        help="Single models trained (the ensemble's members).")
    parser.add_argument("--joint_k", type=int, default=None,
                        help="Sub-networks of the jointly trained average (default --members).")
    parser.add_argument("--kd_students", type=int, default=3,
                        help="Students distilled from the ensemble, differing in their seed.")
    parser.add_argument("--sd_teachers", type=int, default=3,
                        help="Self-distillation pairs: the first N single models each teach "
                             "one fresh model.")
    parser.add_argument("--seeds", type=_int_list, default=[0],
                        help="Comma-separated data seeds (generator seed, or split seed of an "
                             "embedded dataset); every row pools its runs over them.")
    parser.add_argument("--epochs", type=int, default=30, help="Epochs of every training run.")
    parser.add_argument("--batch_size", type=int, default=64, help="Batch size.")
    parser.add_argument("--learning_rate", type=float, default=3e-3, help="Adam learning rate.")
    parser.add_argument("--alpha", type=float, default=0.1,
                        help="Ground-truth weight of KD and self-distillation (0 = pure "
                             "distillation).")
    parser.add_argument("--temperature", type=float, default=4.0,
                        help="Distillation temperature of KD and self-distillation.")
    parser.add_argument("--out", default=None,
                        help="Path of the bar plot (default runs/multiview_repro/multiview_repro.png, "
                             "or ..._<datasets>.png for embedded datasets; the committed "
                             "figures are docs/multiview_repro*.png).")
    generator = parser.add_argument_group(
        "generator", "MultiViewConfig parameters (multiview only); defaults are the config's.")
    for name, default, text in _generator_fields():
        generator.add_argument(f"--{name}", type=type(default), default=default, help=text)
    args = parser.parse_args(argv)

    multiview = args.dataset == [MULTIVIEW]
    if MULTIVIEW in args.dataset and not multiview:
        parser.error("--dataset=multiview cannot be combined with other datasets")
    if args.models is None:
        args.models = ["patch_net", "random_features"] if multiview else ["cnn"]
    if args.joint_k is None:
        args.joint_k = args.members
    if args.out is None:
        # Into runs/, never docs/: a smaller run must not overwrite a committed figure.
        args.out = ("runs/multiview_repro/multiview_repro.png" if multiview else
                    f"runs/multiview_repro/multiview_repro_{'_'.join(args.dataset)}.png")
    for name in ("members", "joint_k", "kd_students", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    # Model seeds are 1000 * data seed + an offset per row (members 0-99, KD 100-199, ...).
    for name in ("members", "kd_students"):
        if getattr(args, name) > 100:
            parser.error(f"--{name} must be at most 100, got {getattr(args, name)}")
    if not 0 <= args.sd_teachers <= args.members:
        parser.error(f"--sd_teachers must be in [0, --members={args.members}], "
                     f"got {args.sd_teachers}")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")
    if not args.temperature > 0 or not args.learning_rate > 0:
        parser.error("--temperature and --learning_rate must be positive")
    if multiview:
        try:
            generator_config(args)
        except ValueError as e:
            parser.error(str(e))
    return args


def generator_config(args):
    from tfkd.data.multiview import MultiViewConfig

    return MultiViewConfig(**{f.name: getattr(args, f.name)
                              for f in dataclasses.fields(MultiViewConfig)})


def resolved_command(args):
    flags = []
    for key, value in vars(args).items():
        if isinstance(value, list):
            value = ",".join(map(str, value))
        elif isinstance(value, dict):
            value = json.dumps(value)
        flags.append(f"--{key}={value}")
    return shlex.join(["python", "tools/multiview_repro.py", *flags])


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Task:
    """One dataset: arrays, and the test samples each reported accuracy is taken over."""

    name: str
    input_shape: tuple
    num_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    groups: dict  # group name -> boolean mask over the test set


def load_task(dataset, args, seed):
    if dataset == MULTIVIEW:
        from tfkd.data.multiview import make_multiview

        config = generator_config(args)
        data = make_multiview(config, seed=seed)
        single = data.test.single_view
        return Task(MULTIVIEW, config.input_shape, config.num_classes, data.train.x,
                    data.train.y, data.test.x, data.test.y,
                    {"multi-view": ~single, "single-view": single})
    from tfkd.data import load_dataset

    splits = load_dataset(dataset, split_seed=seed)
    return Task(dataset, tuple(splits.input_shape), splits.num_classes, splits.x_train,
                splits.y_train, splits.x_test, splits.y_test,
                {"test": np.ones(len(splits.y_test), bool)})


# ----------------------------------------------------------------------------- training


def _ce():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _batches(task, args, seed, teacher_logits=None):
    from tfkd.data import make_tf_dataset

    return make_tf_dataset(task.x_train, task.y_train, batch_size=args.batch_size,
                           shuffle=True, seed=seed, teacher_logits=teacher_logits)


def train_independently(models, task, args, seed):
    """Plain cross-entropy, every model on its own loss, all in one fit."""
    import keras

    from tfkd.models.joint import build_side_by_side

    stack = build_side_by_side(models)
    stack.compile(keras.optimizers.Adam(args.learning_rate), [_ce() for _ in models])
    n = len(models)
    batches = _batches(task, args, seed).map(lambda x, y: (x, (y,) * n))
    stack.fit(batches, epochs=args.epochs, shuffle=False, verbose=0)


def train_joint(model, task, args, seed):
    import keras

    model.compile(keras.optimizers.Adam(args.learning_rate), _ce())
    model.fit(_batches(task, args, seed), epochs=args.epochs, shuffle=False, verbose=0)


def distill(student, teacher_logits, task, args, seed):
    """tfkd.Distiller on teacher logits computed once on the training inputs."""
    import keras

    from tfkd.distiller import Distiller

    distiller = Distiller(student=student, alpha=args.alpha, temperature=args.temperature)
    distiller.compile(keras.optimizers.Adam(args.learning_rate))
    distiller.fit(_batches(task, args, seed, teacher_logits), epochs=args.epochs,
                  shuffle=False, verbose=0)


def predict(model, x):
    from tfkd.cache import predict_logits

    return predict_logits(model, x, batch_size=1024)


def soft_confidence(logits, temperature):
    """Mean top-class probability of softmax(logits / T): how soft the targets are."""
    from tfkd.metrics import softmax

    return float(softmax(logits / temperature).max(axis=1).mean())


def run_model(task, model_name, args, data_seed, log):
    """{row: [test logits of each run]} for one model on one task."""
    from tfkd.ensemble import Ensemble
    from tfkd.models import build_joint, build_model, joint_members

    base = 1000 * data_seed  # model and shuffle seeds of different data seeds never meet

    def fresh(seed, tag):
        return build_model(model_name, task.input_shape, task.num_classes, seed=seed,
                           model_name=f"{model_name}_{tag}", **args.model_kwargs)

    logits = {}
    start = time.perf_counter()
    members = [fresh(base + i, f"member{i}") for i in range(args.members)]
    train_independently(members, task, args, seed=base)
    logits["single"] = [predict(m, task.x_test) for m in members]
    # The ensemble is the mean of the members' logits (tfkd.Ensemble's default).
    ensemble = Ensemble(members, name=f"{model_name}_ensemble")
    logits["ensemble"] = [predict(ensemble, task.x_test)]
    log(f"  {args.members} single models + ensemble: {time.perf_counter() - start:.0f} s")

    start = time.perf_counter()
    ensemble_train = predict(ensemble, task.x_train)
    logits["kd"] = []
    for j in range(args.kd_students):
        student = fresh(base + 100 + j, f"kd_student{j}")
        distill(student, ensemble_train, task, args, seed=base + 100 + j)
        logits["kd"].append(predict(student, task.x_test))
    log(f"  KD x{args.kd_students}: {time.perf_counter() - start:.0f} s (the ensemble's mean "
        f"top probability on training samples: {soft_confidence(ensemble_train, 1.0):.3f} at T=1, "
        f"{soft_confidence(ensemble_train, args.temperature):.3f} at T={args.temperature:g})")

    start = time.perf_counter()
    logits["self_distill"] = []
    for j, teacher in enumerate(members[:args.sd_teachers]):
        student = fresh(base + 200 + j, f"sd_student{j}")
        distill(student, predict(teacher, task.x_train), task, args, seed=base + 200 + j)
        logits["self_distill"].append(predict(student, task.x_test))
    log(f"  self-distillation x{args.sd_teachers}: {time.perf_counter() - start:.0f} s")

    start = time.perf_counter()
    joint = build_joint(model_name, task.input_shape, task.num_classes, k=args.joint_k,
                        seed=base + 300, model_name=f"joint_{model_name}",
                        **args.model_kwargs)
    train_joint(joint, task, args, seed=base + 300)
    logits["joint"] = [predict(joint, task.x_test)]
    # Not a row of the table: how the jointly trained sub-networks do on their own.
    logits["joint_member"] = [predict(m, task.x_test) for m in joint_members(joint)]
    log(f"  joint average of {args.joint_k}: {time.perf_counter() - start:.0f} s")
    return logits


# ----------------------------------------------------------------------------- report


def accuracies(logits_list, task):
    """{group: [accuracy of each run on that group's test samples]}."""
    return {group: [float((z.argmax(1) == task.y_test)[mask].mean()) for z in logits_list]
            for group, mask in task.groups.items()}


def _cell(values):
    values = 100 * np.asarray(values)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def markdown_table(results, args):
    """results: {(task, model): {row: {group: [accuracies]}}} -> a markdown table."""
    columns = [(key, group) for key, rows in results.items()
               for group in rows["single"]]
    header = ["", *[f"{model} {group}" if task == MULTIVIEW else f"{model} {task}"
                    for (task, model), group in columns]]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row, label in ROWS:
        label = label.format(members=args.members, joint_k=args.joint_k)
        runs = len(next(iter(results.values()))[row][columns[0][1]])
        if runs > 1:
            label += f" (mean ± std, {runs} runs)"
        cells = [_cell(results[key][row][group]) for key, group in columns]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def save_plot(results, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfkd.workdir import save_figure

    panels = list(results.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, ((task, model), rows) in zip(axes[0], panels):
        groups = list(rows["single"])
        width = 0.8 / len(ROWS)
        for i, (row, label) in enumerate(ROWS):
            means = [100 * np.mean(rows[row][g]) for g in groups]
            stds = [100 * np.std(rows[row][g], ddof=1) if len(rows[row][g]) > 1 else 0.0
                    for g in groups]
            positions = np.arange(len(groups)) + (i - (len(ROWS) - 1) / 2) * width
            ax.bar(positions, means, width, yerr=stds if any(stds) else None, capsize=3,
                   color=colors[i],
                   label=label.format(members=args.members, joint_k=args.joint_k))
        low = 100 * min(min(rows[row][g]) for row, _ in ROWS for g in groups)
        ax.set_ylim(max(0.0, low - 5), 100.5)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model if task == MULTIVIEW else f"{model} on {task}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    save_figure(fig, args.out, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    total = time.perf_counter()
    args = parse_args(argv)
    print("Command: " + shlex.join(["python", *sys.argv]))
    print("With every flag: " + resolved_command(args))
    print(flush=True)

    def log(text):
        print(text, flush=True)

    results = {}
    for dataset in args.dataset:
        for seed in args.seeds:
            task = load_task(dataset, args, seed)
            if dataset == MULTIVIEW:
                counts = ", ".join(f"{g} {int(m.sum())}" for g, m in task.groups.items())
                log(f"{dataset} (seed {seed}): {len(task.y_train)} training samples; "
                    f"test: {counts}")
            for model_name in args.models:
                log(f"{model_name} on {dataset} (seed {seed}):")
                logits = run_model(task, model_name, args, seed, log)
                rows = results.setdefault((dataset, model_name), {})
                for row, runs in logits.items():
                    for group, values in accuracies(runs, task).items():
                        rows.setdefault(row, {}).setdefault(group, []).extend(values)

    print("\nTest accuracy (%); rows with several runs: mean ± std over them.\n")
    print(markdown_table(results, args))
    print()
    for (dataset, model), rows in results.items():
        cells = ", ".join(f"{group} {_cell(values)}"
                          for group, values in rows["joint_member"].items())
        print(f"{model} on {dataset}: a jointly trained sub-network alone: {cells}")
    save_plot(results, args)
    print(f"\nPlot: {args.out}")
    print(f"Wall time: {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
