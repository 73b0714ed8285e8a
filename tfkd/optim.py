"""Optimisers, learning-rate schedules (constant, cosine, step; linear warm-up) and weight decay."""

import keras
from keras import ops

from tfkd.choices import LR_SCHEDULES, OPTIMIZERS  # noqa: F401  (the names, listed there)


@keras.saving.register_keras_serializable(package="tfkd")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `after(0)` over `warmup_steps`, then `after(step - warmup_steps)`.

    Keras's CosineDecay has a warm-up of its own but PiecewiseConstantDecay has none; one
    wrapper gives every schedule the same warm-up.
    """

    def __init__(self, after, warmup_steps):
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(self.warmup_steps, "float32")
        after = self.after(ops.maximum(step - warmup, 0.0))
        # (step + 1): the first update already moves, rather than spending a step at rate 0.
        return ops.where(step < warmup, self.after(0) * (step + 1.0) / warmup, after)

    def get_config(self):
        return {"after": keras.optimizers.schedules.serialize(self.after),
                "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        return cls(keras.optimizers.schedules.deserialize(config["after"]),
                   config["warmup_steps"])


def learning_rate_schedule(config, steps_per_epoch):
    """The learning rate (a float or a Keras schedule) of `config` in optimizer steps."""
    rate = config.learning_rate
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        # Decaying to zero makes the last epoch's weights a settled point rather
        # than wherever a constant step size happened to leave them.
        schedule = keras.optimizers.schedules.CosineDecay(
            rate, decay_steps=max(1, (config.epochs - config.warmup_epochs) * steps_per_epoch))
    elif config.lr_schedule == "step":
        # Decay epochs count from the start of training, warm-up included, as recipes state
        # them. NOTE: PiecewiseConstantDecay keeps values[i] while step <= boundaries[i], and
        # the optimizer passes its pre-update count, hence the -1.
        boundaries = [(e - config.warmup_epochs) * steps_per_epoch - 1
                      for e in config.lr_decay_epochs]
        values = [rate * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    else:
        if not warmup_steps:
            return rate
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [rate, rate])
    return Warmup(schedule, warmup_steps) if warmup_steps else schedule


def make_optimizer(config, steps_per_epoch):
    """The Keras optimiser of `config`. Weight decay for sgd and adam is added to the loss by
    `add_weight_decay`, not here; adamw decays in the optimiser (decoupled)."""
    rate = learning_rate_schedule(config, steps_per_epoch)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    return keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=config.nesterov)


def add_weight_decay(model, weight_decay, optimizer_name):
    """Puts an L2 penalty 0.5 * weight_decay * ||w||^2 on every trainable weight of `model`.

    Its gradient is weight_decay * w, added before momentum: PyTorch's SGD/Adam
    `weight_decay`, which the published recipes use. Keras's own optimizer `weight_decay`
    is decoupled (w -= lr * wd * w, outside momentum) and gives a different training for
    the same number. The penalty lives on the variables only, so a saved model carries none.
    """
    if not weight_decay or optimizer_name == "adamw":
        return model
    penalty = keras.regularizers.L2(0.5 * weight_decay)
    for variable in model.trainable_weights:
        # NOTE: Keras collects `variable.regularizer` into `model.losses`, which the
        # Distiller adds to its loss (divided by the replica count).
        variable.regularizer = penalty
    return model
