"""Does a distilled student inherit its teacher's invariance to colour jitter? (Ojha et al.)

Ojha et al. (NeurIPS 2023, "What knowledge gets distilled in knowledge distillation?")
train a teacher with colour-jitter augmentation, distil it into a student trained *without*
augmentation, and find the student more consistent under the jitter than an independently
trained one. For every seed S in --seeds and both teacher conditions (members trained with
--augment=jitter, and the control --augment=none) this runs, through the tfkd CLI:

    tfkd --mode=train   --workdir=W/<cond>/teachers_S --augment=<cond> --seed=S
    tfkd --mode=distill --workdir=W/<cond>/students_S --teacher_dir=W/<cond>/teachers_S \
        --augment=none --seed=S
    tfkd --mode=analyze --workdir=W/<cond>/students_S --teacher_dir=W/<cond>/teachers_S \
        --augment=none --seed=S

(distill and analyze without augmentation; analyze also trains the independent student,
labels only, same seed S+N as the distilled one). It then reads every analysis.json and
prints one Markdown table, jitter consistency of teacher (the ensemble), distilled and
independent student, their difference, and test accuracies, as mean ± std over seeds;
writes it with per-seed values to W/invariance_transfer.md and plots it to --plot:

    python tools/invariance_transfer.py    # 14 minutes on 2 cores (845 s; seeds 0,10,...,40)
    python tools/invariance_transfer.py --epochs=2 --num_models=2 --seeds=0 \
        --workdir=/tmp/invariance_smoke --plot=/tmp/invariance_smoke.png   # about 1.5 minutes

Defaults: digits, the cnn, tfkd's own training settings (30 epochs, 5 members). --epochs
and --num_models are passed to every stage, and so is any other tfkd flag given as
--name=value (say --dataset=keras:fashion_mnist --train_size=5000), except the ones each
stage sets itself (--mode, --workdir, --teacher_dir, --seed, --augment). Workdirs are
reused: a stage whose workdir records (in config.json) a finished run of the same command
is skipped, any other stage is run and tfkd resumes it from the models it finds. Each
stage's output goes to W/logs/<cond>_seed<S>_<stage>.log. Note that tfkd gives the members
of seed S the seeds S..S+N-1, so seeds closer than N + 1 share teacher members (the tool
says so); the default seeds are 10 apart.
"""

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

from tfkd.toolargs import OneLineParser

PROG = "invariance_transfer.py"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (value of --augment for the teachers, row label)
CONDITIONS = (("jitter", "teacher trained with jitter"),
              ("none", "teacher trained without jitter"))
STAGES = ("train", "distill", "analyze")
CONSISTENCY, ACCURACY = "jitter consistency", "test accuracy"  # rows of analysis.json
STAGE_SET = ("mode", "workdir", "teacher_dir", "seed", "augment")  # the flags stages set


# ----------------------------------------------------------------------------- flags


def _seed_list(text):
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 0, got {text!r}")
    return seeds


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def parse_args(argv=None):
    # No abbreviations: "--seed=3" is a tfkd flag to pass on, not a short "--seeds".
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--seeds", type=_seed_list, default=[0, 10, 20, 30, 40],
                        help="Comma-separated tfkd --seed values, one experiment each.")
    parser.add_argument("--workdir", default="runs/invariance",
                        help="Root of the tfkd workdirs (reused when run again), the logs and "
                             "invariance_transfer.md.")
    parser.add_argument("--plot", default=None,
                        help="Where the bar chart goes (default <workdir>/invariance_transfer.png"
                             "; the committed one is docs/invariance_transfer.png).")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help="tfkd --epochs of every model (default: tfkd's).")
    parser.add_argument("--num_models", type=_positive, default=None,
                        help="tfkd --num_models: teacher members (default: tfkd's).")
    args, args.tfkd_flags = parser.parse_known_args(argv)
    for flag in args.tfkd_flags:
        name = flag[2:].split("=", 1)[0]
        if not flag.startswith("--") or "=" not in flag:
            parser.error(f"unrecognized argument {flag!r}: other tfkd flags are passed on to "
                         "every stage, written --name=value")
        if name in STAGE_SET:
            parser.error(f"{flag!r}: each stage sets --{name} itself")
        if name == "flagfile":
            parser.error(f"{flag!r}: give the tfkd flags themselves, not a flagfile")
    if not args.workdir.strip():
        parser.error("--workdir must not be empty")
    if args.plot is None:
        # Into the workdir, never docs/: a smaller run must not overwrite a committed figure.
        args.plot = os.path.join(args.workdir, "invariance_transfer.png")
    if not args.plot.lower().endswith((".png", ".pdf", ".svg")):
        parser.error(f"--plot must end in .png, .pdf or .svg, got {args.plot!r}")
    return args


def tfkd_default(name):
    """A tfkd Config field's default (importing tfkd.config does not import TensorFlow)."""
    from tfkd.config import Config

    return {f.name: f.default for f in dataclasses.fields(Config)}[name]


# ----------------------------------------------------------------------------- running


def teachers_dir(args, condition, seed):
    return os.path.join(args.workdir, condition, f"teachers_{seed}")


def students_dir(args, condition, seed):
    return os.path.join(args.workdir, condition, f"students_{seed}")


def stage_flags(args, stage, condition, seed):
    """The tfkd flags of one stage, exactly as the commands in the docstring."""
    if stage == "train":
        flags = [f"--workdir={teachers_dir(args, condition, seed)}", f"--augment={condition}"]
    else:  # distill and analyze: no augmentation, the teachers from teachers_S
        # --augment=none said, not left out: tfkd takes a setting not given from the
        # teachers' workdir, which would train the students with the teachers' jitter.
        flags = [f"--workdir={students_dir(args, condition, seed)}",
                 f"--teacher_dir={teachers_dir(args, condition, seed)}", "--augment=none"]
    flags = [f"--mode={stage}", *flags, f"--seed={seed}"]
    for name in ("epochs", "num_models"):
        if getattr(args, name) is not None:
            flags.append(f"--{name}={getattr(args, name)}")
    return flags + list(args.tfkd_flags)


def recorded_flags(workdir):
    """The flags of the last successful tfkd run in `workdir` (tfkd writes config.json only
    once a run has succeeded), or None."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            return json.load(f)["argv"][1:]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_done(args, stage, condition, seed):
    if stage == "train":
        return recorded_flags(teachers_dir(args, condition, seed)) == stage_flags(
            args, stage, condition, seed)
    students = students_dir(args, condition, seed)
    recorded = recorded_flags(students)
    analyzed = (recorded == stage_flags(args, "analyze", condition, seed)
                and os.path.exists(os.path.join(students, "analysis.json")))
    # A finished analyze with the same flags implies its distill ran with them before.
    return analyzed or (stage == "distill"
                        and recorded == stage_flags(args, "distill", condition, seed))


def run_stage(flags, log_path):
    """Runs `python -m tfkd FLAGS`, output to log_path; returns (exit code, error line)."""
    command = [sys.executable, "-m", "tfkd", *flags]
    env = dict(os.environ)
    # The tfkd of this checkout, whatever the current directory and installed packages.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(command) + "\n\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code == 0:
        return 0, None
    with open(log_path) as log:
        lines = [line.strip() for line in log if line.strip()]
    # tfkd reports a setting to fix as one "tfkd: error: ..." line; a crash ends in a
    # traceback whose last line names the exception.
    errors = [line for line in lines if line.startswith("tfkd: error:")]
    return code, (errors or lines or ["(no output)"])[-1]


def run_all(args):
    os.makedirs(os.path.join(args.workdir, "logs"), exist_ok=True)
    jobs = [(seed, condition, stage) for seed in args.seeds
            for condition, _ in CONDITIONS for stage in STAGES]
    for i, (seed, condition, stage) in enumerate(jobs, 1):
        prefix = f"[{i}/{len(jobs)}] seed {seed}, teachers augment={condition}: {stage:<7}"
        if is_done(args, stage, condition, seed):
            print(f"{prefix} already done", flush=True)
            continue
        print(f"{prefix} ...", end="", flush=True)
        log_path = os.path.join(args.workdir, "logs", f"{condition}_seed{seed}_{stage}.log")
        start = time.perf_counter()
        code, error = run_stage(stage_flags(args, stage, condition, seed), log_path)
        if code:
            print(" failed", flush=True)
            sys.exit(f"{PROG}: error: tfkd --mode={stage} exited with {code}: {error} "
                     f"(log: {log_path})")
        print(f" {time.perf_counter() - start:.0f} s", flush=True)


# ----------------------------------------------------------------------------- results


def read_results(args):
    """{condition: {"teacher"|"distilled"|"independent"|"difference": {metric: [per seed]}}}."""
    results = {}
    for condition, _ in CONDITIONS:
        per_model = results.setdefault(condition, {})
        for seed in args.seeds:
            path = os.path.join(students_dir(args, condition, seed), "analysis.json")
            with open(path) as f:
                rows = {row["property"]: row for row in json.load(f)["properties"]}
            for metric in (CONSISTENCY, ACCURACY):
                for model in ("teacher", "distilled", "independent", "difference"):
                    per_model.setdefault(model, {}).setdefault(metric, []).append(
                        100 * rows[metric][model])
    return results


def _cell(values, signed=False):
    values = np.asarray(values)
    sign = "+" if signed else ""
    if len(values) == 1:
        return f"{values[0]:{sign}.2f}"
    return f"{values.mean():{sign}.2f} ± {values.std(ddof=1):.2f}"


def summary_table(results):
    lines = ["| teacher | consistency: teacher | distilled | independent | "
             "distilled − independent | test acc: teacher | distilled | independent |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for condition, label in CONDITIONS:
        r = results[condition]
        cells = [_cell(r[m][CONSISTENCY]) for m in ("teacher", "distilled", "independent")]
        cells.append(_cell(r["difference"][CONSISTENCY], signed=True))
        cells += [_cell(r[m][ACCURACY]) for m in ("teacher", "distilled", "independent")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(results, seeds):
    lines = ["| teacher augment | seed | consistency: teacher | distilled | independent | "
             "difference | test acc: teacher | distilled | independent |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for condition, _ in CONDITIONS:
        r = results[condition]
        for k, seed in enumerate(seeds):
            cells = [f"{r[m][CONSISTENCY][k]:.2f}" for m in ("teacher", "distilled",
                                                              "independent")]
            cells.append(f"{r['difference'][CONSISTENCY][k]:+.2f}")
            cells += [f"{r[m][ACCURACY][k]:.2f}" for m in ("teacher", "distilled",
                                                           "independent")]
            lines.append(f"| {condition} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_effect(results):
    """Per seed: (distilled − independent) with the jitter teacher minus with the plain one.

    Both conditions of a seed use the same student seed and test views, so this paired
    difference is the part of the distilled student's advantage due to the teacher's jitter
    training."""
    return (np.asarray(results["jitter"]["difference"][CONSISTENCY])
            - np.asarray(results["none"]["difference"][CONSISTENCY]))


def save_plot(results, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfkd.workdir import save_figure

    models = ("teacher", "distilled", "independent")
    colors = plt.get_cmap("tab10").colors
    n = len(args.seeds)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4),
                                         gridspec_kw={"width_ratios": [2, 1.3]})
    width = 0.8 / len(models)
    lowest = 100.0
    for c, (condition, _) in enumerate(CONDITIONS):
        for m, model in enumerate(models):
            values = np.asarray(results[condition][model][CONSISTENCY])
            lowest = min(lowest, values.min())
            x = c + (m - 1) * width
            left.bar(x, values.mean(), width, color=colors[m],
                     yerr=values.std(ddof=1) if n > 1 else None, capsize=4,
                     label=model if c == 0 else None)
            left.plot(np.full(n, x), values, "k.", markersize=4)  # one dot per seed
        diffs = np.asarray(results[condition]["difference"][CONSISTENCY])
        right.bar(c, diffs.mean(), 0.6, color=colors[3 + c],
                  yerr=diffs.std(ddof=1) if n > 1 else None, capsize=4)
        right.plot(np.full(n, c), diffs, "k.", markersize=4)
    # Third bar: the paired per-seed difference of the two advantages.
    effect = paired_effect(results)
    right.bar(len(CONDITIONS), effect.mean(), 0.6, color=colors[7],
              yerr=effect.std(ddof=1) if n > 1 else None, capsize=4)
    right.plot(np.full(n, len(CONDITIONS)), effect, "k.", markersize=4)
    ticks = [f"teachers\n--augment={condition}" for condition, _ in CONDITIONS]
    left.set_xticks(range(len(CONDITIONS)), ticks)
    left.set_ylim(max(0.0, lowest - 3), 100.5)  # the bars differ by a few points only
    left.set_ylabel("jitter consistency (%)")
    left.set_title("prediction consistency under brightness/contrast jitter")
    left.legend(loc="upper right", fontsize=8)
    right.axhline(0, color="k", linewidth=0.8)
    right.set_xticks(range(len(CONDITIONS) + 1), [*ticks, "jitter − none\n(paired)"])
    right.set_ylabel("distilled − independent (points)")
    right.set_title("distilled student's advantage")
    spread = f"mean ± std over {n} seeds, dots: seeds" if n > 1 else "one seed"
    figure.suptitle(f"Invariance transfer (Ojha et al.), {spread}", fontsize=10)
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    save_figure(figure, args.plot, dpi=120)
    plt.close(figure)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    total = time.perf_counter()
    args = parse_args(argv)
    num_models = args.num_models or tfkd_default("num_models")
    epochs = args.epochs or tfkd_default("epochs")
    command = shlex.join(["python", "tools/invariance_transfer.py", *sys.argv[1:]])
    print(f"Command: {command}")
    print(f"Settings: seeds {','.join(map(str, args.seeds))}, {num_models} teacher members, "
          f"{epochs} epochs, workdirs under {args.workdir}"
          + (f"; every stage also gets {' '.join(args.tfkd_flags)}" if args.tfkd_flags else ""))
    close = [(a, b) for i, a in enumerate(sorted(args.seeds))
             for b in sorted(args.seeds)[i + 1:] if b - a <= num_models]
    if close:
        print(f"Note: members of seed S get the seeds S..S+{num_models - 1}, so seeds "
              f"{', '.join(f'{a} and {b}' for a, b in close)} share teacher members (and a "
              f"student's seed S+{num_models} may be another seed's member): not fully "
              "independent replicates.")
    print(flush=True)

    run_all(args)
    results = read_results(args)
    table = summary_table(results)
    n = len(args.seeds)
    heading = (f"Jitter consistency and test accuracy (%), mean ± std (ddof 1) over {n} seeds"
               if n > 1 else "Jitter consistency and test accuracy (%), one seed")
    effect = paired_effect(results)
    effect_line = ("Paired per seed, advantage with the jitter teacher minus advantage with "
                   f"the plain teacher: {_cell(effect, signed=True)} points "
                   f"(per seed: {', '.join(f'{e:+.2f}' for e in effect)}).")
    if len(effect) > 1:
        # One-sample t-test of the per-seed effects against 0 (two-sided).
        from scipy import stats

        test = stats.ttest_1samp(effect, 0.0)
        effect_line += (f" One-sample t-test against 0: t = {test.statistic:.2f}, "
                        f"df {len(effect) - 1}, p = {test.pvalue:.3f}.")
    print(f"\n{heading}:\n\n{table}\n\n{effect_line}")
    save_plot(results, args)
    wall = time.perf_counter() - total

    report = [
        "# Invariance transfer under colour jitter (Ojha et al.)", "",
        f"Command: `{command}`", "",
        f"Seeds {','.join(map(str, args.seeds))}; {num_models} teacher members, {epochs} "
        f"epochs{'; tfkd flags ' + ' '.join(args.tfkd_flags) if args.tfkd_flags else ''}; "
        f"wall time of this invocation {wall:.0f} s (stages already done are "
        "skipped).", "",
        f"{heading}:", "", table, "",
        "Consistency: the fraction of (test image, jittered view) pairs whose top-1 "
        "prediction equals the clean one (3 views per image); the teacher is the ensemble "
        "of the members. Difference in percentage points.", "",
        effect_line, "",
        "Per seed:", "", per_seed_table(results, args.seeds), "",
        f"Plot: {args.plot}", ""]
    report_path = os.path.join(args.workdir, "invariance_transfer.md")
    with open(report_path, "w") as f:
        f.write("\n".join(report))
    print(f"\nTable: {report_path}\nPlot: {args.plot}\nWall time: {wall:.0f} s")


if __name__ == "__main__":
    main()
