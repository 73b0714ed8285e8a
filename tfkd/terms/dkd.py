"""DKD: Zhao et al., "Decoupled knowledge distillation" (CVPR 2022)."""

from keras import ops

from tfkd.terms import base


def dkd_parts(teacher_logits, student_logits, target, temperature):
    """(TCKD, NCKD, the teacher's target probability) per example, each KL * T^2.

    TCKD is the KL of the binary distributions [p_target, 1 - p_target]; NCKD the KL of the
    distributions over the C - 1 other classes, renormalised (eq. 1-3). Both in log space:
    finite when the teacher is all but one-hot, where 1 - p_target underflows to 0.
    """
    t2 = temperature * temperature
    classes = teacher_logits.shape[-1]
    mask = ops.one_hot(target, classes, dtype="float32")
    log_p = base.log_softmax(teacher_logits, temperature)
    log_q = base.log_softmax(student_logits, temperature)
    # log(1 - p_target) = logsumexp of the other classes' log-probabilities.
    far = -1e9 * mask
    log_p_rest = ops.logsumexp(log_p + far, axis=-1)
    log_q_rest = ops.logsumexp(log_q + far, axis=-1)
    log_p_target = ops.sum(log_p * mask, axis=-1)
    log_q_target = ops.sum(log_q * mask, axis=-1)
    p_target = ops.exp(log_p_target)
    tckd = (p_target * (log_p_target - log_q_target)
            + ops.exp(log_p_rest) * (log_p_rest - log_q_rest))
    # Non-target distributions: the classes' log-probabilities less the rest's log-mass, the
    # target's at -1e9 (probability 0: a near one-hot teacher's would overflow exp).
    log_p_nt = log_p + far - log_p_rest[:, None]
    log_q_nt = log_q + far - log_q_rest[:, None]
    nckd = ops.sum((1.0 - mask) * ops.exp(log_p_nt) * (log_p_nt - log_q_nt), axis=-1)
    return t2 * tckd, t2 * nckd, p_target


@base.register("dkd")
class DKD(base.Term):
    """alpha * TCKD + beta * NCKD per example, ramped in linearly over the first
    `warmup_epochs` epochs: min((epoch + 1) / warmup_epochs, 1), epoch counted from 0 by
    the training loop (the authors' code counts from 1 and ramps per epoch; this is the
    same ramp). Outside a training loop (epoch=None) the ramp is over.

    KD = TCKD + (1 - p_target) * NCKD, per example (the paper's eq. 5), holds for the
    parts (`dkd_parts`). Undefined for fewer than 3 classes (NCKD compares distributions
    over the C - 1 non-target classes), which is refused. With logit standardization
    (`standardize=True`), both sides' logits are z-scored first; the authors of that
    method used T = 2 and alpha, beta times 9 for DKD.
    """

    reads = frozenset({"labels"})
    settings = {"temperature": "temperature", "dkd_alpha": "alpha", "dkd_beta": "beta",
                "dkd_warmup_epochs": "warmup_epochs", "logit_standardization": "standardize"}

    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=20,
                 standardize=False, **kwargs):
        super().__init__(**kwargs)
        self.alpha = base.check_number("alpha", alpha, 0)
        self.beta = base.check_number("beta", beta, 0)
        self.temperature = base.check_number("temperature", temperature, 0, low_open=True)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or (
                warmup_epochs < 0):
            raise ValueError(f"warmup_epochs must be a whole number >= 0, got {warmup_epochs!r}")
        self.warmup_epochs = warmup_epochs
        self.standardize = bool(standardize)

    def check_classes(self, classes):
        if classes < 3:
            raise ValueError(f"DKD needs 3 or more classes, the student has {classes}: its "
                             "non-target term compares distributions over the C - 1 other "
                             "classes, undefined for C = 2; use the kl method")

    def call(self, teacher, student, labels=None, epoch=None):
        t, s = base.logit_pair(teacher, student, self.standardize)
        self.check_classes(s.shape[-1])
        target = base.class_indices(labels, s.shape[-1])
        tckd, nckd, _ = dkd_parts(t, s, target, self.temperature)
        loss = self.alpha * tckd + self.beta * nckd
        if epoch is None or self.warmup_epochs == 0:
            return loss
        ramp = ops.minimum((ops.cast(epoch, "float32") + 1.0) / self.warmup_epochs, 1.0)
        return ramp * loss

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta,
                "temperature": self.temperature, "warmup_epochs": self.warmup_epochs,
                "standardize": self.standardize}
