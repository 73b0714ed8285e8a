"""Test-suite set-up shared by every test module."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# NOTE: logical devices can only be configured before TensorFlow initialises
# its runtime, so this must run at import time, before any test touches TF.
# Two logical CPUs let MirroredStrategy tests run on a one-CPU machine; the
# default strategy still places everything on the first device.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, skipped unless -m slow")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as (x float32 in [0, 1] of shape (N, 8, 8, 1), y int32)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x, data.target.astype("int32")


def make_tiny_cnn(seed, num_classes=10, input_shape=(8, 8, 1), batch_norm=True):
    """A small functional CNN with seeded initial weights, for tests of the core library."""
    import keras

    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 100 + i)  # noqa: E731
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer=init(0), name="conv")(inputs)
    if batch_norm:
        # BatchNorm makes training=True vs False observable: a teacher run in
        # training mode would update its moving statistics.
        h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu", kernel_initializer=init(1), name="features")(h)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init(2), name="logits")(h)
    return keras.Model(inputs, outputs, name=f"cnn_{seed}")


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over two logical CPUs for the whole session.

    NOTE: several MirroredStrategy objects in one process hand out the same
    collective instance keys, and a second strategy's all-reduce then meets
    the first one's ("Shape mismatch in the collective instance 100").
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
