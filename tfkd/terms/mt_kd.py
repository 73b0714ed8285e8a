"""Multi-teacher KD: the mean of the per-teacher KD losses (the AVERAGE_LOSS baseline of
Zhang et al., "Confidence-aware multi-teacher knowledge distillation", ICASSP 2022)."""

from keras import ops

from tfkd.terms import _multi, base


@base.register("mt_kd")
class MeanTeacherKD(_multi.MultiTeacher):
    """The mean over teachers of KD(t_k, s): each teacher's soft targets matched on their own,
    where `kl` matches the soft targets of the teachers' average (not the same loss: the KL
    is convex in the targets, so this one is larger)."""

    def teacher_weights(self, members, labels):
        return ops.ones_like(members[:, :, 0]) / members.shape[1]
