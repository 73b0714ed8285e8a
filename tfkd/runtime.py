"""Where and how models run: distribution strategy, XLA, numeric precision.

Learning-rate rule: `--batch_size` is the GLOBAL batch, split evenly over the
replicas, so changing the number of devices at a fixed batch size changes
nothing else (the same updates, see tests). If you grow the global batch with
the number of devices, scale the learning rate linearly with it (Goyal et al.,
2017), with a few epochs of warm-up for large factors.
"""

import contextlib
import dataclasses
import glob
import json
import os
import re
import socket
import sys
import tempfile
import time

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


# --- TensorFlow's start ------------------------------------------------------------------------

# What TensorFlow's C++ start-up writes to stderr before any setting can silence it: it logs
# before absl::InitializeLog, which nothing calls for Python, so TF_CPP_MIN_LOG_LEVEL does
# not apply (measured with TensorFlow 2.21: the first four, twice each, at any level). None
# asks anything of a user. The GPU ones are dropped only where the machine has no NVIDIA
# device (`nvidia_present`); where it has one they say why TensorFlow does not use it.
NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [^\]]* port\.cc:\d+\] oneDNN custom operations are on"
    r"|[IW]\d{4} [^\]]* cpu_feature_guard\.cc:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow with")
GPU_NOISE = re.compile(
    r"[IW]\d{4} [^\]]* cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|E\d{4} [^\]]* cuda_platform\.cc:\d+\] failed call to cuInit")


def nvidia_present():
    """Whether this machine has an NVIDIA GPU a driver exposes (/dev/nvidia0, ...)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


@contextlib.contextmanager
def quiet_native_stderr(enabled=True):
    """Holds what C++ code writes to file descriptor 2 meanwhile and then writes it all out,
    except the lines of `NOISE` (and `GPU_NOISE` without an NVIDIA device).

    NOTE: by hand because neither TensorFlow nor absl offers a switch for these lines (see
    NOISE). A file, not a pipe: a pipe would need a reader thread, which the GIL can starve
    while a C++ initializer fills the pipe -- a hang. So the lines come out at the end, in
    order; keep the block short (an import, a device listing).
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    noise = [NOISE] if nvidia_present() else [NOISE, GPU_NOISE]
    with tempfile.TemporaryFile() as held:
        try:
            os.dup2(held.fileno(), 2)
            yield
        finally:
            # A stop signal's raise (request_stop) may land anywhere here: stderr is put
            # back first, whatever happens (dup2 again is harmless), so that the stop's
            # line, written later, is seen; then the stop goes on.
            stop = None
            while True:
                try:
                    os.dup2(saved, 2)
                    break
                except BaseException as e:  # noqa: BLE001 -- re-raised below
                    stop = e
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode("utf-8", "replace").splitlines(True)
                    if not any(pattern.match(line) for pattern in noise)]
            if kept:
                os.write(2, "".join(kept).encode())
            if stop is not None:
                raise stop


def start_tensorflow(quiet=True):
    """Imports TensorFlow and finds its devices, its start-up noise dropped with `quiet`
    (see `quiet_native_stderr`).

    Lists physical devices only: the runtime is not initialised yet (split_cpu and
    MultiWorkerMirroredStrategy must come before that)."""
    with quiet_native_stderr(quiet):
        import tensorflow as tf

        tf.config.list_physical_devices()


def describe_devices():
    """What the run computes on, in a few words: "CPU (2 cores)", "CPU as 2 logical devices
    (2 cores)" or "2 GPUs (GPU:0 NVIDIA A100, GPU:1 ...)"."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            name = gpu.name.replace("/physical_device:", "")
            names.append(f"{name} {details['device_name']}" if details.get("device_name")
                         else name)
        shown = f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({', '.join(names)})"
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        logical = len(tf.config.list_logical_devices("CPU"))
        shown = (f"CPU as {logical} logical devices ({cores} cores)" if logical > 1
                 else f"CPU ({cores} cores)")
        if nvidia_present():
            shown += "; this machine has an NVIDIA GPU TensorFlow cannot use (see above)"
    return shown


def split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical devices, so MirroredStrategy can be tried
    without GPUs. Must run before TensorFlow initialises its runtime."""
    import tensorflow as tf

    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])


# --- clusters ---------------------------------------------------------------------------------

TASK_TYPES = ("chief", "worker")  # the tasks tfkd runs (no evaluator, no parameter servers)
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                     '"task": {"type": "worker", "index": 0}}')

# The cluster this process trains in (set by `join`: TF_CONFIG under --strategy=multi_worker),
# None when it runs alone. Process-wide, as the strategy it describes is.
cluster = None


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A multi-worker run as a valid TF_CONFIG describes it (see `read_cluster`)."""

    jobs: dict  # {"chief": [address], "worker": [address, ...]}, addresses "host:port"
    type: str  # this task's
    index: int

    @property
    def chief(self):
        """(type, index) of the task that writes the workdir: TensorFlow's rule."""
        return ("chief", 0) if "chief" in self.jobs else ("worker", 0)

    @property
    def is_chief(self):
        return (self.type, self.index) == self.chief

    def others(self):
        return [(t, i) for t, addresses in self.jobs.items() for i in range(len(addresses))
                if (t, i) != (self.type, self.index)]

    def name(self, task=None):
        kind, index = task or (self.type, self.index)
        return f"{kind} {index} at {self.jobs[kind][index]}"


def read_cluster(raw):
    """The Cluster a TF_CONFIG text describes, or a ValueError saying in one line what is
    wrong with it: JSON object, `cluster` mapping chief/worker to lists of distinct
    "host:port" (one chief at most), `task` naming one of them by type and index."""
    def refuse(problem):
        return ValueError(f"TF_CONFIG {problem}; --strategy=multi_worker needs a cluster "
                          f"description like {TF_CONFIG_EXAMPLE} (TF_CONFIG={raw[:200]!r})")

    try:
        config = json.loads(raw)
    except ValueError as e:
        raise refuse(f"is not JSON ({e})") from None
    if not isinstance(config, dict):
        raise refuse(f"is a JSON {type(config).__name__}, not an object")
    jobs, task = config.get("cluster"), config.get("task")
    if not isinstance(jobs, dict) or not jobs:
        raise refuse("has no 'cluster' (an object of tasks by type)")
    seen = set()
    for kind, addresses in jobs.items():
        if kind not in TASK_TYPES:
            raise refuse(f"names {kind!r} tasks: tfkd runs chief and worker tasks only")
        if not isinstance(addresses, list) or not addresses:
            raise refuse(f"cluster {kind!r} is {addresses!r}, not a list of \"host:port\"")
        if kind == "chief" and len(addresses) != 1:
            raise refuse(f"names {len(addresses)} chiefs; a cluster has one at most")
        for address in addresses:
            host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                raise refuse(f"cluster {kind!r} holds {address!r}, not a \"host:port\" with a "
                             "port in 1-65535")
            if address in seen:
                raise refuse(f"names {address!r} twice; every task needs its own address")
            seen.add(address)
    if not isinstance(task, dict):
        raise refuse("has no 'task' (an object with this task's type and index)")
    kind, index = task.get("type"), task.get("index")
    if kind not in TASK_TYPES:
        raise refuse(f"task type is {kind!r}: tfkd runs chief and worker tasks only")
    if kind not in jobs:
        raise refuse(f"task type {kind!r} is not in the cluster ({', '.join(jobs)})")
    if type(index) is not int or not 0 <= index < len(jobs[kind]):
        raise refuse(f"task index is {index!r}, not one of the cluster's {len(jobs[kind])} "
                     f"{kind} task(s): 0 to {len(jobs[kind]) - 1}")
    return Cluster({k: list(v) for k, v in jobs.items()}, kind, index)


def join(strategy):
    """The Cluster this run trains in (also kept in `cluster`), or None.

    Under --strategy=multi_worker, TF_CONFIG must describe a cluster (`read_cluster`) whose
    task's port is free (ValueError otherwise). Under any other strategy the run trains
    alone and writes its workdir itself: TF_CONFIG is ignored, whatever it holds, with one
    line saying so (a leftover of another job must not turn the run into a non-chief
    that keeps nothing).
    """
    global cluster
    cluster = None
    raw = os.environ.get("TF_CONFIG", "")
    if strategy != "multi_worker":
        if raw:
            logging.warning("tfkd: TF_CONFIG is ignored: --strategy=%s trains in this process "
                            "alone, which writes the workdir (--strategy=multi_worker trains "
                            "in the cluster TF_CONFIG describes)", strategy)
        return None
    if not raw:
        raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable "
                         f"(cluster and task) on every worker, like {TF_CONFIG_EXAMPLE}")
    found = read_cluster(raw)
    _hold_port(found).close()  # a taken port is found before anything is written
    cluster = found
    return found


def _hold_port(found):
    """A socket listening on this task's port, or a ValueError naming the port and task.

    NOTE: by hand, before TensorFlow: its server fails on a taken port with a C++
    traceback. SO_REUSEADDR, as gRPC binds: only a live socket on the port counts."""
    port = int(found.jobs[found.type][found.index].rpartition(":")[2])
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        held.bind(("", port))
        held.listen()
    except OSError as e:
        held.close()
        raise ValueError(f"port {port} of this task ({found.name()}, TF_CONFIG's task) is "
                         f"taken ({e.strerror}); end what holds it, or give the task a free "
                         "port in TF_CONFIG's cluster") from None
    return held


def _answers(address, timeout):
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_cluster(found, timeout, poll=0.2):
    """Returns once every other task of `found` listens on its port; a ValueError naming
    the tasks that do not after `timeout` seconds.

    NOTE: by hand: TensorFlow waits for the other tasks inside MultiWorkerMirroredStrategy's
    constructor, in C++, with no timeout that ends the wait (in TensorFlow 2.21 its
    coordination service's `cluster_register_timeout_in_ms` did not, and a watchdog thread
    never ran meanwhile): a worker whose peer never starts waited silently for good. So
    each task listens on its own port (which TensorFlow then takes over) until it has
    reached every other one; a task reached once counts, as it may be between its
    placeholder and TensorFlow's server.
    """
    others = found.others()
    if not others:
        return
    logging.info("tfkd: waiting up to %g s (--cluster_timeout) for %s to start (this task: "
                 "%s)", timeout, ", ".join(map(found.name, others)), found.name())
    deadline = time.monotonic() + timeout
    with _hold_port(found):
        while True:
            others = [t for t in others if not _answers(found.jobs[t[0]][t[1]], timeout=1.0)]
            if not others:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(poll)
    tasks = " and ".join(json.dumps({"type": t, "index": i}) for t, i in others)
    raise ValueError(f"{', '.join(map(found.name, others))} did not start within {timeout:g} s "
                     f"(--cluster_timeout): nothing listens there; start the same command "
                     f"there with TF_CONFIG's task {tasks}, or raise --cluster_timeout")


def make_strategy(name, cluster_timeout=300.0):
    """A tf.distribute strategy by name (see STRATEGIES). multi_worker trains in the
    cluster `join` found, once its other tasks have started (`wait_for_cluster`)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        # NOTE: first, before anything lists devices: MultiWorkerMirroredStrategy must
        # configure collective ops before the TensorFlow context initialises.
        wait_for_cluster(cluster or join(name), cluster_timeout)
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
