"""The replication note's ensemble / KD / self-distillation table on real images: Fashion-MNIST.

One workdir, tfkd's own fit path (`tfkd.modes.fit.fit_model`) for all 13 fits:

- 5 members, seeds 0-4, plain cross-entropy (`tfkd.modes.train.run`), and their ensemble
  (the average of their logits, `tfkd.modes.results.ensemble_row`);
- knowledge distillation from that ensemble into --kd_students students of seeds 5, 6, ...
  (the seed-5 one is named `distilled`, so `tfkd --mode=analyze` works on the workdir);
- self-distillation: member i alone teaches a fresh student of seed 10 + i (i = 0..4), and
  the ensemble of those 5 students.

Then, on the 10,000 test images, the four claims of the note with paired tests (the same
images scored by both sides): (a) ensemble > mean member, (b) KD > mean member, (c) SD >
its teacher, (d) ensemble of SD >= ensemble. Prints the Markdown table and the exact
command, writes the plot (--plot) and <workdir>/fashion_mnist_repro.{md,json}, and records
its wall time. A re-run reuses every finished model (fit_model's store), so it resumes.

Last, what each KD student inherits from the ensemble (Ojha et al.; `tfkd --mode=analyze`'s
measurements, `tfkd.modes.analyze.measure`), against its control: an independent student of
the same seed and architecture trained on the labels only (`independent` for seed 5, as
`--mode=analyze` names it; `independent_6`, ... for the others). Each property's
distilled - independent difference is given per seed and as mean ± std over the seeds, with
a paired t-test (the statistics and the per-seed summary are tfkd's own:
`tfkd.analysis.stats`, `tfkd.modes.analyze.summarize`).

    python tools/fashion_mnist_repro.py                      # 1-2 hours on 2 CPU cores
    python tools/fashion_mnist_repro.py --smoke              # seconds: the wiring only
    python tools/fashion_mnist_repro.py --inheritance_only   # members, KD, inheritance
    tfkd --mode=analyze --workdir=runs/fashion_mnist         # afterwards: what KD passed on

Defaults (why: docs/fashion_mnist.md): WRN-16-1, 10,000 of the 54,000 training
images (validation 6,000 and test 10,000 whole), 12 epochs, batch 128, Adam at 1e-3 with
cosine decay, last-epoch weights (validation picks nothing); KD and SD with the project's
defaults alpha = 0.1 (ground-truth weight) and T = 4.
"""

import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# tfkd's statistics (numpy only at import; scipy on first use). Importing tfkd is cheap.
from tfkd.analysis.stats import mcnemar_exact, paired_mean_test, spread  # noqa: E402,F401
from tfkd.toolargs import OneLineParser, guarded  # noqa: E402

DATASET = "keras:fashion_mnist"
NUM_MEMBERS = 5
SD_SEED_OFFSET = 10  # the note's "teacher seed i -> student seed 10 + i"
SMOKE = {"train_size": 500, "epochs": 1, "model": "cnn", "workdir": "runs/fashion_mnist_smoke"}
DEFAULTS = {"workdir": "runs/fashion_mnist", "model": "wrn16_1", "train_size": 10_000,
            "epochs": 12, "batch_size": 128, "learning_rate": 1e-3, "lr_schedule": "cosine",
            "alpha": 0.1, "temperature": 4.0, "kd_students": 3,
            "analysis_examples": 2000}
# The replication note (ResNet-18, CIFAR-10), test accuracy gains over the mean member in
# points, as docs/papers.md section 3 quotes them: 85.95 mean member, 89.07 ensemble, 87.00
# KD, 86.38 mean SD student, 89.38 ensemble of SD.
NOTE_GAINS = {"ensemble": 3.12, "kd": 1.05, "sd": 0.43, "sd_ensemble": 3.43}


# ----------------------------------------------------------------------------- flags


def parse_args(argv=None):
    parser = OneLineParser(prog="fashion_mnist_repro", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help=f"Models, metrics, cache (default "
                        f"{DEFAULTS['workdir']}; with --smoke {SMOKE['workdir']}).")
    parser.add_argument("--model", help=f"A registered tfkd model (default "
                        f"{DEFAULTS['model']}; with --smoke {SMOKE['model']}).")
    parser.add_argument("--train_size", type=int, help=f"N of the 54,000 training "
                        f"images (default {DEFAULTS['train_size']}; 0 = all).")
    parser.add_argument("--epochs", type=int, help=f"Epochs per fit (default "
                        f"{DEFAULTS['epochs']}).")
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--learning_rate", type=float, default=DEFAULTS["learning_rate"],
                        help="Adam's (peak) learning rate.")
    parser.add_argument("--lr_schedule", default=DEFAULTS["lr_schedule"],
                        help="tfkd's --lr_schedule: constant, cosine or step.")
    parser.add_argument("--alpha", type=float, default=DEFAULTS["alpha"],
                        help="Ground-truth weight of KD and SD students, in [0, 1].")
    parser.add_argument("--temperature", type=float, default=DEFAULTS["temperature"],
                        help="Distillation temperature of KD and SD students, > 0.")
    parser.add_argument("--kd_students", type=int, default=DEFAULTS["kd_students"],
                        help="KD students, seeds 5, 6, ... (1 to 5; the seed-5 one is "
                             "'distilled').")
    parser.add_argument("--analysis_examples", type=int,
                        default=DEFAULTS["analysis_examples"],
                        help="Test images of the inheritance analysis (tfkd's "
                             "--analysis_examples; 0 skips the analysis and its independent "
                             "students).")
    parser.add_argument("--inheritance_only", action="store_true",
                        help="Only the members, the KD students, their independent controls "
                             "and what the KD students inherit (no self-distillation, no "
                             "claims table): <workdir>/fashion_mnist_inheritance.{md,json} "
                             "and the plot beside --plot.")
    parser.add_argument("--plot", help="PNG of the results (default "
                        "<workdir>/fashion_mnist_repro.png; the committed one is "
                        "docs/fashion_mnist.png).")
    parser.add_argument("--smoke", action="store_true",
                        help="Check the wiring in seconds: --train_size=500 --epochs=1 "
                             "--model=cnn unless given, tfkd's smoke data (256 training, 128 "
                             "validation and 128 test images), workdir "
                             "runs/fashion_mnist_smoke.")
    args = parser.parse_args(argv)
    fill = SMOKE if args.smoke else DEFAULTS
    for name in ("workdir", "model", "train_size", "epochs"):
        if getattr(args, name) is None:
            setattr(args, name, fill[name])
    if args.plot is None:
        # Into the workdir, never docs/: a smaller run must not overwrite a committed figure.
        args.plot = os.path.join(args.workdir, "fashion_mnist_repro.png")
    if not 1 <= args.kd_students <= 5:
        # Seeds 5..9: below the SD students' 10..14.
        parser.error(f"--kd_students must be a whole number in [1, 5], got {args.kd_students}")
    if args.analysis_examples < 0 or (args.inheritance_only and not args.analysis_examples):
        parser.error(f"--analysis_examples must be a whole number >= 0 (0 = no analysis; "
                     f">= 1 with --inheritance_only), got {args.analysis_examples}")
    if not args.plot.lower().endswith(".png"):
        parser.error(f"--plot must name a .png file, got {args.plot!r}")
    try:
        args.config = make_config(args)
    except ValueError as e:  # tfkd's ConfigError: the setting and what it accepts
        parser.error(str(e))
    return args


def make_config(args):
    from tfkd.config import Config

    return Config(mode="pipeline", dataset=DATASET, workdir=args.workdir, model=args.model,
                  train_size=args.train_size, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer="adam", learning_rate=args.learning_rate,
                  lr_schedule=args.lr_schedule, alpha=args.alpha,
                  temperature=args.temperature, num_models=NUM_MEMBERS, seed=0,
                  analysis_examples=max(1, args.analysis_examples),
                  # tfkd's --smoke (set only by ours): at most 256 / 128 / 128 examples;
                  # Config.shrunk() is not applied, so the run keeps its 5 members.
                  smoke=args.smoke)


def command(args):
    switches = ("smoke", "inheritance_only")
    flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("config", *switches)]
    return shlex.join(["python", "tools/fashion_mnist_repro.py", *flags,
                       *(f"--{k}" for k in switches if getattr(args, k))])


# ----------------------------------------------------------------------------- statistics


def claims(correct):
    """The note's four claims, each with its paired test on the test images.

    `correct`: {name: boolean per-image correctness} with members `member_0..4`, `ensemble`,
    KD students (`distilled`, `distilled_6`, ...), SD students `self_distilled_0..4` and
    `self_distilled_ensemble`. Returns {claim: result dict}.
    """
    members = np.stack([correct[f"member_{i}"] for i in range(NUM_MEMBERS)]).astype(float)
    member_mean = members.mean(axis=0)
    kd = np.stack([correct[n] for n in kd_names_in(correct)]).astype(float)
    sd = np.stack([correct[f"self_distilled_{i}"] for i in range(NUM_MEMBERS)]).astype(float)
    out = {
        "ensemble": {"claim": "(a) ensemble > mean member", "test": "paired t, one-sided",
                     **paired_mean_test(correct["ensemble"] - member_mean, scale=100)},
        "kd": {"claim": "(b) KD > mean member", "test": "paired t, one-sided",
               **paired_mean_test(kd.mean(axis=0) - member_mean, scale=100)},
        "sd": {"claim": "(c) SD > its teacher", "test": "paired t, one-sided",
               **paired_mean_test((sd - members).mean(axis=0), scale=100)},
        "sd_ensemble": {"claim": "(d) ensemble of SD >= ensemble",
                        "test": "McNemar exact, one-sided (>)",
                        **mcnemar_exact(correct["self_distilled_ensemble"],
                                        correct["ensemble"])},
    }
    out["sd_ensemble"]["p_two_sided"] = mcnemar_exact(
        correct["self_distilled_ensemble"], correct["ensemble"], "two-sided")["p"]
    # Single classifiers against single classifiers, for the detail table.
    out["ensemble"]["mcnemar_vs_members"] = [
        mcnemar_exact(correct["ensemble"], members[i] > 0.5)["p"] for i in range(NUM_MEMBERS)]
    out["kd"]["per_student"] = [paired_mean_test(k - member_mean)["p"] for k in kd]
    out["sd"]["mcnemar_pairs"] = [mcnemar_exact(sd[i] > 0.5, members[i] > 0.5)
                                  for i in range(NUM_MEMBERS)]
    return out


def kd_names_in(correct):
    return [n for n in correct if n == "distilled" or n.startswith("distilled_")]


def kd_name(seed):
    """The KD student of `seed`; seed 5's is `--mode=analyze`'s own `distilled`."""
    from tfkd.modes.analyze import pair_names

    return pair_names(seed, NUM_MEMBERS)[0]


def kd_seeds(kd_students):
    return range(NUM_MEMBERS, NUM_MEMBERS + kd_students)


# ----------------------------------------------------------------------------- the runs


def run_all(config, workdir, kd_students, self_distillation=True):
    """Trains (or reuses) the 13 models (without `self_distillation`, the members and KD
    students only), evaluates the ensembles. Returns (rows by name, test logits by name,
    the splits, seconds per phase)."""
    from absl import logging

    from tfkd.modes import fit, inputs, results, train

    phases, rows, logits = {}, {}, {}
    started = time.time()
    splits = inputs.load_splits(config)
    progress = results.Progress(NUM_MEMBERS + kd_students + NUM_MEMBERS)
    logging.info("data: %s", splits.sizes)

    for row in train.run(config, workdir, splits, progress):
        rows[row["name"]] = row
    members, paths = inputs.load_members(config, workdir, splits)
    for i, member in enumerate(members):
        logits[f"member_{i}"] = results.stored_test_logits(workdir, f"member_{i}", member,
                                                           splits)
    _, rows["ensemble"] = results.ensemble_row(config, workdir, splits, members,
                                               name="ensemble", kind="ensemble")
    logits["ensemble"] = np.mean([logits[f"member_{i}"] for i in range(NUM_MEMBERS)], axis=0)
    phases["members + ensemble"] = time.time() - started

    t = time.time()
    _, teachers = inputs.ensemble_teachers(config, workdir, splits)
    for seed in kd_seeds(kd_students):
        name = kd_name(seed)
        student, rows[name] = fit.fit_model(config, workdir, splits, name=name,
                                            kind="distilled", seed=seed, teachers=teachers,
                                            progress=progress)
        logits[name] = results.stored_test_logits(workdir, name, student, splits)
    phases["KD students"] = time.time() - t

    if not self_distillation:
        return rows, logits, splits, phases
    t = time.time()
    sd_models = []
    for i, (member, path) in enumerate(zip(members, paths)):
        name = f"self_distilled_{i}"
        teacher = fit.Teachers(member, f"member_{i}", (path,))
        student, rows[name] = fit.fit_model(config, workdir, splits, name=name,
                                            kind="self_distilled", seed=SD_SEED_OFFSET + i,
                                            teachers=teacher, generation=1, progress=progress)
        sd_models.append(student)
        logits[name] = results.stored_test_logits(workdir, name, student, splits)
    _, rows["self_distilled_ensemble"] = results.ensemble_row(
        config, workdir, splits, sd_models, name="self_distilled_ensemble",
        kind="self_distilled_ensemble")
    logits["self_distilled_ensemble"] = np.mean(
        [logits[f"self_distilled_{i}"] for i in range(NUM_MEMBERS)], axis=0)
    phases["SD students + their ensemble"] = time.time() - t

    # The per-image ensembles above must be the library's own: same accuracy as its rows.
    for name in ("ensemble", "self_distilled_ensemble"):
        ours = float(np.mean(np.argmax(logits[name], -1) == splits.y_test))
        if abs(ours - rows[name]["test_accuracy"]) > 1e-4:
            logging.warning("%s: per-image accuracy %.4f differs from the library's %.4f",
                            name, ours, rows[name]["test_accuracy"])
    return rows, logits, splits, phases


def run_inheritance(config, workdir, splits, kd_students):
    """Each KD student against the ensemble, beside its control (an independent student of
    its seed, trained here or reused), all measured in one `analyze.measure` call (the
    attacks are made once, against the ensemble), and summarised over the seeds
    (`analyze.summarize`). Returns (measure's result, summarize's records)."""
    import dataclasses

    from tfkd.modes import analyze, inputs, results

    pairs = analyze.student_names(dataclasses.replace(config, analysis_students=kd_students))
    members, teachers = inputs.ensemble_teachers(config, workdir, splits)
    students = analyze.train_students(config, workdir, splits, teachers, pairs,
                                      results.Progress(2 * kd_students))
    result, table, _ = analyze.measure(config, splits, members, teachers.model, students)
    return result, analyze.summarize(table, pairs)


def inheritance_rows(records):
    """[(property, teacher value, distilled values, independent values, differences, paired
    test)] of `analyze.summarize`'s records, the values listed per KD seed; a property a
    student has no value for (an attack that fooled nothing it gets right) is left out of
    that seed's difference; skipped properties are left out."""
    rows = []
    for r in records:
        if r["skipped"]:
            continue
        seeds = r["per_seed"]
        rows.append((r["property"], r["teacher"], [p["distilled"]["value"] for p in seeds],
                     [p["independent"]["value"] for p in seeds],
                     [p["difference"] for p in seeds], r["paired_test"]))
    return rows


# ----------------------------------------------------------------------------- report


def pct(values):
    values = 100 * np.atleast_1d(np.asarray(values, dtype=float))
    if values.size == 1:
        return f"{values[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def p_text(p):
    return "< 1e-300" if p == 0 else f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def groups(rows, kd_students):
    kd = [kd_name(s) for s in range(NUM_MEMBERS, NUM_MEMBERS + kd_students)]
    return {
        "members": [f"member_{i}" for i in range(NUM_MEMBERS)],
        "ensemble": ["ensemble"],
        "kd": kd,
        "sd": [f"self_distilled_{i}" for i in range(NUM_MEMBERS)],
        "sd_ensemble": ["self_distilled_ensemble"],
    }


def summary_table(rows, stats, kd_students):
    g = groups(rows, kd_students)
    acc = {k: [rows[n]["test_accuracy"] for n in names] for k, names in g.items()}
    val = {k: [rows[n]["val_accuracy"] for n in names] for k, names in g.items()}
    base = 100 * np.mean(acc["members"])
    labels = {"members": "members (seeds 0-4), mean ± std",
              "ensemble": "ensemble of the 5 (mean logits)",
              "kd": f"KD students (seeds {', '.join(str(s) for s in range(5, 5 + kd_students))}),"
                    " mean ± std",
              "sd": "SD students (member i -> seed 10+i), mean ± std",
              "sd_ensemble": "ensemble of the 5 SD students"}
    lines = ["| model | val acc (%) | test acc (%) | vs mean member (points) | claim | test | "
             "p | the note (points) |",
             "|---|---:|---:|---:|---|---|---:|---:|"]
    for key in g:
        gain = 100 * np.mean(acc[key]) - base
        s = stats.get(key)
        claim = "" if s is None else s["claim"]
        test = "" if s is None else s["test"]
        p = "" if s is None else p_text(s["p"])
        note = "" if key == "members" else f"{NOTE_GAINS[key]:+.2f}"
        lines.append(f"| {labels[key]} | {pct(val[key])} | {pct(acc[key])} | "
                     f"{'' if key == 'members' else f'{gain:+.2f}'} | {claim} | {test} | {p} | "
                     f"{note} |")
    return lines


def detail_table(rows, stats, kd_students):
    lines = ["| model | seed | teacher | val acc (%) | test acc (%) | paired test vs | p |",
             "|---|---:|---|---:|---:|---|---:|"]
    for i in range(NUM_MEMBERS):
        r = rows[f"member_{i}"]
        lines.append(f"| member_{i} | {r['seed']} | - | {pct(r['val_accuracy'])} | "
                     f"{pct(r['test_accuracy'])} | ensemble > member_{i} (McNemar) | "
                     f"{p_text(stats['ensemble']['mcnemar_vs_members'][i])} |")
    for name, p in zip(groups(rows, kd_students)["kd"], stats["kd"]["per_student"]):
        r = rows[name]
        lines.append(f"| {name} | {r['seed']} | ensemble | {pct(r['val_accuracy'])} | "
                     f"{pct(r['test_accuracy'])} | > mean member (paired t) | {p_text(p)} |")
    for i, m in enumerate(stats["sd"]["mcnemar_pairs"]):
        r = rows[f"self_distilled_{i}"]
        lines.append(f"| self_distilled_{i} | {r['seed']} | member_{i} | "
                     f"{pct(r['val_accuracy'])} | {pct(r['test_accuracy'])} | > member_{i} "
                     f"(McNemar; {m['a_only']} vs {m['b_only']} discordant) | "
                     f"{p_text(m['p'])} |")
    return lines


def plot(rows, kd_students, path, title, test_images):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfkd.workdir import save_figure

    g = groups(rows, kd_students)
    labels = ["members", "ensemble", "KD students", "SD students", "ensemble\nof SD"]
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
    figure, ax = plt.subplots(figsize=(7.5, 4.2))
    base = 100 * np.mean([rows[n]["test_accuracy"] for n in g["members"]])
    for x, (key, label, colour) in enumerate(zip(g, labels, colours)):
        values = 100 * np.array([rows[n]["test_accuracy"] for n in g[key]])
        ax.bar(x, values.mean(), color=colour, alpha=0.35, width=0.6)
        ax.scatter(np.full(len(values), x) + np.linspace(-0.15, 0.15, len(values)), values,
                   color=colour, zorder=3, s=22)
        if len(values) > 1:
            ax.errorbar(x, values.mean(), yerr=values.std(ddof=1), color="black",
                        capsize=4, lw=1)
        ax.annotate(f"{values.mean() - base:+.2f}" if key != "members" else f"{base:.2f}",
                    (x, values.max()), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=9)
    ax.axhline(base, color="grey", lw=0.8, ls="--", label="mean member")
    every = 100 * np.array([r["test_accuracy"] for r in rows.values()])
    ax.set_ylim(every.min() - 1.0, every.max() + 0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel(f"test accuracy (%), {test_images:,} images")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    plt.close(figure)


def inheritance_table(rows, kd_students):
    seeds = ", ".join(str(s) for s in kd_seeds(kd_students))
    lines = [f"| property | teacher (ensemble) | KD students | independent students | "
             f"distilled − independent | paired t, p | per seed ({seeds}) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for prop, teacher, d, i, diff, test in rows:
        per_seed = ", ".join("-" if v is None else f"{v:+.4f}" for v in diff)
        p = "-" if test is None or test["p"] is None else p_text(test["p"])
        lines.append(f"| {prop} | {'' if teacher is None else f'{teacher:.4f}'} | {spread(d)} "
                     f"| {spread(i)} | {spread(diff)} | {p} | {per_seed} |")
    return lines


def plot_inheritance(rows, path, title):
    """The distilled − independent difference of each property, one dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfkd.workdir import save_figure

    figure, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    for y, (prop, _, _, _, diff, _) in enumerate(rows):
        values = np.array([v for v in diff if v is not None])
        if values.size:
            ax.barh(y, values.mean(), color="#55a868", alpha=0.35, height=0.6)
            ax.scatter(values, np.full(values.size, y), color="#55a868", zorder=3, s=20)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("distilled − independent student (same seed); bar: mean, dots: seeds")
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    plt.close(figure)


def inheritance_report(config, args, inherited):
    """(Markdown lines, JSON record) of `run_inheritance`'s result; draws its plot beside
    --plot."""
    result, records = inherited
    inherit_rows = inheritance_rows(records)
    inherit_plot = os.path.splitext(args.plot)[0] + "_inheritance.png"
    plot_inheritance(inherit_rows, inherit_plot,
                     f"What the KD students inherit from the ensemble "
                     f"(Fashion-MNIST / {config.model})")
    lines = [f"## What the KD students inherit ({result['examples']:,} test images, "
             f"teacher: the {result['teacher']})", "",
             *inheritance_table(inherit_rows, args.kd_students), "",
             "Each KD student (seed s) against an independent student of seed s (labels "
             "only). Transfer rows: the teacher column is the fraction of the images the "
             "attack fools the ensemble on; a student's value is the fraction of those, among "
             "the ones it gets right clean, that fool it too.",
             "", f"Plot: {inherit_plot}"]
    record = {"examples": result["examples"], "adversarial": result["adversarial"],
              "epsilon_absolute": result["epsilon_absolute"],
              "rows": [dict(zip(("property", "teacher", "distilled", "independent",
                                 "difference", "paired_test"), r)) for r in inherit_rows],
              "properties": records}
    return lines, record


def ordering(rows, kd_students):
    """Allen-Zhu & Li's order on their WRN-28-10 table: single < SD < KD <= ~ ensemble."""
    g = groups(rows, kd_students)
    mean = {k: 100 * np.mean([rows[n]["test_accuracy"] for n in names])
            for k, names in g.items()}
    order = sorted(("members", "sd", "kd", "ensemble"), key=lambda k: mean[k])
    return " < ".join(order), mean


# ----------------------------------------------------------------------------- main


def main(argv=None):
    started = time.time()
    args = parse_args(argv)
    config = args.config

    from tfkd import cli, report
    from tfkd.workdir import Workdir, write_json, write_text

    cli.setup_logging()
    print(f"command: {command(args)}", flush=True)

    def body():
        workdir = Workdir(config.workdir).create()
        rows, logits, splits, phases = run_all(config, workdir, args.kd_students,
                                               self_distillation=not args.inheritance_only)
        inherited = None
        if args.analysis_examples:
            t = time.time()
            inherited = run_inheritance(config, workdir, splits, args.kd_students)
            phases["independent students + inheritance analysis"] = time.time() - t
        return workdir, rows, logits, splits, phases, inherited

    result, code = guarded("fashion_mnist_repro", config.workdir, body)
    if code:
        return code
    workdir, rows, logits, splits, phases, inherited = result
    # What `tfkd --mode=analyze --workdir=...` defaults to: this run's settings.
    cli.write_record(workdir, config)

    if args.inheritance_only:
        lines, analysis = inheritance_report(config, args, inherited)
        lines = [f"# Fashion-MNIST / {config.model}: {len(splits.x_train)} training images, "
                 f"{config.epochs} epochs", "", f"Command: `{command(args)}`", "", *lines, "",
                 f"Wall time of this invocation: {time.time() - started:.0f} s; phases: " +
                 ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()) + "."]
        write_text(workdir.path("fashion_mnist_inheritance.md"), "\n".join(lines) + "\n")
        write_json(workdir.path("fashion_mnist_inheritance.json"), {
            "command": command(args), "config": config.to_dict(), "sizes": splits.sizes,
            "rows": rows, "phases": phases, "inheritance": analysis})
        print("\n".join(lines))
        return 0

    correct = {name: np.argmax(l, -1) == splits.y_test for name, l in logits.items()}
    stats = claims(correct)
    order, means = ordering(rows, args.kd_students)
    wall = time.time() - started
    trained_seconds = sum(workdir.read_metrics(n).get("seconds", 0.0) for n in rows
                          if n not in ("ensemble", "self_distilled_ensemble"))
    title = (f"Fashion-MNIST / {config.model}: {len(splits.x_train)} training images, "
             f"{config.epochs} epochs")
    lines = [f"# {title}", "", f"Command: `{command(args)}`", "",
             *summary_table(rows, stats, args.kd_students), "",
             *detail_table(rows, stats, args.kd_students), "",
             f"Ordering of the means (Allen-Zhu & Li: members < SD < KD <= ensemble): {order}.",
             "",
             f"(d) two-sided McNemar p = {p_text(stats['sd_ensemble']['p_two_sided'])}; "
             f"discordant images: SD ensemble alone right {stats['sd_ensemble']['a_only']}, "
             f"ensemble alone right {stats['sd_ensemble']['b_only']}.",
             "",
             f"Wall time of this invocation: {wall:.0f} s; training time of the 13 models as "
             f"recorded in the workdir: {trained_seconds:.0f} s; phases: " +
             ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()) + "."]
    analysis = None
    if inherited is not None:
        more, analysis = inheritance_report(config, args, inherited)
        lines += ["", *more]
    markdown = "\n".join(lines)
    plot(rows, args.kd_students, args.plot, title, len(splits.y_test))
    write_text(workdir.path("fashion_mnist_repro.md"), markdown + "\n")
    write_json(workdir.path("fashion_mnist_repro.json"), {
        "command": command(args), "config": config.to_dict(), "sizes": splits.sizes,
        "rows": rows, "claims": stats, "means": means, "ordering": order,
        "wall_seconds": wall, "trained_seconds": trained_seconds, "phases": phases,
        "inheritance": analysis})
    # tfkd's own results table of the same rows, beside ours.
    report.write_report(list(rows.values()), workdir.root, title=f"{DATASET} / {config.model}")
    print(markdown)
    print(f"\nPlot: {args.plot}; table and numbers: {workdir.path('fashion_mnist_repro.md')}, "
          f"fashion_mnist_repro.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
