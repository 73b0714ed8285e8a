"""Ctrl-C or SIGTERM in the first seconds of a run, while Python starts tfkd and TensorFlow
imports, ends like a stop anywhere else: one line, exit code 130 or 143, no traceback.

Subprocesses (a signal needs a process of its own), each stopped after a delay chosen to
land in a different phase: absl's start-up, flag parsing, TensorFlow's import (several
seconds on 2 busy cores), the first steps. The run asked for takes minutes, so that every
delay finds it still running. Not covered: the first ~0.2 s, in which Python starts and
imports the command itself, before any of tfkd's code can install a handler.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers.command import ROOT, process_env

DELAYS = (0.3, 1.5, 3.0)
MORE_DELAYS = (0.6, 1.0, 2.0, 2.5, 3.5, 4.0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stop_while_tfkd_starts_is_one_line(tmp_path, sig):
    stopped_at(tmp_path, sig, DELAYS)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stop_at_more_moments_of_the_start_is_one_line(tmp_path, sig):
    stopped_at(tmp_path, sig, MORE_DELAYS)


def stopped_at(tmp_path, sig, delays):
    for delay in delays:
        workdir = tmp_path / f"run_{delay}"
        process = subprocess.Popen(
            [sys.executable, "-m", "tfkd", "--mode=train", "--model=mlp", "--num_models=1",
             "--epochs=100000", f"--workdir={workdir}"],
            cwd=ROOT, env=process_env(), stderr=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        time.sleep(delay)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        assert "Traceback" not in stderr, (delay, stderr[-3000:])
        ours = [line for line in stderr.splitlines() if line.startswith("tfkd:")]
        assert process.returncode == 128 + sig, (delay, process.returncode, stderr[-3000:])
        assert len(ours) == 1 and ours[0].startswith(f"tfkd: interrupted by {sig.name}"), (
            delay, stderr[-3000:])
        assert not os.path.exists(workdir / "models" / "member_0.keras")
