"""CTKD: Li et al., "Curriculum temperature for knowledge distillation" (AAAI 2023)."""

import math

import keras
from keras import ops

from tfkd import config as config_lib
from tfkd.terms import base


def reversal_weight(epoch, lambda_max, lambda_epochs):
    """The curriculum's lambda at `epoch` (counted from 0; None: after the curriculum):
    lambda_max * (1 - cos(pi * min(epoch + 1, E) / E)) / 2 over E = lambda_epochs epochs,
    lambda_max after (and throughout when E = 0). The authors count epochs from 1, so their
    epoch e is epoch e - 1 here: the same values, epoch for epoch."""
    if epoch is None or lambda_epochs == 0:
        return ops.convert_to_tensor(lambda_max, "float32")
    progress = ops.minimum(ops.cast(epoch, "float32") + 1.0, float(lambda_epochs)) / lambda_epochs
    return lambda_max * (1.0 - ops.cos(math.pi * progress)) / 2.0


def gradient_reversal(x, scale):
    """x forward; its gradient multiplied by -scale backward (Ganin & Lempitsky, 2015).
    `scale` takes no gradient."""
    scale = ops.stop_gradient(ops.cast(scale, x.dtype))

    @ops.custom_gradient
    def reverse(value):
        def grad(upstream):
            return -scale * upstream
        return ops.multiply(value, 1.0), grad

    return reverse(x)


@base.register("ctkd")
class CTKD(base.Term):
    """KD (T^2 * KL, as the kl method) at one learned temperature for all examples,
    T = min_temperature + (max_temperature - min_temperature) * sigmoid(theta).

    theta is a weight of this term: it trains with the student (same optimizer), saves and
    restores with the Distiller. It enters the loss through a gradient reversal scaled by
    lambda: the student descends the KD loss at the current T while theta ascends it, so
    the temperature moves to where the student finds the soft targets hardest (the paper's
    adversarial curriculum). lambda rises from 0 to `lambda_max` with a cosine over the
    first `lambda_epochs` epochs (`reversal_weight`), then stays; outside a training loop
    (epoch=None) it is `lambda_max`. The loss's value does not depend on lambda, only
    theta's gradient does (-lambda times the plain one).

    The temperature starts at `temperature`, strictly between the bounds (the sigmoid
    reaches neither). The authors' code (`models/temp_global.py`) starts at theta = 1 with
    T in [1, 21], i.e. T = 1 + 20 * sigmoid(1) = 15.62: pass temperature=15.62 to match it.
    Their gradient reversal has no minus sign and their lambda goes from 0 to -1, which is
    the reversal here with lambda from 0 to 1. Their weight decay also applies to theta;
    tfkd's L2 penalty (--weight_decay) is on the student's weights only.
    """

    observes = ("temperature",)
    settings = {"temperature": "temperature", "ctkd_min_temperature": "min_temperature",
                "ctkd_max_temperature": "max_temperature", "ctkd_lambda_max": "lambda_max",
                "ctkd_lambda_epochs": "lambda_epochs"}

    def __init__(self, temperature=4.0, min_temperature=1.0, max_temperature=21.0,
                 lambda_max=1.0, lambda_epochs=10, **kwargs):
        super().__init__(**kwargs)
        self.temperature = base.check_number("temperature", temperature, 0, low_open=True)
        self.min_temperature = base.check_number("min_temperature", min_temperature, 0,
                                                 low_open=True)
        self.max_temperature = base.check_number("max_temperature", max_temperature, 0,
                                                 low_open=True)
        problem = config_lib.between(("temperature", self.temperature),
                                     ("min_temperature", self.min_temperature),
                                     ("max_temperature", self.max_temperature))
        if problem:
            raise ValueError(f"CTKD: {problem}")
        self.lambda_max = base.check_number("lambda_max", lambda_max, 0)
        if isinstance(lambda_epochs, bool) or not isinstance(lambda_epochs, int) or (
                lambda_epochs < 0):
            raise ValueError(f"lambda_epochs must be a whole number >= 0, got {lambda_epochs!r}")
        self.lambda_epochs = lambda_epochs
        # theta such that the temperature starts at `temperature`: the inverse sigmoid.
        share = (self.temperature - self.min_temperature) / self._span
        self.theta = self.add_weight(
            shape=(), name="theta", trainable=True,
            initializer=keras.initializers.Constant(math.log(share / (1.0 - share))))

    @property
    def _span(self):
        return self.max_temperature - self.min_temperature

    def _temperature(self, theta):
        return self.min_temperature + self._span * ops.sigmoid(theta)

    @property
    def temperature_now(self):
        """The current learned temperature, a Python float. The training logs show its mean
        over each epoch's steps: "distillation_temperature" ("ctkd_temperature" in
        `terms=`)."""
        return float(self.observed()["temperature"])

    def observed(self):
        return {"temperature": self._temperature(ops.convert_to_tensor(self.theta))}

    def call(self, teacher, student, labels=None, epoch=None):
        t, s = base.logits(teacher), base.logits(student)
        # NOTE: the variable is read outside the custom gradient, whose function then sees
        # a tensor (TensorFlow asks a custom gradient that reads variables for theirs).
        weight = reversal_weight(epoch, self.lambda_max, self.lambda_epochs)
        theta = gradient_reversal(ops.copy(self.theta), weight)
        return base.soft_target_kl(t, s, self._temperature(theta))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "min_temperature": self.min_temperature,
                "max_temperature": self.max_temperature, "lambda_max": self.lambda_max,
                "lambda_epochs": self.lambda_epochs}

