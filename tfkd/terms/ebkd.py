"""EBKD: Kwon et al., "Adaptive knowledge distillation based on entropy" (ICASSP 2020)."""

from keras import ops

from tfkd.terms import _multi, base


@base.register("ebkd")
class EntropyWeightedKD(_multi.MultiTeacher):
    """Per-teacher KD weighted per example by the teachers' confidence: w_k = 1 - H_k / sum_j H_j,
    with H_k the entropy of teacher k's softmax (a less certain teacher weighs less),
    normalised to sum 1 over the teachers (divided by M - 1).

    The normalisation is tfkd's: the paper's weights sum to M - 1, and the CA-MKD authors'
    implementation of it divides the weighted sum by M, i.e. (M - 1) / M times the loss here.
    With the weights summing to 1, identical teachers give KD from one of them.
    """

    def teacher_weights(self, members, labels):
        h = _multi.entropy(members)
        total = ops.sum(h, axis=1, keepdims=True)
        count = members.shape[1]
        # Teachers all one-hot (every entropy 0): equal weights, the limit of equal entropies.
        return ops.where(total > 0, (1.0 - h / ops.maximum(total, 1e-30)) / (count - 1),
                         1.0 / count)
