"""Accuracy, NLL, calibration, teacher agreement and ensemble disagreement.

Two faces of the same quantities: plain NumPy functions for offline analysis of saved
predictions, and Keras metrics for `compile(metrics=[...])` and the Distiller. Each Keras
metric keeps its state in metric variables (Keras sums them across replicas under
tf.distribute) and, fed the same examples in any batching, equals its NumPy twin.

Labels are integer class indices of shape (N,); predictions are (N, C) probabilities unless
`from_logits=True`. Metrics that only look at the top-1 class take logits or probabilities
alike, since argmax is invariant under softmax.
"""

import itertools

import keras
import numpy as np
from keras import ops

__all__ = [
    "softmax",
    "accuracy",
    "negative_log_likelihood",
    "expected_calibration_error",
    "agreement",
    "mean_kl_divergence",
    "pairwise_disagreement",
    "classification_report",
    "NegativeLogLikelihood",
    "ExpectedCalibrationError",
    "TeacherAgreement",
    "PairwiseDisagreement",
]


# ----------------------------------------------------------------------------- NumPy


def softmax(logits, axis=-1):
    """Numerically stable softmax of a NumPy array or tensor."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=axis, keepdims=True)


def _log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _predictions(name, x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`{name}` must have shape (N, C) with N, C >= 1; got shape {x.shape}.")
    return x


def _labels(labels, probs_shape):
    labels = np.asarray(labels)
    num_examples, num_classes = probs_shape
    if labels.shape != (num_examples,):
        raise ValueError(
            f"`labels` must have shape (N,) = ({num_examples},) to match predictions of shape "
            f"{probs_shape}; got shape {labels.shape}."
        )
    # Float labels come out of many loaders (e.g. y arrays stored as float32); accept them
    # only when they are whole numbers, so a one-hot or soft target is not silently misread.
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise ValueError(f"`labels` must be integer class indices; got dtype {labels.dtype}.")
        labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"`labels` must lie in [0, {num_classes}); got range [{labels.min()}, {labels.max()}]."
        )
    return labels


def _same_shape(name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape; got {a.shape} and {b.shape}."
        )


def accuracy(labels, probs):
    """Fraction of examples whose top-1 class is the label (probabilities or logits)."""
    probs = _predictions("probs", probs)
    labels = _labels(labels, probs.shape)
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def negative_log_likelihood(labels, probs, eps=1e-12, from_logits=False, per_example=False):
    """Mean over examples of -log p(label), natural log (`per_example`: the (N,) terms).

    Probabilities are clipped below at `eps` so a confidently wrong example costs
    -log(eps) instead of inf. With `from_logits=True` the log-softmax is exact and `eps` unused.
    """
    probs = _predictions("probs", probs)
    labels = _labels(labels, probs.shape)
    rows = np.arange(len(labels))
    if from_logits:
        terms = -_log_softmax(probs)[rows, labels]
    else:
        terms = -np.log(np.maximum(probs[rows, labels], eps))
    return terms if per_example else float(np.mean(terms))


def _bin_indices(confidences, num_bins):
    # Bins are (k/B, (k+1)/B]: an example belongs to the bin whose upper edge is the first
    # one >= its confidence, so confidence 1.0 lands in the last bin (a half-open [lo, hi)
    # rule would drop it, or index past the end).
    inner_edges = np.linspace(0.0, 1.0, num_bins + 1)[1:-1]
    return np.searchsorted(inner_edges, confidences, side="left")


def expected_calibration_error(labels, probs, num_bins=15, from_logits=False):
    """Top-1 ECE with `num_bins` equal-width confidence bins over (0, 1].

    sum over bins of (bin count / N) * |accuracy(bin) - mean confidence(bin)|.
    """
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"`num_bins` must be a positive integer; got {num_bins!r}.")
    probs = _predictions("probs", probs)
    labels = _labels(labels, probs.shape)
    if from_logits:
        probs = softmax(probs)
    confidences = np.max(probs, axis=-1)
    correct = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
    bins = _bin_indices(confidences, int(num_bins))
    # (n_b / N) * |acc_b - conf_b| = |sum correct_b - sum conf_b| / N: no per-bin division,
    # so empty bins need no special case.
    gaps = np.bincount(bins, weights=correct - confidences, minlength=int(num_bins))
    return float(np.sum(np.abs(gaps)) / len(labels))


def agreement(probs_a, probs_b):
    """Fraction of examples on which two models predict the same top-1 class."""
    probs_a = _predictions("probs_a", probs_a)
    probs_b = _predictions("probs_b", probs_b)
    _same_shape("probs_a", probs_a, "probs_b", probs_b)
    return float(np.mean(np.argmax(probs_a, axis=-1) == np.argmax(probs_b, axis=-1)))


def mean_kl_divergence(probs_p, probs_q, eps=1e-12, from_logits=False, per_example=False):
    """Mean over examples of KL(p || q) = sum_c p_c (log p_c - log q_c), natural log
    (`per_example`: the (N,) divergences).

    Terms with p_c = 0 contribute 0; q is clipped below at `eps` so KL stays finite.
    """
    probs_p = _predictions("probs_p", probs_p)
    probs_q = _predictions("probs_q", probs_q)
    _same_shape("probs_p", probs_p, "probs_q", probs_q)
    if from_logits:
        log_p, log_q = _log_softmax(probs_p), _log_softmax(probs_q)
        terms = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    else:
        log_ratio = np.log(np.maximum(probs_p, eps)) - np.log(np.maximum(probs_q, eps))
        terms = np.sum(np.where(probs_p > 0, probs_p * log_ratio, 0.0), axis=-1)
    return terms if per_example else float(np.mean(terms))


def pairwise_disagreement(member_probs):
    """Mean over unordered member pairs of the fraction of examples where their top-1 differs.

    `member_probs` has shape (M, N, C), M >= 2; probabilities or logits alike.
    """
    member_probs = np.asarray(member_probs, dtype=np.float64)
    if member_probs.ndim != 3 or 0 in member_probs.shape:
        raise ValueError(
            f"`member_probs` must have shape (M, N, C) with M >= 2; got shape {member_probs.shape}."
        )
    if member_probs.shape[0] < 2:
        raise ValueError(
            f"Disagreement needs at least 2 members; got shape {member_probs.shape} (M = "
            f"{member_probs.shape[0]})."
        )
    preds = np.argmax(member_probs, axis=-1)
    pairs = itertools.combinations(range(len(preds)), 2)
    return float(np.mean([np.mean(preds[i] != preds[j]) for i, j in pairs]))


def classification_report(labels, logits, num_bins=15):
    """accuracy, nll and ece (15 bins) of one model's logits, as a dict of floats."""
    return {
        "accuracy": accuracy(labels, logits),
        "nll": negative_log_likelihood(labels, logits, from_logits=True),
        "ece": expected_calibration_error(labels, logits, num_bins=num_bins, from_logits=True),
    }


# ----------------------------------------------------------------------------- Keras


def _static_check(condition, message):
    # Shapes are checked at trace time, where they are known; unknown (None) dims pass.
    if not condition:
        raise ValueError(message)


def _dims_match(a, b):
    return a is None or b is None or a == b


def _sparse_labels(y_true, y_pred):
    """(batch,) int32 labels from (batch,) or (batch, 1) y_true, checked against y_pred."""
    y_true = ops.convert_to_tensor(y_true)
    _static_check(
        len(y_pred.shape) == 2,
        f"Predictions must have shape (batch, C); got shape {tuple(y_pred.shape)}.",
    )
    # compile() hands labels over as (batch, 1) when y was stored that way.
    if len(y_true.shape) == 2 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    _static_check(
        len(y_true.shape) == 1 and _dims_match(y_true.shape[0], y_pred.shape[0]),
        f"Labels must have shape (batch,) to match predictions of shape {tuple(y_pred.shape)}; "
        f"got shape {tuple(y_true.shape)}.",
    )
    return ops.cast(y_true, "int32")


def _sample_weights(sample_weight, like, dtype):
    if sample_weight is None:
        return ops.ones_like(like, dtype=dtype)
    return ops.reshape(ops.cast(sample_weight, dtype), (-1,))


@keras.saving.register_keras_serializable(package="tfkd")
class NegativeLogLikelihood(keras.metrics.SparseCategoricalCrossentropy):
    """Running mean of -log p(label): Keras's sparse categorical cross-entropy, renamed.

    NOTE: Keras clips probabilities to [1e-7, 1 - 1e-7] where the NumPy twin clips at
    `eps=1e-12`; the two differ only for examples given less than 1e-7 on their label.
    """

    def __init__(self, name="negative_log_likelihood", from_logits=False, **kwargs):
        super().__init__(name=name, from_logits=from_logits, **kwargs)


@keras.saving.register_keras_serializable(package="tfkd")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Running top-1 ECE over equal-width confidence bins (0, 1]; see the NumPy twin.

    Per-bin example counts, confidence sums and correct counts live in metric variables, so
    the result over many batches (and replicas) is the ECE of all examples seen, not a mean
    of per-batch ECEs.
    """

    def __init__(
        self, num_bins=15, from_logits=False, name="expected_calibration_error", dtype=None
    ):
        super().__init__(name=name, dtype=dtype)
        if int(num_bins) != num_bins or num_bins < 1:
            raise ValueError(f"`num_bins` must be a positive integer; got {num_bins!r}.")
        self.num_bins = int(num_bins)
        self.from_logits = from_logits
        # Lets monitor callbacks in mode="auto" know that lower is better.
        self._direction = "down"
        self._inner_edges = np.linspace(0.0, 1.0, self.num_bins + 1)[1:-1]
        shape = (self.num_bins,)
        self.bin_counts = self.add_variable(shape, "zeros", dtype=self.dtype, name="bin_counts")
        self.bin_confidence_sums = self.add_variable(
            shape, "zeros", dtype=self.dtype, name="bin_confidence_sums"
        )
        self.bin_correct_counts = self.add_variable(
            shape, "zeros", dtype=self.dtype, name="bin_correct_counts"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, self.dtype)
        labels = _sparse_labels(y_true, y_pred)
        probs = ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred
        confidences = ops.max(probs, axis=-1)
        correct = ops.cast(ops.equal(ops.argmax(probs, axis=-1), labels), self.dtype)
        # Count of inner edges strictly below the confidence: the same (lo, hi] rule as
        # `_bin_indices`, and 1.0 lands in the last bin.
        edges = ops.convert_to_tensor(self._inner_edges, dtype=self.dtype)
        bins = ops.sum(ops.cast(confidences[:, None] > edges[None, :], "int32"), axis=-1)
        weights = _sample_weights(sample_weight, confidences, self.dtype)
        in_bin = ops.one_hot(bins, self.num_bins, dtype=self.dtype) * weights[:, None]
        self.bin_counts.assign_add(ops.sum(in_bin, axis=0))
        self.bin_confidence_sums.assign_add(ops.matmul(confidences, in_bin))
        self.bin_correct_counts.assign_add(ops.matmul(correct, in_bin))

    def result(self):
        gaps = ops.abs(self.bin_correct_counts - self.bin_confidence_sums)
        return ops.divide_no_nan(ops.sum(gaps), ops.sum(self.bin_counts))

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="tfkd")
class TeacherAgreement(keras.metrics.Mean):
    """Running fraction of examples on which student and teacher pick the same top-1 class.

    Called as `update_state(student_outputs, teacher_outputs)`, each (batch, C) logits or
    probabilities. Not a `compile()` metric: it compares two predictions, not labels.
    """

    def __init__(self, name="teacher_agreement", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"

    def update_state(self, student_outputs, teacher_outputs, sample_weight=None):
        student_outputs = ops.convert_to_tensor(student_outputs)
        teacher_outputs = ops.convert_to_tensor(teacher_outputs)
        s_shape, t_shape = tuple(student_outputs.shape), tuple(teacher_outputs.shape)
        _static_check(
            len(s_shape) == 2
            and len(t_shape) == 2
            and all(_dims_match(a, b) for a, b in zip(s_shape, t_shape)),
            "Student and teacher outputs must both have shape (batch, C); got shapes "
            f"{s_shape} and {t_shape}.",
        )
        agree = ops.equal(
            ops.argmax(student_outputs, axis=-1), ops.argmax(teacher_outputs, axis=-1)
        )
        return super().update_state(ops.cast(agree, self.dtype), sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="tfkd")
class PairwiseDisagreement(keras.metrics.Metric):
    """Running mean over member pairs of the fraction of examples where top-1 classes differ.

    Called as `update_state(member_outputs)` with shape (M, batch, C), logits or
    probabilities. Accumulates disagreeing (pair, example) counts and all (pair, example)
    counts, so the result over batches equals `pairwise_disagreement` on all examples.
    """

    def __init__(self, name="pairwise_disagreement", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.disagreeing_pairs = self.add_variable(
            (), "zeros", dtype=self.dtype, name="disagreeing_pairs"
        )
        self.total_pairs = self.add_variable((), "zeros", dtype=self.dtype, name="total_pairs")

    def update_state(self, member_outputs, sample_weight=None):
        member_outputs = ops.convert_to_tensor(member_outputs)
        shape = tuple(member_outputs.shape)
        _static_check(
            len(shape) == 3 and (shape[0] is None or shape[0] >= 2) and shape[-1] is not None,
            f"Member outputs must have shape (M, batch, C) with M >= 2; got shape {shape}.",
        )
        num_members = ops.cast(ops.shape(member_outputs)[0], self.dtype)
        # Counting votes per class is O(M N C) instead of a loop over M (M - 1) / 2 pairs:
        # a class chosen by n members accounts for n (n - 1) / 2 agreeing pairs.
        top1 = ops.argmax(member_outputs, axis=-1)
        votes = ops.sum(ops.one_hot(top1, shape[-1], dtype=self.dtype), axis=0)
        agreeing = ops.sum(votes * (votes - 1.0), axis=-1) / 2.0
        pairs = num_members * (num_members - 1.0) / 2.0
        weights = _sample_weights(sample_weight, agreeing, self.dtype)
        self.disagreeing_pairs.assign_add(ops.sum(weights * (pairs - agreeing)))
        self.total_pairs.assign_add(ops.sum(weights) * pairs)

    def result(self):
        return ops.divide_no_nan(self.disagreeing_pairs, self.total_pairs)
