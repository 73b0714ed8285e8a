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
