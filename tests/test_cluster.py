"""Clusters: what `tfkd` does with the TF_CONFIG it finds in its environment.

The promises (docs/reliability.md, "Clusters"):

- under a strategy other than multi_worker, TF_CONFIG is ignored, whatever it holds, with
  one line saying so, and the run writes its workdir itself (it is the only process);
- under --strategy=multi_worker, a TF_CONFIG that does not describe a chief/worker cluster
  this task belongs to is refused with one line, before anything is written, as is a task
  whose own port is taken;
- a worker says in one line what it waits for, and gives up with one line after
  --cluster_timeout seconds;
- a non-chief worker ends with one line naming where the chief writes the results.

TF_CONFIGs are generated (seeded), like the flags of tests/test_cli_property.py: a valid
cluster description, then one or two mutations of any of its parts, each of which makes
it invalid for tfkd.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import keras
import pytest
from helpers.network import free_ports
from helpers.command import ROOT, invoke, process_env

from tfkd import runtime

RUN = ["--smoke", "--model=mlp", "--num_models=1", "--mode=train"]




# --- generated TF_CONFIGs ---------------------------------------------------------------------

def valid_tf_config(rng):
    """A cluster description tfkd accepts under multi_worker (as a dict)."""
    ports = free_ports(3)
    workers = rng.randint(1, 3)
    jobs = {"worker": [f"127.0.0.1:{p}" for p in ports[:workers]]}
    if rng.random() < 0.3:
        jobs["chief"] = [f"localhost:{ports[-1]}"]
    task_type = rng.choice(sorted(jobs))
    config = {"cluster": jobs, "task": {"type": task_type,
                                        "index": rng.randrange(len(jobs[task_type]))}}
    if rng.random() < 0.3:
        config["environment"] = "cloud"  # other keys TensorFlow's tools add
    return config


def _set(path, value):
    def mutate(config):
        target = config
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = value
        return config
    return mutate


def _drop(*path):
    def mutate(config):
        target = config
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target.pop(path[-1], None)
        return config
    return mutate


def _address(value):
    """Replaces the first worker's address (and makes this task that worker)."""
    def mutate(config):
        config["cluster"]["worker"][0] = value
        config["task"] = {"type": "worker", "index": 0}
        return config
    return mutate


def _whole(value):
    return lambda config: value


def _index(offset):
    def mutate(config):
        config["task"]["index"] = len(config["cluster"][config["task"]["type"]]) + offset
        return config
    return mutate


def _duplicate(config):
    config["cluster"]["worker"].append(config["cluster"]["worker"][0])
    return config


# Each makes any valid description invalid for tfkd.
MUTATIONS = [
    _whole({}), _whole([]), _whole(None), _whole("worker"), _whole(1), _whole({"task": {}}),
    _drop("cluster"), _drop("task"), _drop("task", "type"), _drop("task", "index"),
    _set(["cluster"], []), _set(["cluster"], "worker"), _set(["cluster"], {}),
    _set(["cluster", "worker"], []), _set(["cluster", "worker"], "127.0.0.1:1"),
    _set(["cluster", "evaluator"], ["127.0.0.1:2"]), _set(["cluster", "ps"], ["127.0.0.1:3"]),
    _set(["cluster", "chief"], ["127.0.0.1:4", "127.0.0.1:5"]),
    _set(["task"], "worker"), _set(["task"], []),
    _set(["task", "type"], "evaluator"), _set(["task", "type"], "ps"),
    _set(["task", "type"], "master"), _set(["task", "type"], "Worker"),
    _set(["task", "type"], None), _set(["task", "type"], 0),
    _set(["task", "index"], -1), _set(["task", "index"], "0"), _set(["task", "index"], True),
    _set(["task", "index"], 0.5), _set(["task", "index"], None), _set(["task", "index"], [0]),
    _index(0), _index(5),
    _address("127.0.0.1"), _address("127.0.0.1:"), _address(":2222"), _address("host:port"),
    _address("127.0.0.1:0"), _address("127.0.0.1:65536"), _address("127.0.0.1:-1"),
    _address(""), _address(None), _address(2222), _duplicate,
]
# Text that is no JSON object at all.
RAW = ["{not json", "{}", "[]", "null", '"worker"', "0", " ", '{"cluster": {"worker": ['
       '"127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}']


def invalid_tf_config(rng):
    """A TF_CONFIG text tfkd refuses under multi_worker."""
    if rng.random() < 0.15:
        return rng.choice(RAW)
    config = valid_tf_config(rng)
    for mutation in rng.sample(MUTATIONS, rng.randint(1, 2)):
        try:
            config = mutation(config)
        except (KeyError, TypeError, AttributeError, IndexError):
            pass  # an earlier mutation removed what this one changes
    return json.dumps(config)


class ReachedTraining(BaseException):
    """Raised instead of training."""


# What the workdir held when training started (a run that ends writing nothing removes
# the workdir it made).
AT_TRAINING = {}


def _reached_training(self, *args, **kwargs):
    from tfkd.cli import FLAGS

    AT_TRAINING["workdir"] = sorted(os.listdir(FLAGS.workdir)) if os.path.isdir(
        FLAGS.workdir) else None
    raise ReachedTraining()


def _no_cluster_strategy(*args, **kwargs):
    raise AssertionError("MultiWorkerMirroredStrategy was built for a TF_CONFIG tfkd must refuse")


def run_with(monkeypatch, capsys, tf_config, argv):
    """`tfkd argv` in this process with TF_CONFIG set, stopped where training starts:
    (exit code or "trains", stderr)."""
    import tensorflow as tf
    from absl import logging

    # tfkd's progress lines go through absl's handler, as under absl.app.run: to stderr.
    logging.use_absl_handler()
    with monkeypatch.context() as m:
        m.setattr(logging.get_absl_handler().python_handler, "stream", sys.stderr)
        m.setattr(keras.Model, "fit", _reached_training)
        # A multi-worker strategy changes this process for good: never built here.
        m.setattr(tf.distribute, "MultiWorkerMirroredStrategy", _no_cluster_strategy)
        m.setenv("TF_CONFIG", tf_config)
        try:
            code = invoke(argv)
        except ReachedTraining:
            code = "trains"
    return code, capsys.readouterr().err


def test_generated_tf_configs_are_ignored_with_one_line_by_a_run_of_one_process(
        tmp_path, monkeypatch, capsys):
    """Valid clusters, leftovers naming this task as worker 1, `{}`, garbage: under the
    default strategy each run says in one line that TF_CONFIG is ignored, and trains into
    its own workdir (before: a non-chief task trained into a temporary folder it deleted,
    and never created the workdir)."""
    rng = random.Random(0)
    for i in range(24):
        tf_config = json.dumps(valid_tf_config(rng)) if i % 2 else invalid_tf_config(rng)
        workdir = tmp_path / f"run{i}"
        strategy = ["--strategy=one_device"] if i % 3 == 0 else []
        AT_TRAINING.clear()
        code, stderr = run_with(monkeypatch, capsys, tf_config,
                                [*RUN, *strategy, f"--workdir={workdir}"])
        assert code == "trains", (tf_config, code, stderr[-2000:])
        ignored = [line for line in stderr.splitlines() if "TF_CONFIG" in line]
        assert len(ignored) == 1 and "ignored" in ignored[0], (tf_config, stderr[-2000:])
        # This process writes the workdir: it holds the run's lock.
        assert {".lock", "models"} <= set(AT_TRAINING["workdir"] or ()), tf_config


def test_a_leftover_worker_1_tf_config_keeps_the_results(tmp_path, monkeypatch, capsys):
    """The whole run, not only its start: results table printed, exit 0, results kept."""
    workdir = tmp_path / "run"
    leftover = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                "task": {"type": "worker", "index": 1}}
    for tf_config in (json.dumps(leftover), "{}"):
        monkeypatch.setenv("TF_CONFIG", tf_config)
        assert invoke([*RUN, "--epochs=1", f"--workdir={workdir}"]) == 0
        out = capsys.readouterr().out
        assert "member_0" in out and (workdir / "results.md").exists(), tf_config
        assert (workdir / "models" / "member_0.keras").exists()


def test_generated_bad_tf_configs_are_refused_under_multi_worker(tmp_path, monkeypatch, capsys):
    rng = random.Random(1)
    for i in range(80):
        tf_config = invalid_tf_config(rng)
        workdir = tmp_path / f"run{i}"
        code, stderr = run_with(monkeypatch, capsys, tf_config,
                                [*RUN, "--strategy=multi_worker", f"--workdir={workdir}"])
        errors = [line for line in stderr.splitlines() if line.startswith("tfkd: error:")]
        assert code == 2 and len(errors) == 1, (tf_config, code, stderr[-2000:])
        assert "TF_CONFIG" in errors[0] and "Traceback" not in stderr, (tf_config, errors)
        assert not workdir.exists(), tf_config


@pytest.mark.parametrize("task_type", ["evaluator", "ps"])
def test_an_evaluator_or_ps_task_is_refused_in_one_line(tmp_path, monkeypatch, capsys,
                                                         task_type):
    ports = free_ports(2)
    tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{ports[0]}"],
                                        task_type: [f"127.0.0.1:{ports[1]}"]},
                            "task": {"type": task_type, "index": 0}})
    code, stderr = run_with(monkeypatch, capsys, tf_config,
                            [*RUN, "--strategy=multi_worker", f"--workdir={tmp_path / 'run'}"])
    errors = [line for line in stderr.splitlines() if line.startswith("tfkd: error:")]
    assert code == 2 and len(errors) == 1, stderr[-2000:]
    assert task_type in errors[0] and "chief and worker tasks only" in errors[0], errors


def test_a_taken_port_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    other = free_ports(1)[0]
    tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{other}", f"127.0.0.1:{port}"]},
                            "task": {"type": "worker", "index": 1}})
    try:
        code, stderr = run_with(monkeypatch, capsys, tf_config,
                                [*RUN, "--strategy=multi_worker", f"--workdir={tmp_path / 'run'}"])
    finally:
        taken.close()
    errors = [line for line in stderr.splitlines() if line.startswith("tfkd: error:")]
    assert code == 2 and len(errors) == 1, stderr[-2000:]
    assert f"port {port}" in errors[0] and "worker 1" in errors[0], errors
    assert not (tmp_path / "run").exists()


# --- real clusters (subprocesses: a multi-worker strategy changes its process for good) -------

def start_worker(tf_config, *args):
    env = {**process_env(), "TF_CONFIG": json.dumps(tf_config)}
    return subprocess.Popen([sys.executable, "-m", "tfkd", *RUN, "--strategy=multi_worker",
                             *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process, timeout):
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # TensorFlow's coordination service catches SIGTERM: SIGKILL.
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"still running after {timeout} s: {err[-2000:]}")


@pytest.mark.parametrize("index", [0, 1])
def test_a_worker_whose_peer_never_comes_gives_up_in_one_line(tmp_path, index):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    peer = 1 - index
    workdir = tmp_path / "run"
    started = time.monotonic()
    process = start_worker({"cluster": cluster, "task": {"type": "worker", "index": index}},
                           "--cluster_timeout=3", f"--workdir={workdir}")
    _, stderr = finish(process, timeout=150)
    took = time.monotonic() - started
    lines = stderr.splitlines()
    waiting = [line for line in lines if line.startswith("tfkd: waiting")]
    errors = [line for line in lines if line.startswith("tfkd: error:")]
    assert process.returncode == 2, stderr[-3000:]
    assert len(waiting) == 1 and f"worker {peer} at {cluster['worker'][peer]}" in waiting[0], lines
    assert len(errors) == 1 and f"worker {peer} at {cluster['worker'][peer]}" in errors[0], lines
    assert "--cluster_timeout" in errors[0] and "Traceback" not in stderr
    assert took < 120, took  # TensorFlow's start-up, then 3 s
    assert not workdir.exists()  # a worker that gave up leaves nothing behind


def test_a_non_chief_worker_names_where_the_chief_writes(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workdir = tmp_path / "shared"
    workers = [start_worker({"cluster": cluster, "task": {"type": "worker", "index": i}},
                            "--epochs=1", f"--workdir={workdir}") for i in range(2)]
    (out0, err0), (out1, err1) = [finish(w, timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], (err0[-2000:], err1[-2000:])
    assert "member_0" in out0 and (workdir / "results.md").exists()
    assert "member_0" not in out1  # no table of its own
    named = [line for line in out1.splitlines() if str(workdir) in line and "chief" in line]
    assert len(named) == 1 and cluster["worker"][0] in named[0], (out1, err1[-2000:])
