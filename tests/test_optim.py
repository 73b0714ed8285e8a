"""Learning-rate schedules, warm-up and weight decay (tfkd.optim)."""

import dataclasses

import keras
import numpy as np
import pytest

from tfkd import optim
from tfkd.config import Config, ConfigError
from tfkd.distiller import Distiller

STEPS = 10  # per epoch


def rates(config, epochs=None):
    schedule = optim.learning_rate_schedule(config, STEPS)
    steps = range((epochs or config.epochs) * STEPS)
    if isinstance(schedule, float):
        return np.full(len(steps), schedule)
    return np.array([float(schedule(s)) for s in steps])


def test_constant_is_a_float():
    assert optim.learning_rate_schedule(Config(learning_rate=0.1), STEPS) == 0.1


def test_step_schedule_decays_at_the_given_epochs():
    config = Config(epochs=8, learning_rate=0.1, lr_schedule="step", lr_decay_epochs=(3, 6),
                    lr_decay_factor=0.2)
    lr = rates(config)
    np.testing.assert_allclose(lr[:30], 0.1)
    np.testing.assert_allclose(lr[30:60], 0.02)
    np.testing.assert_allclose(lr[60:], 0.004, rtol=1e-6)


def test_warmup_then_step_keeps_the_recipe_epochs():
    config = Config(epochs=8, learning_rate=0.1, lr_schedule="step", lr_decay_epochs=(3, 6),
                    warmup_epochs=2)
    lr = rates(config)
    np.testing.assert_allclose(lr[:20], 0.1 * np.arange(1, 21) / 20, rtol=1e-6)  # linear
    np.testing.assert_allclose(lr[20:30], 0.1)
    np.testing.assert_allclose(lr[30:60], 0.01, rtol=1e-6)  # decay still after epoch 3
    np.testing.assert_allclose(lr[60:], 0.001, rtol=1e-5)


def test_cosine_with_warmup_peaks_then_reaches_zero():
    config = Config(epochs=5, learning_rate=0.1, lr_schedule="cosine", warmup_epochs=1)
    lr = rates(config)
    assert lr[:10].argmax() == 9 and abs(lr[9] - 0.1) < 1e-7
    assert np.all(np.diff(lr[10:]) <= 1e-9) and lr[-1] < 0.1 * 0.01
    assert float(optim.learning_rate_schedule(config, STEPS)(5 * STEPS)) == pytest.approx(0.0)


def test_constant_with_warmup():
    lr = rates(Config(epochs=3, learning_rate=0.1, warmup_epochs=1))
    np.testing.assert_allclose(lr[:10], 0.1 * np.arange(1, 11) / 10, rtol=1e-6)
    np.testing.assert_allclose(lr[10:], 0.1)


def test_warmup_schedule_round_trips_through_keras_serialisation():
    schedule = optim.learning_rate_schedule(
        Config(epochs=4, lr_schedule="step", lr_decay_epochs=(2,), warmup_epochs=1), STEPS)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    for step in (0, 5, 15, 25, 35):
        assert float(restored(step)) == pytest.approx(float(schedule(step)))


def test_sgd_settings_reach_the_optimizer():
    config = Config(optimizer="sgd", momentum=0.8, nesterov=False)
    sgd = optim.make_optimizer(config, STEPS)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert sgd.momentum == 0.8 and sgd.nesterov is False
    adamw = optim.make_optimizer(Config(optimizer="adamw", weight_decay=0.01), STEPS)
    assert adamw.weight_decay == 0.01


def test_weight_decay_gradient_is_wd_times_w(digits):
    """The L2 penalty adds weight_decay * w to each gradient (PyTorch's SGD weight_decay)."""
    x, y = digits[0][:32], digits[1][:32]
    weight_decay = 0.01

    def one_step(decay):
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(10, kernel_initializer="glorot_uniform")])
        keras.utils.set_random_seed(0)
        model.set_weights([np.full((64, 10), 0.1, np.float32), np.full(10, 0.5, np.float32)])
        optim.add_weight_decay(model, decay, "sgd")
        distiller = Distiller(student=model, alpha=1.0)
        distiller.compile(optimizer=keras.optimizers.SGD(1.0))
        before = [w.copy() for w in model.get_weights()]
        distiller.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        return [b - a for b, a in zip(before, model.get_weights())]  # lr * gradient

    plain, decayed = one_step(0.0), one_step(weight_decay)
    np.testing.assert_allclose(decayed[0] - plain[0], weight_decay * 0.1, atol=1e-6)
    np.testing.assert_allclose(decayed[1] - plain[1], weight_decay * 0.5, atol=1e-6)


def test_adamw_gets_no_l2_penalty():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optim.add_weight_decay(model, 0.1, "adamw")
    assert not model.losses
    optim.add_weight_decay(model, 0.1, "sgd")
    assert len(model.losses) == 2


@pytest.mark.parametrize("changes, named", [
    ({"lr_schedule": "step"}, "lr_decay_epochs"),
    ({"lr_decay_epochs": (5,)}, "'5'"),
    ({"lr_schedule": "step", "lr_decay_epochs": (5, 3)}, "'5,3'"),
    ({"lr_schedule": "step", "lr_decay_epochs": (0,)}, "'0'"),
    ({"warmup_epochs": 30}, "30"),
    ({"warmup_epochs": -1}, "-1"),
    ({"momentum": 1.0}, "1.0"),
    ({"weight_decay": -0.1}, "-0.1"),
    ({"lr_decay_factor": 0.0}, "0.0"),
    ({"lr_schedule": "step", "lr_decay_epochs": (2, 5), "warmup_epochs": 2}, "warm-up"),
])
def test_bad_optimiser_settings_name_the_value(changes, named):
    with pytest.raises(ConfigError, match=named):
        dataclasses.replace(Config(), **changes)


@pytest.mark.parametrize("value, named", [
    ("0.2,0.7", "2 values for 3"),
    ("1.5", "'1.5'"),
    ("best", "'best'"),
])
def test_bad_self_distill_alpha_names_the_value(value, named):
    with pytest.raises(ConfigError, match=named):
        Config(self_distill_steps=3, self_distill_alpha=value)


def test_step_alphas():
    assert Config(self_distill_steps=3, alpha=0.3).step_alphas() == [0.3, 0.3, 0.3]
    assert Config(self_distill_steps=2, self_distill_alpha="0.6").step_alphas() == [0.6, 0.6]
    assert Config(self_distill_steps=2, self_distill_alpha="optimal").step_alphas() == [
        "optimal", "optimal"]
    smoke = Config(self_distill_steps=5, self_distill_alpha="0.1,0.2,0.3,0.4,0.5",
                   smoke=True).shrunk()
    assert smoke.step_alphas() == [0.1, 0.2]
