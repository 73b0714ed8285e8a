"""Distillation methods side by side: one teacher ensemble, students of every method.

One workdir, tfkd's own fit path (`tfkd.modes.fit.fit_model`, as `tfkd --mode=distill`
runs it) for every model:

- the teachers: --num_models members, seeds 0..N-1, plain cross-entropy
  (`tfkd.modes.train.run`), and their ensemble (mean logits);
- for each method of --methods and each of --seeds student seeds (N, N+1, ...: the seed
  `tfkd --mode=distill` gives its student, and the next ones), a student distilled from
  that ensemble with `--distillation_loss=<method>`, named `distilled_<method>_<seed>`;
  "labels" is the control, a student of the same seed trained on the labels only
  (`independent_<seed>`), and a variant is a method with settings of its own (VARIANTS:
  "kl_ls" is kl with --logit_standardization). Every student of a seed starts from the
  same initial weights and sees the same batches; only its loss differs.

The teachers' logits are computed once into the workdir's cache (--teacher_cache, tfkd's
default): no teacher runs in a student's step. A re-run reuses every finished model
(fit_model's store), so an interrupted table resumes, and a table with more methods trains
only the new students.

Then, per method, test accuracy mean ± std over the seeds and the difference to KD ("kl",
always trained: it is the reference) with two paired tests, both two-sided: a paired t-test
over the seeds (method seed s against KD seed s; df = seeds - 1), which asks whether the
method's advantage holds across training runs, and a paired t-test over the test images of
the per-image correctness averaged over the seeds (the same images scored by both sides;
n = test images), which asks whether these students differ on the test distribution but
does not see the seed-to-seed variation. Writes <workdir>/methods_table.{md,csv,json} and
the plot (--plot), prints the table.

    python tools/methods_table.py                 # 11 methods: about 40-60 min on 2 cores
    python tools/methods_table.py --smoke         # seconds: the wiring only
    python tools/methods_table.py --methods=kl,dkd,labels --seeds=5
    python tools/methods_table.py --method_flags='dkd:--dkd_beta=2 --temperature=2'

Methods' own settings: tfkd's defaults (`tfkd/config.py`, group "method"), except
DKD's warm-up, which is scaled to the run (DEFAULT_METHOD_FLAGS); --method_flags
overrides any of them, and the distillation settings --temperature and --alpha, per method
(repeat the flag for several methods). Each row of the table says which settings of its
method differ from tfkd's defaults.

Defaults (measured: docs/methods_table.md): the cnn, 10,000 of the 54,000 training images
(validation 6,000 and test 10,000 whole), 12 epochs, batch 128, Adam at 3e-3 with cosine
decay, alpha 0.1, T 4, 5 teachers, 3 student seeds.
"""

import dataclasses
import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfkd.analysis.stats import paired_mean_test  # noqa: E402
from tfkd.toolargs import OneLineParser, guarded  # noqa: E402

PROG = "methods_table"
REFERENCE = "kl"  # KD (Hinton et al.): the method every other one is compared with
LABELS = "labels"  # the control: labels only, no teacher
# Methods with settings of their own: name -> (tfkd method, its flags).
VARIANTS = {"kl_ls": ("kl", ("--logit_standardization",))}
# Settings --method_flags may set besides the method's own ("method" group): the
# distillation settings a method's recipe may change. Others (the optimiser, epochs, data)
# would make the comparison one of training recipes, not of methods.
SHARED_SETTINGS = ("temperature", "alpha")
SMOKE = {"train_size": 500, "epochs": 1, "workdir": "runs/methods_table_smoke"}
DEFAULTS = {"workdir": "runs/methods_table", "model": "cnn", "train_size": 10_000,
            "epochs": 12, "batch_size": 128, "learning_rate": 3e-3, "lr_schedule": "cosine",
            "alpha": 0.1, "temperature": 4.0, "num_models": 5, "seeds": 3,
            "dataset": "keras:fashion_mnist"}


def default_method_flags(epochs):
    """The tool's own per-method settings, for a run of `epochs` epochs: DKD's warm-up is the
    paper's share of training (20 of 240 epochs) rather than tfkd's 20 epochs, which at 12
    epochs would leave DKD at 0.6 of its weight at the end."""
    return {"dkd": (f"--dkd_warmup_epochs={round(epochs * 20 / 240)}",)}


def all_methods():
    """Every method tfkd offers, the variants and the labels-only control: the reference
    first, then the control, then the rest by name."""
    from tfkd import terms

    rest = sorted((set(terms.NAMES) | set(VARIANTS)) - {REFERENCE, LABELS})
    return [REFERENCE, LABELS, *rest]


# ----------------------------------------------------------------------------- flags


def _method_list(text):
    import argparse

    names = [n.strip() for n in text.split(",") if n.strip()]
    known = all_methods()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0]!r}; choose from: "
                                         f"{', '.join(known)}")
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct method names, got {text!r}")
    return names


def _whole(low):
    import argparse

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return value
    return parse


def parse_args(argv=None):
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--methods", type=_method_list, default=None,
                        help=f"Comma-separated methods (default: all of "
                             f"{', '.join(all_methods())}). {REFERENCE} is added when not "
                             "listed: the differences are against it.")
    parser.add_argument("--seeds", type=_whole(1), default=DEFAULTS["seeds"],
                        help="Student seeds per method (seeds N, N+1, ...; N = --num_models).")
    parser.add_argument("--method_flags", action="append", default=[], metavar="METHOD:FLAGS",
                        help="A method's own settings, e.g. 'dkd:--dkd_beta=2 "
                             "--dkd_warmup_epochs=1' or 'kl_ls:--temperature=2'; tfkd flags "
                             f"of the method group or {', '.join(SHARED_SETTINGS)}; repeat "
                             "for several methods.")
    parser.add_argument("--workdir", help=f"Models, cache, tables (default "
                        f"{DEFAULTS['workdir']}; with --smoke {SMOKE['workdir']}).")
    parser.add_argument("--dataset", default=DEFAULTS["dataset"],
                        help="tfkd's --dataset (default Fashion-MNIST, as Debian packages it).")
    parser.add_argument("--model", default=DEFAULTS["model"],
                        help="A registered tfkd model, teachers' and students'.")
    parser.add_argument("--train_size", type=int, help=f"N of the training images "
                        f"(default {DEFAULTS['train_size']}; 0 = all).")
    parser.add_argument("--epochs", type=int, help=f"Epochs per fit (default "
                        f"{DEFAULTS['epochs']}).")
    parser.add_argument("--num_models", type=int, default=DEFAULTS["num_models"],
                        help="Teacher members.")
    for name in ("batch_size", "learning_rate", "lr_schedule", "alpha", "temperature"):
        parser.add_argument(f"--{name}", type=type(DEFAULTS[name]), default=DEFAULTS[name],
                            help=f"tfkd's --{name} (default {DEFAULTS[name]}).")
    parser.add_argument("--overwrite", action="store_true",
                        help="Retrain students whose settings changed (tfkd's --overwrite); "
                             "without it such a workdir is refused.")
    parser.add_argument("--plot", help="PNG of the table (default "
                        "<workdir>/methods_table.png).")
    parser.add_argument("--smoke", action="store_true",
                        help="Check the wiring in seconds: --train_size=500 --epochs=1 unless "
                             "given, tfkd's smoke data (256 training, 128 validation and 128 "
                             "test images), workdir runs/methods_table_smoke.")
    args = parser.parse_args(argv)
    fill = SMOKE if args.smoke else DEFAULTS
    for name in ("workdir", "train_size", "epochs"):
        if getattr(args, name) is None:
            setattr(args, name, fill[name])
    if not args.workdir.strip():
        parser.error("--workdir must not be empty")
    if args.plot is None:
        args.plot = os.path.join(args.workdir, "methods_table.png")
    if not args.plot.lower().endswith(".png"):
        parser.error(f"--plot must name a .png file, got {args.plot!r}")
    if args.methods is None:
        args.methods = all_methods()
    elif REFERENCE not in args.methods:
        args.methods = [REFERENCE, *args.methods]
    try:
        args.config = make_config(args)
        args.overrides = method_overrides(args.method_flags, args.methods, args.epochs)
        args.configs = {m: method_config(args.config, m, args.overrides.get(m, {}))
                        for m in args.methods}
    except ValueError as e:  # ConfigError, or a refused override: one line
        parser.error(str(e))
    return args


def make_config(args):
    """The teachers' settings, which the students share but for their method's."""
    from tfkd.config import Config

    return Config(mode="train", dataset=args.dataset, workdir=args.workdir, model=args.model,
                  train_size=args.train_size, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer="adam", learning_rate=args.learning_rate,
                  lr_schedule=args.lr_schedule, alpha=args.alpha,
                  temperature=args.temperature, num_models=args.num_models, seed=0,
                  overwrite=args.overwrite,
                  # tfkd's --smoke (set only by ours): at most 256 / 128 / 128 examples;
                  # Config.shrunk() is not applied, so the run keeps its members.
                  smoke=args.smoke)


def term_of(method):
    """The tfkd method (--distillation_loss) of a table's method; None for the labels."""
    return None if method == LABELS else VARIANTS.get(method, (method,))[0]


def settable(method):
    """The settings --method_flags may give `method`: the distillation settings of
    SHARED_SETTINGS and its tfkd method's own."""
    from tfkd.config import FIELDS

    term = term_of(method)
    if term is None:
        return ()
    return SHARED_SETTINGS + tuple(name for name, f in FIELDS.items()
                                   if term in f.metadata["methods"])


def parse_flags(method, flag_list):
    """{setting: value} of `flag_list` (tfkd flags, --name=value, --name / --noname for a
    switch), typed by tfkd's own absl flags; a ValueError naming the flag otherwise."""
    from absl import flags

    from tfkd import cli
    from tfkd.config import FIELDS

    values = flags.FlagValues()
    cli.define_flags(values)
    bad = [f for f in flag_list if not f.startswith("--")]
    if bad:
        raise ValueError(f"--method_flags {method}: expected tfkd flags written --name=value, "
                         f"got {bad[0]!r}")
    try:
        values(["methods_table", *flag_list])
    except flags.Error as e:
        raise ValueError(f"--method_flags {method}: {str(e).splitlines()[0]}") from None
    given = {name: values[name].value for name in values if name in FIELDS
             and values[name].present}
    allowed = settable(method)
    for name in given:
        if name not in allowed:
            raise ValueError(f"--method_flags {method}: --{name} is not a setting of "
                             f"{method}'s; it takes: "
                             f"{', '.join('--' + n for n in allowed) or 'none (labels only)'}")
    return given


def method_overrides(method_flags, methods, epochs):
    """{method: {setting: value}}: the variants' settings, the tool's defaults
    (`default_method_flags`), then --method_flags, later ones winning per setting."""
    found = {}
    for method, (_, flag_list) in VARIANTS.items():
        found.setdefault(method, {}).update(parse_flags(method, list(flag_list)))
    for method, flag_list in default_method_flags(epochs).items():
        for m in [method, *(v for v, (t, _) in VARIANTS.items() if t == method)]:
            found.setdefault(m, {}).update(parse_flags(m, list(flag_list)))
    for text in method_flags:
        method, colon, rest = text.partition(":")
        method = method.strip()
        if not colon or not rest.strip():
            raise ValueError(f"--method_flags must be METHOD:FLAGS (e.g. dkd:--dkd_beta=2), "
                             f"got {text!r}")
        if method not in methods:
            raise ValueError(f"--method_flags names {method!r}, which is not among the "
                             f"methods of this run: {', '.join(methods)}")
        try:
            flag_list = shlex.split(rest)
        except ValueError as e:
            raise ValueError(f"--method_flags {text!r}: {e}") from None
        found.setdefault(method, {}).update(parse_flags(method, flag_list))
    return {m: v for m, v in found.items() if m in methods}


def method_config(base, method, overrides):
    """The students' Config of `method` (its settings checked by tfkd's schema)."""
    from tfkd.config import ConfigError

    term = term_of(method)
    try:
        return dataclasses.replace(base, mode="distill", **(
            {"distillation_loss": term, **overrides} if term else {}))
    except ConfigError as e:
        raise ConfigError(f"--method_flags {method}: {e}") from None


def settings_text(base, config, method):
    """What sets `method`'s students apart from tfkd's defaults and the run's own settings:
    its method-group settings that differ from their default, and a changed temperature or
    alpha ("" for none)."""
    from tfkd.config import FIELDS

    if term_of(method) is None:
        return "labels only"
    shown = []
    for name in settable(method):
        value = getattr(config, name)
        reference = getattr(base, name) if name in SHARED_SETTINGS else FIELDS[name].default
        if value != reference:
            shown.append(f"{name}={value}")
    return ", ".join(shown)


def student_name(method, seed):
    # Names of tfkd's own records (tfkd.workdir.RECORD_NAME): distilled_<...>, independent_<n>.
    return f"independent_{seed}" if method == LABELS else f"distilled_{method}_{seed}"


def command(args):
    flags = [f"--{k}={v}" for k, v in vars(args).items()
             if k not in ("config", "configs", "overrides", "smoke", "overwrite", "methods",
                          "method_flags")]
    flags.insert(0, f"--methods={','.join(args.methods)}")
    flags += [f"--method_flags={f}" for f in args.method_flags]
    flags += [f"--{k}" for k in ("smoke", "overwrite") if getattr(args, k)]
    return shlex.join(["python", "tools/methods_table.py", *flags])


# ----------------------------------------------------------------------------- the runs


def run_all(args, workdir):
    """Trains (or reuses) the teachers and every method's students. Returns (splits,
    {name: result row}, {name: per-image test correctness}, {method: [student names]})."""
    from absl import logging

    from tfkd.modes import fit, inputs, results, train

    base = args.config
    splits = inputs.load_splits(base)
    logging.info("data: %s", splits.sizes)
    progress = results.Progress(base.num_models + len(args.methods) * args.seeds)
    rows, correct = {}, {}
    for row in train.run(base, workdir, splits, progress):
        rows[row["name"]] = row
    members, teachers = inputs.ensemble_teachers(base, workdir, splits)
    _, rows["ensemble"] = results.ensemble_row(base, workdir, splits, members,
                                               name="ensemble", kind="ensemble")
    names = {}
    for method in args.methods:
        config = args.configs[method]
        names[method] = []
        for seed in student_seeds(base, args.seeds):
            name = student_name(method, seed)
            labels_only = term_of(method) is None
            student, rows[name] = fit.fit_model(
                config, workdir, splits, name=name,
                kind="independent" if labels_only else "distilled", seed=seed,
                teachers=None if labels_only else teachers, progress=progress)
            logits = results.stored_test_logits(workdir, name, student, splits)
            correct[name] = np.argmax(logits, -1) == np.asarray(splits.y_test).reshape(-1)
            names[method].append(name)
    return splits, rows, correct, names


def student_seeds(config, seeds):
    """The students' seeds: `tfkd --mode=distill`'s (seed + N) and the next ones."""
    first = config.seed + config.num_models
    return list(range(first, first + seeds))


# ----------------------------------------------------------------------------- statistics


def compare(rows, correct, names):
    """Per method: test accuracies per seed, and against the reference (KD) the per-seed
    differences with their paired t-test over seeds and the paired t-test over test images
    of the seed-averaged correctness (both two-sided; differences in points)."""
    reference = names[REFERENCE]
    kd_acc = np.array([rows[n]["test_accuracy"] for n in reference])
    kd_correct = np.mean([correct[n] for n in reference], axis=0)
    out = {}
    for method, students in names.items():
        acc = np.array([rows[n]["test_accuracy"] for n in students])
        entry = {"students": students, "test_accuracy": acc.tolist()}
        if method != REFERENCE:
            per_seed = 100 * (acc - kd_acc)
            entry["difference"] = per_seed.tolist()
            entry["over_seeds"] = paired_mean_test(per_seed, "two-sided")
            entry["over_images"] = paired_mean_test(
                np.mean([correct[n] for n in students], axis=0) - kd_correct, "two-sided",
                scale=100)
        out[method] = entry
    return out


# ----------------------------------------------------------------------------- report


def spread(values, signed=False):
    """mean ± std (ddof 1) in points, 2 decimals, the mean signed for a difference; the value
    alone for one seed (tfkd.analysis.stats.spread, otherwise the same, has no sign)."""
    values = np.asarray(values, dtype=float)
    mean = f"{values.mean():+.2f}" if signed else f"{values.mean():.2f}"
    return mean if values.size == 1 else f"{mean} ± {values.std(ddof=1):.2f}"


def p_text(p):
    return "-" if p is None else "< 1e-300" if p == 0 else f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


COLUMNS = ("method", "settings", "students", "test acc (%)", "Δ vs KD (points)",
           "p, paired t over seeds", "p, paired t over test images", "Δ per seed")


def table_rows(args, stats):
    """One list of COLUMNS' cells per method, in --methods order."""
    out = []
    for method in args.methods:
        s = stats[method]
        acc = 100 * np.array(s["test_accuracy"])
        settings = settings_text(args.config, args.configs[method], method)
        if method == REFERENCE:
            out.append([method, settings, len(acc), spread(acc), "reference", "", "", ""])
            continue
        out.append([method, settings, len(acc), spread(acc),
                    spread(s["difference"], signed=True),
                    p_text(s["over_seeds"]["p"]), p_text(s["over_images"]["p"]),
                    ", ".join(f"{d:+.2f}" for d in s["difference"])])
    return out


def write_csv(path, rows):
    import csv
    import io

    from tfkd.workdir import write_text

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    write_text(path, out.getvalue())


def plot(args, rows, stats, path, title, test_images):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfkd.workdir import save_figure

    methods = args.methods
    figure, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(methods) + 2), 4.2))
    kd = 100 * np.mean(stats[REFERENCE]["test_accuracy"])
    every = []
    for x, method in enumerate(methods):
        values = 100 * np.array(stats[method]["test_accuracy"])
        every += list(values)
        colour = "#55a868" if method == REFERENCE else "#8c8c8c" if method == LABELS \
            else "#4c72b0"
        ax.bar(x, values.mean(), color=colour, alpha=0.35, width=0.6)
        ax.scatter(np.full(len(values), x) + np.linspace(-0.12, 0.12, len(values)), values,
                   color=colour, zorder=3, s=18)
        if len(values) > 1:
            ax.errorbar(x, values.mean(), yerr=values.std(ddof=1), color="black", capsize=4,
                        lw=1)
    ax.axhline(kd, color="#55a868", lw=1, ls="--", label=f"KD ({REFERENCE}) mean {kd:.2f}")
    ensemble = 100 * rows["ensemble"]["test_accuracy"]
    ax.axhline(ensemble, color="#dd8452", lw=1, ls=":", label=f"teachers' ensemble "
               f"{ensemble:.2f}")
    every.append(ensemble)
    ax.set_ylim(min(every) - 1.0, max(every) + 0.8)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel(f"test accuracy (%), {test_images:,} images")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    plt.close(figure)


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
        return (workdir, *run_all(args, workdir))

    result, code = guarded(PROG, config.workdir, body)
    if code:
        return code
    workdir, splits, rows, correct, names = result
    cli.write_record(workdir, config)

    stats = compare(rows, correct, names)
    members = [rows[n]["test_accuracy"] for n in rows if n.startswith("member_")]
    title = (f"{config.dataset} / {config.model}: {len(splits.x_train):,} training images, "
             f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}, {args.seeds} student "
             f"seed{'s' if args.seeds != 1 else ''}")
    trained = sum(workdir.read_metrics(n).get("seconds", 0.0) for n in rows
                  if n != "ensemble")
    fits = len(rows) - 1
    wall = time.time() - started
    body = table_rows(args, stats)
    lines = [f"# {title}", "", f"Command: `{command(args)}`", "",
             f"Teachers: {len(members)} members, test {spread(100 * np.array(members))} %; "
             f"their ensemble {100 * rows['ensemble']['test_accuracy']:.2f} %. Students of "
             f"seeds {', '.join(map(str, student_seeds(config, args.seeds)))} per method, "
             f"alpha {config.alpha}, T {config.temperature} unless the settings say "
             "otherwise.", "",
             *report.markdown_table(COLUMNS, body, right_from=2), "",
             f"Δ: the method's student minus the KD ({REFERENCE}) student of the same seed, "
             "in points, mean ± std over the seeds. Both tests two-sided: a paired t-test of "
             f"the per-seed Δ against 0 (df {args.seeds - 1}; none with one seed), and a "
             f"paired t-test over the {len(splits.y_test):,} test images of the per-image "
             "correctness averaged over the seeds (the same images for both; it does not "
             "see the variation between training runs).", "",
             f"Wall time of this invocation: {wall:.0f} s; training time of the {fits} "
             f"models as recorded in the workdir: {trained:.0f} s "
             f"({trained / max(fits, 1):.0f} s per fit)."]
    markdown = "\n".join(lines)
    plot(args, rows, stats, args.plot, title, len(splits.y_test))
    write_text(workdir.path("methods_table.md"), markdown + "\n")
    write_csv(workdir.path("methods_table.csv"), body)
    write_json(workdir.path("methods_table.json"), {
        "command": command(args), "config": config.to_dict(), "sizes": splits.sizes,
        "methods": {m: {"settings": settings_text(config, args.configs[m], m),
                        "config": args.configs[m].to_dict(), **stats[m]}
                    for m in args.methods},
        "rows": rows, "wall_seconds": wall, "trained_seconds": trained})
    print(markdown)
    print(f"\nPlot: {args.plot}; table: {workdir.path('methods_table.md')}, "
          f"methods_table.csv, methods_table.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
