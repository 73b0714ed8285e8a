"""Probability matching: the loss of Borup & Andersen's self-distillation code."""

from keras import ops

from tfkd.terms import base


def probability_mse(teacher_logits, student_logits, temperature):
    """Mean over classes of (softmax(s / T) - softmax(t / T))^2, per example."""
    p = ops.softmax(teacher_logits / temperature, axis=-1)
    q = ops.softmax(student_logits / temperature, axis=-1)
    return ops.mean(ops.square(q - p), axis=-1)


@base.register("probability_mse")
class ProbabilityMatching(base.Term):
    """Squared error between the teacher's and the student's softened probabilities,
    averaged over classes (Borup & Andersen, NeurIPS 2021, section 6). No T^2 factor: at
    the usual T = 1 there is nothing to compensate."""

    settings = {"temperature": "temperature"}

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = base.check_number("temperature", temperature, 0, low_open=True)

    def call(self, teacher, student, labels=None, epoch=None):
        return probability_mse(base.logits(teacher), base.logits(student), self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
