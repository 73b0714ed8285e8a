"""analyze: what did the distilled student inherit from its teacher (Ojha et al., NeurIPS 2023)?

Over a workdir holding the distilled student and the members (the teacher: their
ensemble, or the one member; from --teacher_dir when given, as in `distill`), this
trains the independent baseline if it is missing: the same architecture and seed as
`distilled` (seed s+N), labels only. Then, on the test split, each student is compared
with the teacher:

  - top-1 agreement and mean KL(teacher || student) of the predictive distributions;
  - calibration: ECE and NLL of every model;
  - localisation: Pearson similarity of Grad-CAM maps at --analysis_layer (default: the
    last convolutional layer), averaged over test images. An ensemble teacher's map is
    the mean of its members' maps for the ensemble's predicted class;
  - adversarial transfer: FGSM and PGD (L-infinity, --epsilon times the data's range,
    --pgd_steps) examples made against the teacher; the fraction of those that fool the
    teacher which also fool each student (among examples the student gets right clean);
  - invariance: prediction consistency under brightness / contrast (and, for colour
    images, saturation / hue) jitter with the paper's magnitudes. The property Ojha et al.
    study is whether a teacher trained *with* such jitter passes its invariance on; here
    the teacher is whatever the workdir holds, and the table says how invariant each is.

Every rate comes with its count and Wilson's 95% interval, every mean over examples with a
95% bootstrap interval. With --analysis_students=K >= 2, K distilled students (seeds s+N,
s+N+1, ...) are each compared with an independent student of their seed, and each property
is reported as mean ± std over the seeds with a paired t-test (distilled against
independent).

What cannot run on this model or data is decided before anything trains and shown as a
"skipped" row: Grad-CAM needs a layer with a spatial feature map (an MLP has none), jitter
needs images.

Writes analysis.json, analysis.md (property, teacher, distilled, independent, difference),
analysis.png (bar chart) and gradcam.png (maps of teacher, distilled and independent
student side by side for a few test images, with their true and predicted classes).
"""

import numpy as np
from absl import logging

from tfkd import cache
from tfkd import metrics as metrics_lib
from tfkd.analysis import adversarial, figures, gradcam, inheritance, invariance, stats
from tfkd.config import ConfigError
from tfkd.data import display_name
from tfkd.modes import fit, inputs, results, store
from tfkd.report import markdown_table
from tfkd.workdir import write_json, write_text

GRADCAM_FIGURE_IMAGES = 6
JITTER_VIEWS = 3
GRADCAM = "Grad-CAM similarity with teacher"
JITTER = "jitter consistency"


def student_names(config, count=None, suffix=""):
    """[(seed, distilled student's name, independent student's name)] of the compared pairs,
    seeds seed+N, seed+N+1, ... (`count`, default --analysis_students): the first pair is
    `distilled` (--mode=distill's student) and `independent`, the others `distilled_S` and
    `independent_S`; each name ends in `suffix` (`store.student_suffix`: "_<model>" for
    students of another architecture than the teachers')."""
    first = config.seed + config.num_models
    count = config.analysis_students if count is None else count
    return [(s, *(name + suffix for name in pair_names(s, first)))
            for s in range(first, first + count)]


def pair_names(seed, first_seed):
    """(distilled name, independent name) of the students of `seed`; those of `first_seed`
    (seed+N) are --mode=distill's `distilled` and its control `independent`."""
    if seed == first_seed:
        return "distilled", "independent"
    return f"distilled_{seed}", f"independent_{seed}"


def train_students(config, workdir, splits, teachers, pairs, progress, distilled=None):
    """The compared students, {name: model}, trained or reused (`fit.fit_model`) in pair
    order: each pair's distilled student (taught by `teachers`; `distilled`, when given,
    stands as the first one) and its independent student (labels only, the same seed)."""
    students = {}
    for k, (seed, distilled_name, independent_name) in enumerate(pairs):
        if k == 0 and distilled is not None:
            students[distilled_name] = distilled
        else:
            students[distilled_name], _ = fit.fit_model(
                config, workdir, splits, name=distilled_name, kind="distilled", seed=seed,
                teachers=teachers, progress=progress)
        students[independent_name], _ = fit.fit_model(
            config, workdir, splits, name=independent_name, kind="independent", seed=seed,
            progress=progress)
    return students


def teacher_gradcam(members, teacher, x, layer):
    """Grad-CAM of the teacher: one model's map, or the mean of the members' maps for the
    ensemble's predicted class."""
    if len(members) == 1:
        return gradcam.grad_cam(members[0], x, layer_name=layer)
    predicted = np.argmax(cache.predict_logits(teacher, x), axis=-1)
    return np.mean([gradcam.grad_cam(m, x, layer_name=layer, class_index=predicted)
                    for m in members], axis=0)


def skipped_properties(config, splits, models):
    """What cannot be measured on these models and data, from their architectures and the
    data's shape alone, so it is known before anything trains: {property: why} for Grad-CAM
    (no layer with a spatial feature map, e.g. an MLP) and jitter (inputs that are not
    images). `models`: [(role, keras.Model)], the teachers and the students (or a model of
    the students' architecture). A --analysis_layer the models lack, or that is no feature
    map, is a mistake, not a skip: a ConfigError."""
    shape = tuple(splits.input_shape)
    skipped = {}
    if len(shape) != 3:
        skipped[JITTER] = (f"jitter needs images (height, width, channels); "
                           f"{display_name(config.dataset)} inputs have shape {shape}")
    layer = config.analysis_layer or None
    if len(shape) not in (2, 3) and not layer:
        skipped[GRADCAM] = (f"Grad-CAM needs inputs with spatial axes; "
                            f"{display_name(config.dataset)} inputs have shape {shape}")
        return skipped
    for role, model in models:
        if layer and layer not in [each.name for each in model.layers]:
            names = [each.name for each in model.layers]
            raise ConfigError(f"analysis_layer: the {role} has no layer {layer!r}; its layers "
                              f"are: {', '.join(names[-30:])}")
        try:
            gradcam.feature_layer(model, layer, len(shape) + 1)
        except ValueError as e:
            if layer:
                raise ConfigError(f"analysis_layer: {e} Grad-CAM needs a feature map; give "
                                  "another layer, or leave --analysis_layer empty") from None
            logging.info("Grad-CAM skipped: %s", e)
            skipped[GRADCAM] = (f"the {role} ({model.name}) has no layer with a spatial "
                                "feature map, which Grad-CAM weighs")
            break
    return skipped


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    members, teachers = inputs.ensemble_teachers(config, workdir, splits)
    # A student of another architecture than the teachers' is distilled_<model>, as
    # --mode=distill names it, and so are its controls.
    pairs = student_names(config, suffix=store.student_suffix(
        config, inputs.teacher_dir(config, workdir)))
    first = pairs[0][1]
    if not workdir.has_model(first):
        raise ConfigError(f"no distilled student {first!r} in {workdir.root}; run "
                          "--mode=distill (or --mode=pipeline) with this --workdir and "
                          f"--model={config.model} first")
    distilled = store.load_finished(workdir, first, "run --mode=distill with this "
                                    "--workdir to train it again")
    # Before any student trains: what cannot run is known from the architectures.
    architecture = fit.build_student(config, splits, 0, "analysis_check")
    skipped = skipped_properties(config, splits, [
        *(("teacher", m) for m in members), ("distilled student", distilled),
        (f"student architecture ({config.model})", architecture)])
    progress = progress or results.Progress(2 * len(pairs) - 1)
    students = train_students(config, workdir, splits, teachers, pairs, progress, distilled)
    teacher = members[0] if len(members) == 1 else teachers.model
    result, table, shown = measure(config, splits, members, teacher, students, skipped)
    result["students"] = [{"seed": seed, "distilled": d, "independent": i}
                          for seed, d, i in pairs]
    result["properties"] = summarize(table, pairs)
    if workdir.writable:
        write_json(workdir.path("analysis.json"), result)
        write_text(workdir.path("analysis.md"), to_markdown(config, result))
        figures.plot_property_table(
            [(row["property"], row["distilled"], row["independent"])
             for row in result["properties"][:6] if not row["skipped"]],
            workdir.path("analysis.png"),
            title=f"{display_name(config.dataset)} / {config.model}: what the distilled "
                  "student inherits")
        if shown is not None:
            figures.plot_gradcam_grid(shown["x"], shown["maps"], workdir.path("gradcam.png"),
                                      labels=shown["y"], predictions=shown["predictions"])
    logging.info("\n%s", to_markdown(config, result))
    return []


def measure(config, splits, members, teacher, students, skipped=None):
    """Every property of each student in `students` ({name: model}) against the teacher, on
    --analysis_examples test examples (a stratified sample) (the attacks are made once,
    against the teacher, and scored on every student).

    `skipped`: {property: why} of what cannot run here (default: `skipped_properties` of
    these models). Returns (result, table, shown): `result` holds the per-student
    comparisons, the attacks and their counts; `table` is a list of {"property", "teacher"
    (the teacher's own value as a cell, or None), "students" ({name: cell}), "skipped"
    (why, or None)}, each cell a dict with "value" and, where they apply, "count", "of" and
    "ci95"; `shown` is what the Grad-CAM figure shows of the first students in `students`
    and the first GRADCAM_FIGURE_IMAGES examples ({"x", "y", "maps", "predictions"}), None
    when Grad-CAM is skipped.
    """
    if skipped is None:
        skipped = skipped_properties(config, splits, [
            *(("teacher", m) for m in members), *students.items()])
    x, y = splits.sample("test", config.analysis_examples)
    low, high = float(splits.x_train.min()), float(splits.x_train.max())
    logits = {name: cache.predict_logits(m, x)
              for name, m in {"teacher": teacher, **students}.items()}
    predicted = {name: np.argmax(l, axis=-1) for name, l in logits.items()}
    per_student = {name: inheritance.compare(logits["teacher"], logits[name], y)
                   for name in students}
    seed = config.seed

    def each(cell):
        return {name: cell(name) for name in students}

    rows = []

    def row(prop, teacher_cell, cells, why=None):
        rows.append({"property": prop, "teacher": teacher_cell, "students": cells,
                     "skipped": why})

    row("top-1 agreement with teacher", None,
        each(lambda s: stats.rate(predicted[s] == predicted["teacher"])))
    row("KL(teacher ‖ student)", None, each(lambda s: stats.mean_interval(
        metrics_lib.mean_kl_divergence(logits["teacher"], logits[s], from_logits=True,
                                       per_example=True), seed=seed)))

    shown, layer = None, config.analysis_layer or None
    if GRADCAM in skipped:
        row(GRADCAM, None, None, skipped[GRADCAM])
    else:
        maps = {"teacher": teacher_gradcam(members, teacher, x, layer)}
        maps.update({name: gradcam.grad_cam(m, x, layer_name=layer)
                     for name, m in students.items()})
        row(GRADCAM, None, each(lambda s: stats.mean_interval(
            gradcam.map_similarity(maps["teacher"], maps[s]), seed=seed)))
        first = ["teacher", *list(students)[:2]]
        n = GRADCAM_FIGURE_IMAGES
        shown = {"x": x[:n], "y": y[:n], "maps": {k: maps[k][:n] for k in first},
                 "predictions": {k: predicted[k][:n] for k in first}}

    epsilon = config.epsilon * (high - low)
    attacks = {
        attack: adversarial.transfer(teacher, students, x, y, epsilon, attack=attack,
                                     steps=config.pgd_steps, clip=(low, high), seed=seed)
        for attack in ("fgsm", "pgd")}
    for attack, label in (("fgsm", "FGSM"), ("pgd", f"PGD-{config.pgd_steps}")):
        a = attacks[attack]
        row(f"{label} transfer (eps {config.epsilon:g} of range)",
            stats.proportion(a["num_teacher_fooled"], a["num_teacher_correct"]),
            each(lambda s: stats.proportion(a["num_transferred"][s], a["num_transfer_examples"][s])))

    if JITTER in skipped:
        row(JITTER, None, None, skipped[JITTER])
    else:
        # Saturation and hue need RGB: images of other channel counts get brightness and
        # contrast only, as grey-scale images do.
        colour = {} if x.shape[-1] in (1, 3) else {"saturation": 0.0, "hue": 0.0}

        def jitter_cell(model):
            same = invariance.consistency(model, x, n_views=JITTER_VIEWS, seed=seed,
                                          value_range=(low, high), per_example=True, **colour)
            cell = stats.mean_interval(same.mean(axis=1), seed=seed, weight=JITTER_VIEWS)
            return {**cell, "count": int(same.sum())}

        row(JITTER, jitter_cell(teacher), each(lambda s: jitter_cell(students[s])))

    row("test accuracy", stats.rate(predicted["teacher"] == y),
        each(lambda s: stats.rate(predicted[s] == y)))
    first = per_student[next(iter(students))]
    # ECE is a binned statistic of the whole sample, not a mean of per-example terms.
    row("test ECE", {"value": first["teacher_ece"]},
        each(lambda s: {"value": per_student[s]["student_ece"]}))
    row("test NLL", stats.mean_interval(metrics_lib.negative_log_likelihood(
        y, logits["teacher"], from_logits=True, per_example=True), seed=seed),
        each(lambda s: stats.mean_interval(metrics_lib.negative_log_likelihood(
            y, logits[s], from_logits=True, per_example=True), seed=seed)))

    result = {"examples": len(y),
              "examples_per_class": np.bincount(y, minlength=splits.num_classes).tolist(),
              "teacher": "ensemble of %d" % len(members)
              if len(members) > 1 else members[0].name,
              "compare": per_student, "adversarial": attacks, "epsilon_absolute": epsilon,
              "gradcam_layer": None if GRADCAM in skipped
              else layer or "last convolutional layer",
              "skipped": skipped}
    return result, rows, shown


def summarize(table, pairs):
    """`measure`'s table as one record per property over the compared pairs [(seed,
    distilled name, independent name)]: "teacher" (its value), "distilled",
    "independent" (means over the seeds), "difference" (mean over the seeds of distilled
    - independent), their "*_std" (ddof 1; None for one seed), "paired_test" (a two-sided
    paired t-test over the seeds; None for one), "per_seed" (each seed's cells) and
    "skipped" (why, or None)."""
    records = []
    for row in table:
        record = {"property": row["property"], "skipped": row["skipped"],
                  "teacher": None if row["teacher"] is None else row["teacher"]["value"],
                  "teacher_cell": row["teacher"]}
        if row["skipped"]:
            records.append({**record, "distilled": None, "independent": None,
                            "difference": None, "distilled_std": None,
                            "independent_std": None, "difference_std": None,
                            "paired_test": None, "per_seed": []})
            continue
        per_seed = []
        for seed, d, i in pairs:
            a, b = row["students"][d], row["students"][i]
            per_seed.append({"seed": seed, "distilled": a, "independent": b,
                             "difference": None if a["value"] is None or b["value"] is None
                             else a["value"] - b["value"]})
        d = stats.over_seeds([p["distilled"]["value"] for p in per_seed])
        i = stats.over_seeds([p["independent"]["value"] for p in per_seed])
        diffs = [p["difference"] for p in per_seed if p["difference"] is not None]
        diff = stats.over_seeds(diffs)
        record.update({
            "distilled": d["mean"], "independent": i["mean"], "difference": diff["mean"],
            "distilled_std": d["std"], "independent_std": i["std"],
            "difference_std": diff["std"],
            "paired_test": stats.paired_mean_test(diffs, alternative="two-sided")
            if len(diffs) > 1 else None,
            "per_seed": per_seed})
        records.append(record)
    return records


def cell_text(cell):
    """A measured value as the table shows it: value (count/of; 95% interval)."""
    if cell is None:
        return ""
    value = "-" if cell["value"] is None else f"{cell['value']:.4f}"
    detail = []
    if "count" in cell:
        detail.append(f"{cell['count']}/{cell['of']}")
    low, high = cell.get("ci95", (None, None))
    if low is not None:
        detail.append(f"{low:.4f}–{high:.4f}")
    return f"{value} ({'; '.join(detail)})" if detail else value


def _mean_std(mean, std, signed=False):
    if mean is None:
        return "-"
    text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
    return text if std is None else f"{text} ± {std:.4f}"


def _test_text(test):
    if test is None or test["p"] is None:
        return "-"
    t = "no variance" if test["t"] is None else f"t = {test['t']:.2f}"
    return f"{t}, p = {test['p']:.3g} ({test['n']} seeds)"


def to_markdown(config, result):
    properties = result["properties"]
    seeds = [s["seed"] for s in result["students"]]
    lines = [f"# What the distilled student inherits ({display_name(config.dataset)} / "
             f"{config.model}, teacher: {result['teacher']}, {result['examples']} test "
             f"examples, {len(seeds)} student seed{'s' if len(seeds) > 1 else ''})", ""]
    header = ("property", "teacher", "teacher-distilled", "teacher-independent", "difference")
    if len(seeds) == 1:
        rows = []
        for p in properties:
            if p["skipped"]:
                rows.append([p["property"], f"skipped: {p['skipped']}", "", "", ""])
                continue
            [one] = p["per_seed"]
            rows.append([p["property"], cell_text(p["teacher_cell"]),
                         cell_text(one["distilled"]), cell_text(one["independent"]),
                         "-" if p["difference"] is None else f"{p['difference']:+.4f}"])
        lines += markdown_table(header, rows)
    else:
        rows = []
        for p in properties:
            if p["skipped"]:
                rows.append([p["property"], f"skipped: {p['skipped']}", "", "", "", ""])
                continue
            rows.append([
                p["property"], cell_text(p["teacher_cell"]),
                _mean_std(p["distilled"], p["distilled_std"]),
                _mean_std(p["independent"], p["independent_std"]),
                _mean_std(p["difference"], p["difference_std"], signed=True),
                _test_text(p["paired_test"])])
        lines += markdown_table((*header[:2], "teacher-distilled, mean ± std",
                                 "teacher-independent, mean ± std",
                                 "difference, mean ± std", "paired t-test, two-sided"), rows)
        lines += ["", f"Each seed ({', '.join(map(str, seeds))}):", ""]
        lines += markdown_table(
            ("property", "seed", "teacher-distilled", "teacher-independent", "difference"),
            [[p["property"], s["seed"], cell_text(s["distilled"]), cell_text(s["independent"]),
              "-" if s["difference"] is None else f"{s['difference']:+.4f}"]
             for p in properties if not p["skipped"] for s in p["per_seed"]])
    lines += ["", "Rates give their count and Wilson's 95% interval; means over examples (KL, "
              "Grad-CAM similarity, NLL) and jitter consistency (the views of one example "
              "resampled together) a 95% bootstrap interval over the examples; ECE, a binned "
              "statistic of the whole sample, its value. For the transfer rows the teacher "
              "column is the fraction of the examples it gets right that the attack fools; "
              "for jitter, accuracy, ECE and NLL it is the teacher's own value."]
    if len(seeds) > 1:
        lines.append("Mean ± std over the student seeds (ddof 1); the paired t-test compares "
                     "each seed's distilled student with the independent student of its seed.")
    for attack, report in result["adversarial"].items():
        counts = ", ".join(f"{name} {count}" for name, count
                           in report["num_transfer_examples"].items())
        lines.append(f"{attack.upper()}: the teacher is fooled on {report['num_teacher_fooled']} "
                     f"of the {report['num_teacher_correct']} examples it gets right; transfer "
                     f"rates count the ones each student gets right clean ({counts}).")
    return "\n".join(lines) + "\n"
