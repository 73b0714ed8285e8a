"""The `tfkd` command for tests: in this process by default, as a subprocess when asked.

A subprocess pays TensorFlow's import (5-15 s on 2 busy cores) on every call, so the tests
run the command in-process as `tfkd.cli.run` does, with its output captured; a subprocess
is kept for what only a process shows (help that exits through absl, devices split before
TensorFlow starts, deterministic kernels, which cannot be switched off again, and kills).
"""

import contextlib
import io
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Settings that change this process for good: they need `process=True`.
PROCESS_ONLY = ("--deterministic", "--num_cpu_devices", "--strategy", "--helpfull")


def process_env():
    """The environment of a `python -m tfkd` subprocess: this checkout first on its path."""
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def reset_flags():
    """tfkd's absl flags defined (once per process) and back at their defaults."""
    from absl import flags

    from tfkd import cli

    if "mode" not in flags.FLAGS:
        cli.define_flags()
    flags.FLAGS.unparse_flags()


def invoke(argv):
    """`tfkd argv` in this process, as the console script runs it (absl flags reset first):
    its exit code. Output goes where sys.stdout/sys.stderr point."""
    from tfkd import cli

    if any(arg in cli.HELP_FLAGS for arg in argv):
        sys.stdout.write(cli.help_text())
        return 0
    reset_flags()
    try:
        cli.main(cli.parse_flags(["tfkd", *argv]))
    except SystemExit as e:
        return e.code
    return 0


def tfkd(*args, cwd=None, process=False):
    """`tfkd args` run from `cwd` (the repository by default): a CompletedProcess."""
    if process:
        return subprocess.run([sys.executable, "-m", "tfkd", *args], capture_output=True,
                              text=True, env=process_env(), cwd=cwd or ROOT, timeout=600)
    refused = [a for a in args if a.split("=", 1)[0] in PROCESS_ONLY]
    assert not refused, f"{refused} change the test process for good: pass process=True"
    import keras
    from absl import logging
    # TensorFlow has no public reader of this switch (only enable_op_determinism).
    from tensorflow.python.framework.config import is_op_determinism_enabled

    out, err = io.StringIO(), io.StringIO()
    # tfkd's progress lines go through absl's handler, as under absl.app.run.
    logging.use_absl_handler()
    handler = logging.get_absl_handler().python_handler
    previous_stream, previous_policy = handler.stream, keras.mixed_precision.global_policy()
    previous_cwd = os.getcwd()
    os.chdir(cwd or ROOT)
    try:
        handler.stream = err
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = invoke(list(args))
    finally:
        handler.stream = previous_stream
        os.chdir(previous_cwd)
        keras.mixed_precision.set_global_policy(previous_policy)
    # A workdir can hand a remembered --deterministic to a call that did not pass it.
    assert not is_op_determinism_enabled(), (
        "the run switched on deterministic kernels: pass process=True")
    return subprocess.CompletedProcess(["tfkd", *args], code, out.getvalue(), err.getvalue())


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result
