"""CA-MKD: Zhang et al., "Confidence-aware multi-teacher knowledge distillation" (ICASSP 2022)."""

from keras import ops

from tfkd.terms import _multi, base


@base.register("camkd")
class ConfidenceWeightedKD(_multi.MultiTeacher):
    """Per-teacher KD weighted per example by how well each teacher predicts the label:
    w_k = (1 - softmax_k(CE_k)) / (M - 1), CE_k teacher k's cross-entropy on the label (the
    paper's eq. 2), which sum to 1 over the teachers: a teacher wrong on an example weighs
    less there.

    The authors' code divides the weighted sum by M once more (1 / M of the paper's loss);
    tfkd follows the paper. Only the logit part of CA-MKD: its intermediate-feature part
    (an adapter per teacher) is a feature method.
    """

    reads = frozenset({"members", "labels"})

    def teacher_weights(self, members, labels):
        count = members.shape[1]
        target = base.class_indices(labels, members.shape[-1])
        mask = ops.one_hot(target, members.shape[-1], dtype="float32")[:, None, :]
        ce = -ops.sum(mask * ops.log_softmax(members, axis=-1), axis=-1)  # (N, M)
        return (1.0 - ops.softmax(ce, axis=1)) / (count - 1)
