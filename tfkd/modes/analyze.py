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

Writes analysis.json, analysis.md (property, teacher, distilled, independent, difference),
analysis.png (bar chart) and gradcam.png (maps of teacher, distilled and independent
student side by side for a few test images).
"""

import numpy as np
from absl import logging

from tfkd.analysis import adversarial, figures, gradcam, inheritance, invariance
from tfkd.config import ConfigError
from tfkd.data.registry import display_name
from tfkd.ensemble import Ensemble
from tfkd import cache
from tfkd.modes import fit, inputs, results
from tfkd.report import markdown_table
from tfkd.workdir import write_json, write_text

GRADCAM_FIGURE_IMAGES = 6


def teacher_gradcam(members, teacher, x, layer):
    """Grad-CAM of the teacher: one model's map, or the mean of the members' maps for the
    ensemble's predicted class."""
    if len(members) == 1:
        return gradcam.grad_cam(members[0], x, layer_name=layer)
    predicted = np.argmax(cache.predict_logits(teacher, x), axis=-1)
    return np.mean([gradcam.grad_cam(m, x, layer_name=layer, class_index=predicted)
                    for m in members], axis=0)


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    members, _ = inputs.load_members(config, workdir, splits)
    if not workdir.has_model("distilled"):
        raise ConfigError(f"no distilled student in {workdir.root}; run --mode=distill (or "
                          "--mode=pipeline) with this --workdir first")
    distilled = workdir.load_model("distilled")
    if config.analysis_layer:
        # Before the independent student trains: a wrong name must not cost a fit.
        for role, model in (("teacher", members[0]), ("distilled student", distilled)):
            names = [layer.name for layer in model.layers]
            if config.analysis_layer not in names:
                raise ConfigError(f"analysis_layer: the {role} has no layer "
                                  f"{config.analysis_layer!r}; its layers are: "
                                  f"{', '.join(names[-30:])}")
    independent, _ = fit.fit_model(config, workdir, splits, name="independent",
                                   kind="independent", seed=config.seed + config.num_models,
                                   progress=progress or results.Progress(1))
    teacher = members[0] if len(members) == 1 else Ensemble(
        members, average=config.teacher_average, name="teachers")
    result, table, x, maps = measure(config, splits, members, teacher,
                                     {"distilled": distilled, "independent": independent})
    result["properties"] = [
        {"property": p, "teacher": t, "distilled": v["distilled"],
         "independent": v["independent"],
         "difference": None if v["distilled"] is None or v["independent"] is None
         else v["distilled"] - v["independent"]}
        for p, t, v in table]
    if workdir.writable:
        write_json(workdir.path("analysis.json"), result)
        write_text(workdir.path("analysis.md"), to_markdown(config, result))
        figures.plot_property_table([(p, v["distilled"], v["independent"])
                                     for p, _, v in table[:6]],
                                    workdir.path("analysis.png"),
                                    title=f"{display_name(config.dataset)}: what the "
                                          "distilled student inherits")
        figures.plot_gradcam_grid(x[:GRADCAM_FIGURE_IMAGES],
                                  {k: v[:GRADCAM_FIGURE_IMAGES] for k, v in maps.items()},
                                  workdir.path("gradcam.png"))
    logging.info("\n%s", to_markdown(config, result))
    return []


def measure(config, splits, members, teacher, students):
    """Every property of each student in `students` ({name: model}) against the teacher, on
    --analysis_examples test examples (a stratified sample) (the attacks are made once, against the
    teacher, and scored on every student).

    Returns (result, table, x, maps): `result` holds the per-student comparisons, the
    attacks and their counts; `table` is [(property, the teacher's own value or None,
    {student: value})]; `x` the examples and `maps` their Grad-CAM maps by model name
    ("teacher" too).
    """
    x, y = splits.sample("test", config.analysis_examples)
    low, high = float(splits.x_train.min()), float(splits.x_train.max())
    logits = {name: cache.predict_logits(m, x)
              for name, m in {"teacher": teacher, **students}.items()}
    per_student = {name: inheritance.compare(logits["teacher"], logits[name], y)
                   for name in students}

    layer = config.analysis_layer or None
    try:
        maps = {"teacher": teacher_gradcam(members, teacher, x, layer)}
        maps.update({name: gradcam.grad_cam(m, x, layer_name=layer)
                     for name, m in students.items()})
    except ValueError as e:
        raise ConfigError(f"Grad-CAM: {e}") from None
    localisation = {name: gradcam.mean_map_similarity(maps["teacher"], maps[name])
                    for name in students}

    epsilon = config.epsilon * (high - low)
    attacks = {
        attack: adversarial.transfer(teacher, students, x, y, epsilon, attack=attack,
                                     steps=config.pgd_steps, clip=(low, high), seed=config.seed)
        for attack in ("fgsm", "pgd")}
    consistency = {name: invariance.consistency(m, x, n_views=3, seed=config.seed,
                                                value_range=(low, high))
                   for name, m in {"teacher": teacher, **students}.items()}

    first = per_student[next(iter(students))]

    def each(value):
        return {s: value(s) for s in students}

    # (property, teacher's own value or None, {student: value})
    table = [
        ("top-1 agreement with teacher", None, each(lambda s: per_student[s]["agreement"])),
        ("KL(teacher ‖ student)", None, each(lambda s: per_student[s]["kl_teacher_student"])),
        ("Grad-CAM similarity with teacher", None, each(lambda s: localisation[s])),
        (f"FGSM transfer (eps {config.epsilon:g} of range)", attacks["fgsm"]["teacher_fooled"],
         each(lambda s: attacks["fgsm"]["transfer"][s])),
        (f"PGD-{config.pgd_steps} transfer (eps {config.epsilon:g} of range)",
         attacks["pgd"]["teacher_fooled"], each(lambda s: attacks["pgd"]["transfer"][s])),
        ("jitter consistency", consistency["teacher"], each(lambda s: consistency[s])),
        ("test accuracy", first["teacher_accuracy"],
         each(lambda s: per_student[s]["student_accuracy"])),
        ("test ECE", first["teacher_ece"], each(lambda s: per_student[s]["student_ece"])),
        ("test NLL", first["teacher_nll"], each(lambda s: per_student[s]["student_nll"])),
    ]
    result = {"examples": len(y),
              "examples_per_class": np.bincount(y, minlength=splits.num_classes).tolist(),
              "teacher": "ensemble of %d" % len(members)
              if len(members) > 1 else members[0].name,
              "compare": per_student, "adversarial": attacks, "epsilon_absolute": epsilon,
              "gradcam_layer": layer or "last convolutional layer"}
    return result, table, x, maps


def to_markdown(config, result):
    lines = [f"# What the distilled student inherits ({config.dataset} / {config.model}, "
             f"teacher: {result['teacher']}, {result['examples']} test examples)", ""]
    lines += markdown_table(
        ("property", "teacher", "teacher-distilled", "teacher-independent", "difference"),
        [[row[k] for k in ("property", "teacher", "distilled", "independent", "difference")]
         for row in result["properties"]], number="{:.4f}")
    lines += ["", "For the transfer rows the teacher column is the fraction of examples the "
              "attack fools the teacher on; for jitter, accuracy, ECE and NLL it is the "
              "teacher's own value."]
    for attack, report in result["adversarial"].items():
        counts = ", ".join(f"{name} {count}" for name, count
                           in report["num_transfer_examples"].items())
        lines.append(f"{attack.upper()}: the teacher is fooled on {report['num_teacher_fooled']} "
                     f"of the {report['num_teacher_correct']} examples it gets right; transfer "
                     f"rates count the ones each student gets right clean ({counts}).")
    return "\n".join(lines) + "\n"
