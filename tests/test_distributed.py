"""Multi-worker training: two local processes with TF_CONFIG on 127.0.0.1."""

import json
import os
import subprocess
import sys

import numpy as np
from helpers.network import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "helpers", "multiworker_worker.py")




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
    assert [r["folded_teachers"] for r in results] == [2, 2, 2]
    reference = results[-1]
    assert reference["history"]["loss"][-1] < reference["history"]["loss"][0]
    for result in results[:2]:
        for key, values in reference["history"].items():
            np.testing.assert_allclose(result["history"][key], values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["weights_sum"], reference["weights_sum"], rtol=1e-5)


def test_three_replicas_with_uneven_batches_update_like_one_device(tmp_path):
    """Global batches of 64, 63 and 32 over 3 replicas (22/21/21, a last batch of one
    example on one replica, 11/11/10): the same update as one device."""
    out = tmp_path / "three.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers",
                                                          "three_replicas.py"), str(out)],
                            env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(out))
    assert results["replicas"] == 3
    from tfkd import terms

    methods = [m for m in terms.NAMES if not terms.get(m).relational]
    assert set(results) == {"replicas"} | {f"{m}/{b}" for m in methods for b in (64, 63, 32)}
    for batch_size in results.keys() - {"replicas"}:
        run = results[batch_size]
        assert run["moved"] > 1e-2, batch_size  # the epoch did something measurable
        assert run["difference"] < 1e-5, (batch_size, run)
        np.testing.assert_allclose(run["loss_three"], run["loss_one"], rtol=1e-5)


def test_the_command_trains_on_three_replicas_with_a_batch_they_do_not_divide(tmp_path):
    from helpers.command import ok, tfkd

    workdir = tmp_path / "run"
    result = ok(tfkd("--smoke", "--model=mlp", "--num_models=1", "--mode=train",
                     "--strategy=mirrored", "--num_cpu_devices=3", "--batch_size=63",
                     f"--workdir={workdir}", process=True))
    assert "MirroredStrategy (3 replicas)" in result.stderr
    table = json.load(open(workdir / "results.json"))["rows"]
    assert "member_0" in {r["name"] for r in table}
