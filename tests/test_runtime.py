"""Strategies, XLA, precision and the teacher-output cache, through the real command."""

import json
import os
import socket

import numpy as np
import pytest
from helpers.command import ROOT, ok, tfkd
from test_cli import result_names

from tfkd import cache


def rows(workdir):
    return {r["name"]: r for r in json.load(open(os.path.join(workdir, "results.json")))["rows"]}


def history(workdir, name):
    return json.load(open(os.path.join(workdir, "metrics", f"{name}.json")))["history"]


def test_cache_gives_the_same_training_as_online_teachers(tmp_path):
    common = ["--smoke", "--model=mlp", "--epochs=2", f"--workdir={tmp_path / 'cached'}"]
    ok(tfkd("--mode=train", *common))
    ok(tfkd("--mode=distill", *common))
    cache_files = sorted(os.listdir(tmp_path / "cached" / "cache"))
    assert [f.split("-")[0] for f in cache_files] == ["ensemble", "ensemble"]
    logits = np.load(tmp_path / "cached" / "cache" / cache_files[0])
    assert logits.dtype == np.float16 and logits.shape == (256, 10)

    online = ["--smoke", "--model=mlp", "--epochs=2", f"--workdir={tmp_path / 'online'}",
              f"--teacher_dir={tmp_path / 'cached'}", "--noteacher_cache"]
    ok(tfkd("--mode=distill", *online))
    assert not os.listdir(tmp_path / "online" / "cache")
    a, b = history(tmp_path / "cached", "distilled"), history(tmp_path / "online", "distilled")
    # float16 logits: equal to a few parts in 10^4, not bit for bit.
    for key in ("loss", "distillation_loss", "student_loss", "accuracy"):
        np.testing.assert_allclose(a[key], b[key], rtol=2e-3, err_msg=key)


def test_cache_is_reused_and_invalidated_with_the_teacher(tmp_path):
    class Counting:
        calls = 0

        def predict(self, x, batch_size, verbose):
            Counting.calls += 1
            return np.arange(len(x) * 3, dtype=np.float32).reshape(len(x), 3)

    teacher_file = tmp_path / "teacher.keras"
    teacher_file.write_text("v1")
    x = np.zeros((5, 2))
    path = tmp_path / f"t-{cache.fingerprint([teacher_file], 'digits')}.npy"
    first = cache.cached_logits(Counting(), x, path)
    again = cache.cached_logits(Counting(), x, path)
    assert Counting.calls == 1 and first.dtype == np.float16
    np.testing.assert_array_equal(first, again)
    fingerprint = cache.fingerprint([teacher_file], "digits")
    teacher_file.write_text("version 2")
    assert cache.fingerprint([teacher_file], "digits") != fingerprint
    assert cache.fingerprint([teacher_file], "mnist1d") != cache.fingerprint([teacher_file], "digits")


def test_mirrored_with_xla_falls_back_and_trains(tmp_path):
    workdir = tmp_path / "run"
    result = ok(tfkd("--smoke", "--mode=train", "--strategy=mirrored", "--num_cpu_devices=2",
                     "--jit_compile", f"--workdir={workdir}", process=True))
    assert "MirroredStrategy (2 replicas)" in result.stderr
    assert result.stderr.count("XLA is off") == 1
    assert result_names(workdir)[:2] == ["member_0", "member_1"]


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_with_xla_completes(tmp_path, precision):
    workdir = tmp_path / "run"
    ok(tfkd("--smoke", "--num_models=1", "--mode=train", "--jit_compile",
            f"--precision={precision}", f"--workdir={workdir}"))
    ok(tfkd("--smoke", "--num_models=1", "--mode=distill", f"--precision={precision}",
            f"--workdir={workdir}"))
    for row in rows(workdir).values():
        if row["kind"] != "summary":
            assert np.isfinite(row["test_nll"]) and row["test_accuracy"] > 0


@pytest.mark.slow
def test_two_worker_pipeline_equals_one_process(tmp_path):
    import subprocess
    import sys

    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    for s in sockets:
        s.close()
    args = ["--smoke", "--model=mlp", "--strategy=multi_worker"]
    procs = []
    for i in range(2):
        env = {**os.environ, "PYTHONPATH": ROOT,
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tfkd", *args, f"--workdir={tmp_path / 'cluster'}"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    # The reference is one process under a one-device MirroredStrategy: Keras feeds an
    # explicitly distributed model through a distributed tf.data pipeline, which draws the
    # shuffled batches differently from the default strategy's plain pipeline.
    ok(tfkd("--smoke", "--model=mlp", "--strategy=mirrored", f"--workdir={tmp_path / 'single'}",
            process=True))
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    cluster_rows, single_rows = rows(tmp_path / "cluster"), rows(tmp_path / "single")
    assert cluster_rows.keys() == single_rows.keys()
    for name, row in single_rows.items():
        if row.get("test_nll") is not None:
            np.testing.assert_allclose(cluster_rows[name]["test_nll"], row["test_nll"], rtol=1e-5,
                                       err_msg=name)
            assert cluster_rows[name]["test_accuracy"] == pytest.approx(row["test_accuracy"])
