"""What the multi-teacher methods share: a KD loss per teacher, weighted per example."""

from keras import ops

from tfkd.terms import base


class MultiTeacher(base.Term):
    """sum over teachers k of w_k[n] * KD(t_k, s)[n], with KD = T^2 * KL at temperature T
    and weights w (N, M) that sum to 1 over the teachers (`teacher_weights`); the teachers' own
    logits, not their average. With M identical teachers it is KD from that teacher.

    Reads each teacher's logits (the teacher cache then holds them, (N, M, C)); needs two or
    more teachers, where one teacher would make it KD (or, for the entropy weights,
    undefined).
    """

    reads = frozenset({"members"})
    min_teachers = 2
    settings = {"temperature": "temperature"}

    def __init__(self, temperature=4.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = base.check_number("temperature", temperature, 0, low_open=True)

    def teacher_weights(self, members, labels):
        """(N, M) weights of the teachers for each example, summing to 1."""
        raise NotImplementedError

    def call(self, teacher, student, labels=None, epoch=None):
        members = base.members(teacher)
        count = members.shape[1]
        if count is not None and count < self.min_teachers:
            raise ValueError(f"{type(self).__name__} weighs each teacher's own logits: it needs "
                             f"{self.min_teachers} or more teachers, got {count}")
        s = base.logits(student)
        per_teacher = ops.stack([base.soft_target_kl(members[:, k], s, self.temperature)
                                 for k in range(count)], axis=1)
        weights = ops.stop_gradient(self.teacher_weights(members, labels))
        return ops.sum(weights * per_teacher, axis=1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def entropy(logits):
    """Entropy of softmax(logits) over the last axis, in nats."""
    log_p = ops.log_softmax(logits, axis=-1)
    return -ops.sum(ops.exp(log_p) * log_p, axis=-1)
