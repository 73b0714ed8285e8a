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


def chance_problem(splits, val_accuracy):
    """Why a model at `val_accuracy` has learned nothing, or None.

    Nothing learned: validation accuracy no better than always answering the validation
    split's most common class, within two binomial standard errors of that rate (so a
    small validation split's noise is not taken for learning).
    """
    labels = np.asarray(splits.y_val)
    if labels.ndim > 1:
        labels = labels.argmax(-1)
    if not len(labels):
        return None
    majority = np.bincount(labels.reshape(-1).astype(np.int64)).max() / len(labels)
    bound = majority + 2 * math.sqrt(majority * (1 - majority) / len(labels))
    if val_accuracy > bound:
        return None
    return (f"validation accuracy {100 * val_accuracy:.2f}% is no better than always "
            f"answering the most common class ({100 * majority:.2f}% of {len(labels)} "
            "validation examples)")


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
