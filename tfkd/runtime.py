"""Where and how models run: distribution strategy, XLA, numeric precision.

Learning-rate rule: `--batch_size` is the GLOBAL batch, split evenly over the
replicas, so changing the number of devices at a fixed batch size changes
nothing else (the same updates, see tests). If you grow the global batch with
the number of devices, scale the learning rate linearly with it (Goyal et al.,
2017), with a few epochs of warm-up for large factors.
"""

import json
import os

from absl import logging

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class Interrupted(BaseException):
    """SIGTERM, raised where the run is (like KeyboardInterrupt for SIGINT): a BaseException
    so that no `except Exception` on the way mistakes it for a failure to handle."""


# The signal a stop was asked with, once one arrives (set by `request_stop`).
stop_requested = None


def request_stop(signum, frame=None):
    """Signal handler for SIGTERM and SIGINT: records the stop, then raises where the run is.

    NOTE: Python drops an exception raised while a `__del__` runs (TensorFlow's dataset,
    iterator and function deleters are some), so a signal can arrive and the raise be lost.
    The record survives; `check_stop` raises it again at the next epoch's end and before
    the run reports success, and `quiet_lost_stop` keeps Python from printing the dropped
    raise as a traceback.
    """
    global stop_requested
    import signal

    stop_requested = signum
    raise KeyboardInterrupt() if signum == signal.SIGINT else Interrupted()


def quiet_lost_stop(unraisable, fallback):
    """A `sys.unraisablehook`: a stop raised inside a `__del__` is dropped silently (it is
    recorded, see `request_stop`); anything else goes to `fallback`, Python's own hook."""
    if stop_requested is not None and isinstance(unraisable.exc_value,
                                                 (KeyboardInterrupt, Interrupted)):
        return
    fallback(unraisable)


def check_stop():
    """Raises the stop a signal asked for, if one did."""
    if stop_requested is not None:
        request_stop(stop_requested)


def split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical devices, so MirroredStrategy can be tried
    without GPUs. Must run before TensorFlow initialises its runtime."""
    import tensorflow as tf

    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])


def task_from_tf_config():
    """(task type, index) from TF_CONFIG, or None outside a cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        task = json.loads(raw).get("task", {})
        return str(task.get("type")), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"TF_CONFIG is not a cluster description: {raw[:200]!r}; it must be "
                         'JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                         '"task": {"type": "worker", "index": 0}}') from None


def is_chief():
    """Whether this process writes artifacts: the chief (or worker 0) of a cluster, or alone."""
    task = task_from_tf_config()
    return task is None or task[0] == "chief" or (task[0] == "worker" and task[1] == 0)


def make_strategy(name):
    """A tf.distribute strategy by name (see STRATEGIES)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        # NOTE: first, before anything lists devices: MultiWorkerMirroredStrategy must
        # configure collective ops before the TensorFlow context initialises.
        if task_from_tf_config() is None:
            raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment "
                             "variable (cluster and task) on every worker; see the README")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        # TensorFlow's default strategy, not OneDeviceStrategy: on one device the
        # latter only adds per-step distribution overhead (3x slower epochs for a
        # small CNN on CPU here), and the default places work on the GPU if any.
        return tf.distribute.get_strategy()
    # Without GPUs, mirror over the logical CPUs (see split_cpu).
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


def resolve_jit_compile(jit_compile, strategy):
    """XLA unless it is known to fail: MirroredStrategy over several CPU devices does."""
    import tensorflow as tf

    if not jit_compile or strategy.num_replicas_in_sync == 1:
        return bool(jit_compile)
    if all("CPU" in d.upper() for d in strategy.extended.worker_devices):
        logging.log_first_n(
            logging.WARNING, "XLA is off: jit_compile with %s over %d CPU devices fails in TensorFlow %s "
            "(\"Trying to access resource ... located in device\"); training without it.",
            1, type(strategy).__name__, strategy.num_replicas_in_sync, tf.__version__)
        return False
    return True


def set_deterministic(enabled):
    """Deterministic kernels (tf.config.experimental.enable_op_determinism): the same seed
    gives the same numbers however busy the machine is, at some cost in speed."""
    import tensorflow as tf

    if enabled:
        tf.config.experimental.enable_op_determinism()


def set_precision(policy):
    """Sets Keras's global dtype policy; models built afterwards compute in it.

    Losses stay float32 (keras Loss objects cast their inputs) and the optimiser gets
    dynamic loss scaling from Keras under mixed_float16.
    """
    import keras

    if policy not in PRECISIONS:
        raise ValueError(f"unknown precision {policy!r}; choose one of: {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(policy)
