"""Multi-worker training: two local processes with TF_CONFIG on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "helpers", "multiworker_worker.py")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(out_path, tf_config=None):
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, WORKER, str(out_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_train_like_one_process(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    workers = [launch(tmp_path / f"worker{i}.json",
                      {"cluster": cluster, "task": {"type": "worker", "index": i}})
               for i in range(2)]
    single = launch(tmp_path / "single.json")
    for process in workers + [single]:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    results = [json.load(open(tmp_path / name))
               for name in ("worker0.json", "worker1.json", "single.json")]
    assert [r["replicas"] for r in results] == [2, 2, 1]
    reference = results[-1]
    assert reference["history"]["loss"][-1] < reference["history"]["loss"][0]
    for result in results[:2]:
        for key, values in reference["history"].items():
            np.testing.assert_allclose(result["history"][key], values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["weights_sum"], reference["weights_sum"], rtol=1e-5)
