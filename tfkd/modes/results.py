"""Result rows: a model's (or an ensemble's) validation and test metrics, the split sizes
they were measured on, and one progress line per finished model."""

import math

import numpy as np
from absl import logging

from tfkd import cache, metrics
from tfkd.ensemble import Ensemble


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
