"""DIST: Huang et al., "Knowledge distillation from a stronger teacher" (NeurIPS 2022)."""

from keras import ops

from tfkd.terms import base


def pearson(a, b, axis):
    """Pearson correlation of a and b along `axis`: centred, then cosine with 1e-8 added to
    the product of the norms (the authors' code)."""
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    norms = ops.sqrt(ops.sum(a * a, axis=axis)) * ops.sqrt(ops.sum(b * b, axis=axis))
    return ops.sum(a * b, axis=axis) / (norms + 1e-8)


@base.register("dist")
class DIST(base.Term):
    """beta * inter + gamma * intra, with y = softmax(z / T) (the paper's eq. 9):
    inter = T^2 (1 - Pearson(y_s[n, :], y_t[n, :])) per example, the relation of the classes
    within an example; intra = T^2 (1 - mean over classes of Pearson(y_s[:, c], y_t[:, c])),
    the relation of the examples within a class, over the batch.

    Batch-relational: the intra-class term correlates the examples of a batch. Under several
    replicas it is computed over each replica's share of the global batch, and the replicas'
    losses are averaged as every term's are (as the authors' code does under data-parallel
    training, where each GPU correlates its own batch): N replicas give the mean of the
    terms of the N shares, not the term of the global batch. A batch of one example has no
    intra-class relation (its correlation is 0, the term T^2).

    The authors' CIFAR-100 settings: beta = gamma = 1, T = 4, weight 2 beside the labels'
    cross-entropy with weight 1. `standardize=True` z-scores both sides' logits first
    (logit standardization, Sun et al., CVPR 2024).
    """

    relational = True
    settings = {"temperature": "temperature", "dist_beta": "beta", "dist_gamma": "gamma",
                "logit_standardization": "standardize"}

    def __init__(self, beta=1.0, gamma=1.0, temperature=1.0, standardize=False, **kwargs):
        super().__init__(**kwargs)
        self.beta = base.check_number("beta", beta, 0)
        self.gamma = base.check_number("gamma", gamma, 0)
        self.temperature = base.check_number("temperature", temperature, 0, low_open=True)
        self.standardize = bool(standardize)

    def call(self, teacher, student, labels=None, epoch=None):
        t, s = base.logit_pair(teacher, student, self.standardize)
        y_t = ops.softmax(t / self.temperature, axis=-1)
        y_s = ops.softmax(s / self.temperature, axis=-1)
        t2 = self.temperature ** 2
        inter = t2 * (1.0 - pearson(y_s, y_t, axis=-1))
        intra = t2 * (1.0 - ops.mean(pearson(y_s, y_t, axis=0)))
        return self.beta * inter + self.gamma * intra

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "gamma": self.gamma,
                "temperature": self.temperature, "standardize": self.standardize}
