"""Result rows: a model's (or an ensemble's) validation and test metrics, the split sizes
they were measured on, and one progress line per finished model."""

import math
import os

import numpy as np
from absl import logging

from tfkd import cache, metrics
from tfkd.ensemble import Ensemble
from tfkd.modes import store
from tfkd.workdir import DamagedFile


def split_sizes(splits):
    """The number of examples each metric of a row was measured on (or trained on)."""
    return {"train_examples": len(splits.x_train), "val_examples": len(splits.x_val),
            "test_examples": len(splits.x_test)}


def evaluate_logits(splits, logits_val, logits_test):
    """A result row's metric fields from validation and test logits."""
    test = metrics.classification_report(splits.y_test, logits_test)
    return {
        "val_accuracy": metrics.accuracy(splits.y_val, logits_val),
        "test_accuracy": test["accuracy"],
        "test_nll": test["nll"],
        "test_ece": test["ece"],
        **split_sizes(splits),
    }


def evaluate_model(model, splits):
    return evaluate_logits(splits, cache.predict_logits(model, splits.x_val),
                           cache.predict_logits(model, splits.x_test))


def stored_test_logits(workdir, name, model, splits):
    """Finished model `name`'s logits on the test split, kept in <workdir>/test_logits under
    its content hash (a retrained model gets its own file): per-image comparisons of a
    finished run are then made without running its models again."""
    from tfkd.workdir import atomic_file

    sha = workdir.read_metrics(name).get("sha", "nosha")[:16]
    path = workdir.path("test_logits", f"{name}-{sha}-{len(splits.x_test)}.npy")
    if os.path.exists(path):
        return np.load(path)
    logits = cache.predict_logits(model, splits.x_test)
    with atomic_file(path) as f:
        np.save(f, logits)
    return logits


# A validation split whose chance band (two standard errors of the majority rate) is wider
# than this cannot tell a model that learned a little from one that learned nothing.
WIDEST_JUDGEABLE_BAND = 0.10


def chance_verdict(splits, val_accuracy):
    """(verdict, message): whether a model at `val_accuracy` learned anything.

    The rule: a model learned nothing when its validation accuracy is not above the
    validation split's most common class's share plus two binomial standard errors of that
    share. verdict is None (it learned), "chance" (it did not), or "too_small" (the split is
    too small to tell: two standard errors exceed WIDEST_JUDGEABLE_BAND, and the accuracy
    is inside the band), with a message saying which numbers gave it.
    """
    labels = np.asarray(splits.y_val)
    if labels.ndim > 1:
        labels = labels.argmax(-1)
    if not len(labels):
        return None, None
    n = len(labels)
    majority = np.bincount(labels.reshape(-1).astype(np.int64)).max() / n
    band = 2 * math.sqrt(majority * (1 - majority) / n)
    if val_accuracy > majority + band:
        return None, None
    rule = (f"validation accuracy {100 * val_accuracy:.2f}% is not above "
            f"{100 * (majority + band):.2f}%, the most common class's share "
            f"({100 * majority:.2f}% of {n} validation examples) plus two standard errors "
            f"({100 * band:.2f} points)")
    if band > WIDEST_JUDGEABLE_BAND:
        return "too_small", (f"{rule}: {n} validation examples are too few to tell whether it "
                             "learned (--val_size=N holds out more)")
    return "chance", rule


TEACHER_KIND = "teacher"


def record_teachers(workdir, splits, members, paths):
    """Each teacher from outside the workdir (--teacher_dir) evaluated on this run's
    splits and recorded as a result row named teacher_<i> (once per teacher file and split
    sizes), with a warning when it scores far below what it is known to score.

    Known: the test accuracy its own tfkd workdir recorded for it, when it comes from one.
    Far below: more than max(2 points, three standard errors of that accuracy). Otherwise,
    a teacher at chance on the validation split is warned about. Either way the likeliest
    cause is inputs prepared otherwise than the teacher was trained on.
    """
    rows = []
    for i, (model, path) in enumerate(zip(members, paths)):
        name, sha = f"teacher_{i}", store.file_sha(path)
        sizes = split_sizes(splits)
        try:
            record = workdir.read_metrics(name)
            if record.get("sha") == sha and all(record["row"].get(k) == v
                                                for k, v in sizes.items()):
                rows.append(record["row"])
                continue
        except (OSError, DamagedFile):  # none, or damaged: evaluated again
            pass
        row = {"name": name, "kind": TEACHER_KIND, "seed": None, "generation": None,
               "teacher": None, **evaluate_model(model, splits)}
        problem = teacher_problem(splits, row, store.recorded_row(path))
        if problem:
            logging.warning("tfkd: warning: teacher %s (%s) %s", name, path, problem)
        workdir.write_metrics(name, {"row": row, "role": TEACHER_KIND, "file": path,
                                     "sha": sha})
        logging.info("%-32s val %.2f%%  test %.2f%%  (%s)", name, 100 * row["val_accuracy"],
                     100 * row["test_accuracy"], path)
        rows.append(row)
    return rows


def teacher_problem(splits, row, recorded):
    """Why a teacher scoring `row` here looks wrong, or None (see `record_teachers`)."""
    advice = ("its inputs may be prepared otherwise than it was trained on (tfkd "
              "standardises images with the training split's statistics; --input_scaling=unit "
              "gives [0, 1] images, --input_scaling=none the values as stored)")
    if recorded and recorded.get("test_accuracy") is not None:
        known, n = float(recorded["test_accuracy"]), recorded.get("test_examples") or len(
            splits.y_test)
        margin = max(0.02, 3 * math.sqrt(max(known * (1 - known), 1e-12) / n))
        if row["test_accuracy"] < known - margin:
            return (f"scores {100 * row['test_accuracy']:.2f}% on this run's test split, "
                    f"against {100 * known:.2f}% recorded when it was trained (more than "
                    f"{100 * margin:.1f} points below): {advice}")
        return None
    verdict, why = chance_verdict(splits, row["val_accuracy"])
    if verdict == "chance":
        return f"scores at chance here: {why}; {advice}"
    return None


def ensemble_row(config, workdir, splits, members, *, name, kind):
    """Evaluates the average of `members`, records it as a result row."""
    ensemble = Ensemble(members, average=config.teacher_average)
    # One pass of the members per split gives both the row and the disagreement.
    report = ensemble.evaluate_members(splits.x_val, splits.y_val)
    test = ensemble.evaluate_members(splits.x_test, splits.y_test)
    row = {"name": name, "kind": kind, "seed": None, "generation": None, "teacher": None,
           **evaluate_logits(splits, report["logits"], test["logits"]),
           "disagreement_val": report["disagreement"]}
    workdir.write_metrics(name, {"row": row, "role": kind, "members": [m.name for m in members]})
    logging.info("%-32s val %.2f%%  test %.2f%%  (%d members, disagreement %.3f)", name,
                 100 * row["val_accuracy"], 100 * row["test_accuracy"], len(members),
                 report["disagreement"] or 0.0)
    return ensemble, row


class Progress:
    """One line per finished (or reused) model: what it is, how good, how long."""

    def __init__(self, total):
        self.total, self.done = total, 0

    def report(self, row, seconds=None):
        self.done += 1
        took = f" in {seconds:.1f}s" if seconds is not None else " (reused)"
        logging.info("[%d/%d] %-28s val %.2f%%  test %.2f%%%s", self.done, self.total,
                     row["name"], 100 * row["val_accuracy"], 100 * row["test_accuracy"], took)
