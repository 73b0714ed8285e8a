"""Keras losses: the labels' cross-entropy, and the distillation losses as plain Keras losses.

The Distiller's methods are terms (`tfkd.terms`); the losses here are the same formulas as
`keras.losses.Loss` objects, for a model compiled by hand and for Distillers saved before
terms (whose configs name these classes).

Every loss here is a `keras.losses.Loss` that returns one value per example
and lets Keras reduce it ("sum_over_batch_size"). That reduction also divides
by the number of replicas in sync, so a loss term built from these objects
gives the same update on 1 or N replicas for the same global batch; a raw
`ops.mean` would not (it is the mistake core Keras's Distiller makes for its
distillation term).

Convention for logit losses: `y_true` is the teacher's output, `y_pred` the
student's, both logits. A teacher ensemble averaged in probability space hands
over log-probabilities, which are valid logits for everything below.
"""

import numbers

import keras
from keras import ops

from tfkd.terms import base as terms_base
from tfkd.terms.hint import feature_mse
from tfkd.terms.probability_mse import probability_mse


def _check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(
            f"temperature must be a number > 0, got {temperature!r}"
        )
    return float(temperature)


class DistillationLoss(keras.losses.Loss):
    """Base class of logit-matching losses: (teacher_logits, student_logits) -> per-example loss."""

    over_classes = True  # see `over_classes`

    def __init__(self, temperature=1.0, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _check_temperature(temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="tfkd")
class SoftTargetKL(DistillationLoss):
    """Hinton et al.'s soft-target loss: T^2 * KL(softmax(t / T) || softmax(s / T)).

    The T^2 factor keeps the gradient magnitude of the soft targets comparable
    to the hard-label term as T changes, so alpha means the same at any T.
    """

    def __init__(self, temperature=1.0, name="soft_target_kl", **kwargs):
        super().__init__(temperature=temperature, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return terms_base.soft_target_kl(ops.cast(y_true, self.dtype),
                                         ops.cast(y_pred, self.dtype), self.temperature)


@keras.saving.register_keras_serializable(package="tfkd")
class ProbabilityMSE(DistillationLoss):
    """Mean squared error between softmax(s / T) and softmax(t / T), averaged over classes.

    The loss of Borup & Andersen's self-distillation code. No T^2 factor: at
    the usual T = 1 there is nothing to compensate.
    """

    def __init__(self, temperature=1.0, name="probability_mse", **kwargs):
        super().__init__(temperature=temperature, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return probability_mse(ops.cast(y_true, self.dtype), ops.cast(y_pred, self.dtype),
                               self.temperature)


@keras.saving.register_keras_serializable(package="tfkd")
class HintLoss(keras.losses.Loss):
    """FitNets hint loss: squared error between teacher features and adapted student features.

    Averaged over every non-batch axis, so the weight of the hint term does not
    depend on the size of the feature map.
    """

    def __init__(self, name="hint", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return feature_mse(y_true, y_pred)


@keras.saving.register_keras_serializable(package="tfkd")
class CrossEntropy(keras.losses.Loss):
    """Cross-entropy of logits against labels given as class indices or as one-hot rows.

    Integer labels of shape (N,) or (N, 1) get Keras's sparse categorical cross-entropy,
    one-hot (or soft) labels of shape (N, C) its categorical cross-entropy: the label
    format is read from the static shapes, once per trace, so either kind of dataset
    trains the Distiller's default ground-truth loss. Labels of any other width are a
    ValueError that says what fits.
    """

    over_classes = True  # see `over_classes`

    def __init__(self, name="cross_entropy", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        classes = y_pred.shape[-1]
        one_hot = len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] != 1
        if one_hot and y_true.shape[-1] != classes:
            raise ValueError(
                f"labels of shape {tuple(y_true.shape)} do not fit the student's {classes} "
                f"classes: give class indices of shape (N,) or one-hot labels of shape "
                f"(N, {classes}), or a student_loss= of your own")
        if one_hot:
            return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True)
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


# Keras's own losses that compare distributions over the last axis; tfkd's mark themselves.
_KERAS_OVER_CLASSES = (keras.losses.CategoricalCrossentropy,
                       keras.losses.SparseCategoricalCrossentropy,
                       keras.losses.KLDivergence, keras.losses.CategoricalFocalCrossentropy,
                       keras.losses.CategoricalHinge)


def over_classes(loss):
    """Whether `loss` compares distributions over classes (a softmax of the last axis), which
    one output unit makes meaningless: tfkd's logit losses and cross-entropy, and Keras's
    categorical losses."""
    return bool(getattr(loss, "over_classes", False)) or isinstance(loss, _KERAS_OVER_CLASSES)
