"""KD: Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network" (2015)."""

from tfkd.terms import base


@base.register("kl")
class KD(base.Term):
    """T^2 * KL(softmax(t / T) || softmax(s / T)) per example: the soft-target loss.

    The T^2 factor keeps the soft targets' gradient comparable to the labels' as T changes
    (the paper's section 2), so alpha means the same at any T. `standardize=True` z-scores
    both sides' logits first (logit standardization, Sun et al., CVPR 2024; the authors'
    results use T = 2 with a KD weight of 9 and a label weight of 0.1).
    """

    settings = {"temperature": "temperature", "logit_standardization": "standardize"}

    def __init__(self, temperature=4.0, standardize=False, **kwargs):
        super().__init__(**kwargs)
        self.temperature = base.check_number("temperature", temperature, 0, low_open=True)
        self.standardize = bool(standardize)

    def call(self, teacher, student, labels=None, epoch=None):
        t, s = base.logit_pair(teacher, student, self.standardize)
        return base.soft_target_kl(t, s, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "standardize": self.standardize}
