"""What a student inherits from its teacher, read off the two models' logits.

Ojha et al. (NeurIPS 2023) compare a distilled student with an independently trained one of
the same architecture: a property is inherited when the distilled student agrees with the
teacher more than the independent one does. `compare` gives the prediction-level numbers for
one (teacher, student) pair; `property_table` lines up the distilled and independent students.
"""

import numpy as np

from tfkd import metrics as metrics_lib


def compare(teacher_logits, student_logits, labels, num_bins=15):
    """Prediction-level comparison of a student with its teacher.

    Args:
      teacher_logits, student_logits: (N, C) logits on the same N examples.
      labels: (N,) integer class indices.
      num_bins: confidence bins of the ECE.

    Returns:
      A dict of floats: "agreement" (fraction of examples with the same top-1 class),
      "kl_teacher_student" (mean over examples of KL(teacher || student) between the
      predictive distributions, natural log), and for each model "{teacher,student}_accuracy",
      "_nll" and "_ece" (from `tfkd.metrics.classification_report`).
    """
    teacher_logits = np.asarray(teacher_logits, dtype=np.float64)
    student_logits = np.asarray(student_logits, dtype=np.float64)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "`teacher_logits` and `student_logits` must have the same shape; got "
            f"{teacher_logits.shape} and {student_logits.shape}."
        )
    result = {
        "agreement": metrics_lib.agreement(teacher_logits, student_logits),
        "kl_teacher_student": metrics_lib.mean_kl_divergence(
            teacher_logits, student_logits, from_logits=True
        ),
    }
    for role, logits in (("teacher", teacher_logits), ("student", student_logits)):
        report = metrics_lib.classification_report(labels, logits, num_bins=num_bins)
        result.update({f"{role}_{key}": value for key, value in report.items()})
    return result


def property_table(distilled, independent, keys=None):
    """Rows (property, teacher-distilled value, teacher-independent value) for a figure.

    `distilled` and `independent` are dicts of floats for the two students, e.g. two
    `compare` results or any per-property measurements (localisation similarity,
    adversarial transfer, invariance); `keys` picks and orders the properties (default:
    the keys the two dicts share, in `distilled`'s order).
    """
    if keys is None:
        keys = [key for key in distilled if key in independent]
    missing = [key for key in keys if key not in distilled or key not in independent]
    if missing:
        raise ValueError(f"properties {missing} are missing from `distilled` or `independent`.")
    return [(key, float(distilled[key]), float(independent[key])) for key in keys]
