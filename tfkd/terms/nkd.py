"""NKD: Yang et al., "From knowledge distillation to self-knowledge distillation: a unified
approach with normalized loss and customized soft labels" (ICCV 2023)."""

from keras import ops

from tfkd.terms import base


@base.register("nkd")
class NKD(base.Term):
    """Normalized KD, per example: -p_t^target * log p_s^target (temperature 1) minus
    gamma * T^2 * sum over the non-target classes of softmax(t_nt / T) * log_softmax(s_nt / T),
    both distributions taken over the C - 1 non-target classes alone (the paper's eq. 8).

    As in the authors' code, both parts are cross-entropies (the teacher's entropy is not
    subtracted: it is constant for the student), so the loss is not 0 when the student
    equals the teacher; it is added to the labels' cross-entropy. Their settings: T = 1,
    gamma = 1.5 on ImageNet; T = 3, gamma = 3.5 on CIFAR-100.
    """

    reads = frozenset({"labels"})
    settings = {"temperature": "temperature", "nkd_gamma": "gamma"}

    def __init__(self, gamma=1.5, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        self.gamma = base.check_number("gamma", gamma, 0)
        self.temperature = base.check_number("temperature", temperature, 0, low_open=True)

    def check_classes(self, classes):
        if classes < 3:
            raise ValueError(f"NKD needs 3 or more classes, the student has {classes}: its "
                             "non-target term is a distribution over the C - 1 other classes")

    def call(self, teacher, student, labels=None, epoch=None):
        t, s = base.logits(teacher), base.logits(student)
        self.check_classes(s.shape[-1])
        mask = ops.one_hot(base.class_indices(labels, s.shape[-1]), s.shape[-1], dtype="float32")
        target = -ops.sum(mask * ops.softmax(t, axis=-1) * ops.log_softmax(s, axis=-1), axis=-1)
        # The target class removed: a logit of -1e9 has probability 0 exactly in float32.
        far = -1e9 * mask
        p = ops.softmax(t / self.temperature + far, axis=-1)
        log_q = ops.log_softmax(s / self.temperature + far, axis=-1)
        rest = -ops.sum((1.0 - mask) * p * log_q, axis=-1)
        return target + self.gamma * self.temperature ** 2 * rest

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "temperature": self.temperature}
