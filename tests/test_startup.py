"""What a run prints before and around training, and what a refusal costs: `tfkd --help`
and every refusal that does not depend on the data answer without importing TensorFlow."""

import json
import subprocess
import sys

from helpers.command import ROOT, process_env

# Each runs the console script's path (tfkd.cli.run) in one fresh interpreter, one after
# another; after each, the modules that cost seconds must still be absent.
# (argv, what its one line must name); None: help, on stdout.
REFUSALS = [
    (["--help"], None),
    (["--helpfull"], None),
    (["--alpha=1.5"], "1.5"),
    (["--mode=bogus"], "bogus"),
    (["--model=bogus"], "bogus"),
    (["--dataset=bogus:x"], "bogus:x"),
    (["--augment=bogus"], "bogus"),
    (["--optimizer=bogus"], "bogus"),
    (["--lr_schedule=bogus"], "bogus"),
    (["--checkpoint=bogus"], "bogus"),
    (["--distillation_loss=bogus"], "bogus"),
    (["--teacher_average=bogus"], "bogus"),
    (["--tuner=bogus"], "bogus"),
    (["--tune_params=bogus"], "bogus"),
    (["--precision=bogus"], "bogus"),
    (["--epochs=two"], "two"),
    (["--flagfile=/nonexistent/run.flags"], "/nonexistent/run.flags"),
    (["--recipe=nonexistent"], "nonexistent"),
    (["--no_such_flag=1"], "no_such_flag"),
]
# (A name no source takes is looked up in TFDS's catalogue: tensorflow_datasets, which
# imports in half a second without TensorFlow, may load.)
HEAVY = ("tensorflow", "keras", "keras_tuner")

SCRIPT = """
import io, json, sys
from absl import flags
from tfkd import cli
heavy, cases = {heavy!r}, json.loads(sys.argv[1])
answers = []
for argv in cases:
    sys.argv = ["tfkd", *argv]
    out, err = io.StringIO(), io.StringIO()
    sys.stdout, sys.stderr = out, err
    try:
        cli.run()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    flags.FLAGS.unparse_flags()
    answers.append(dict(argv=argv, code=code, out=out.getvalue(), err=err.getvalue(),
                        imported=[m for m in heavy if m in sys.modules]))
print(json.dumps(answers))
"""


def run_cli_in_fresh_interpreter(cases):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(heavy=HEAVY), json.dumps(cases)],
        capture_output=True, text=True, env=process_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_help_and_data_independent_refusals_do_not_import_tensorflow():
    answers = run_cli_in_fresh_interpreter([argv for argv, _ in REFUSALS])
    for answer, (argv, named) in zip(answers, REFUSALS):
        code = answer["code"]
        if named is None:
            assert code == 0 and "--mode" in answer["out"], answer
        else:
            # One line naming the bad value, exit code 2 (the standards of every refusal).
            assert code == 2 and answer["err"].startswith("tfkd: error: "), answer
            assert answer["err"].count("\n") == 1 and named in answer["err"], answer
        assert answer["imported"] == [], (
            f"tfkd {' '.join(argv)} imported {answer['imported']}: {answer['err']}")


def test_helpfull_shows_tfkds_settings_with_their_choices_then_absls_own_flags():
    from tfkd import cli
    from tfkd.config import GROUPS, choices_of

    text = cli.full_help_text()
    tfkd_part, _, absl_part = text.partition("absl's own flags:")
    flat = " ".join(tfkd_part.split())
    for title, _ in GROUPS.values():
        assert f"{title}:" in tfkd_part
    for name in ("mode", "model", "augment", "tuner", "distillation_loss"):
        assert "One of: " + ", ".join(map(str, choices_of(name))) in flat, name
    assert "--verbosity" in absl_part and "--verbosity" not in tfkd_part  # absl.logging's
    assert "--mode" not in absl_part and "--alpha" not in absl_part
    # absl's own listing of the flags carries the choices too.
    from absl import flags

    assert "One of: " + ", ".join(choices_of("mode")) in " ".join(
        flags.FLAGS["mode"].help.split())


def test_a_run_starts_quietly_says_its_devices_and_logs_each_epoch(tmp_path):
    """A first run as a new user sees it: no TensorFlow start-up lines (with the user's
    environment as it comes, without TF_CPP_MIN_LOG_LEVEL), one line of devices, and with
    the default --verbose=0 one line per epoch of each model."""
    env = {k: v for k, v in process_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "tfkd", "--mode=train", "--dataset=mnist1d", "--model=mlp",
         "--num_models=2", "--epochs=3", "--train_size=256", "--allow_chance",
         f"--workdir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    noise = [line for line in lines if line[:5] in ("E0000", "W0000", "I0000")
             or line.startswith("WARNING: All log messages before absl")]
    assert noise == [], done.stderr
    assert len([line for line in lines if line.startswith("tfkd: devices: ")]) == 1, done.stderr
    for member in ("member_0", "member_1"):
        epochs = [line for line in lines if line.startswith(f"{member}: epoch ")]
        assert [line.split()[2] for line in epochs] == ["1/3", "2/3", "3/3"], done.stderr
        assert all("loss " in line and "val_accuracy " in line for line in epochs), epochs


START_UP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796688718.334211   11994 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results\n"
    "I0000 00:00:1796688718.334551   11994 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
    "I0000 00:00:1796688718.448631   11994 cpu_feature_guard.cc:227] This TensorFlow binary "
    "is optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.\n"
    "E0000 00:00:1796688727.844302   11994 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
OTHERS = ("E0000 00:00:1796688727.844302   11994 some_op.cc:12] a real error\n"
          "Fatal Python error: something a user must see\n")


def test_tensorflows_start_up_lines_are_dropped_and_nothing_else(capfd, monkeypatch):
    import os

    from tfkd import runtime

    for gpu in (False, True):
        monkeypatch.setattr(runtime, "nvidia_present", lambda gpu=gpu: gpu)
        with runtime.quiet_native_stderr():
            os.write(2, (START_UP + OTHERS).encode())
        err = capfd.readouterr().err
        # Where an NVIDIA device exists, the GPU lines say why TensorFlow does not use it.
        gpu_lines = [line + "\n" for line in START_UP.splitlines() if "cuda" in line]
        assert err == ("".join(gpu_lines) if gpu else "") + OTHERS
    with runtime.quiet_native_stderr(enabled=False):  # a user's own TF_CPP_MIN_LOG_LEVEL
        os.write(2, START_UP.encode())
    assert capfd.readouterr().err == START_UP


def test_the_choices_are_the_implementations_names():
    """The settings read their choices from tfkd.choices without TensorFlow; the modules
    that implement them take the same names from there, and implement each."""
    import keras_tuner

    from tfkd import ensemble, models, optim
    from tfkd.config import choices_of
    from tfkd.data import pipeline
    from tfkd.modes import fit, tune

    assert set(choices_of("model")) <= set(models.MODELS)
    assert {name for name, builder in models.MODELS.items()
            if builder.__module__.startswith("tfkd.")} == set(choices_of("model"))
    # (the distillation methods' registry has its own test: tests/test_terms.py)
    assert tuple(tune.TUNERS) == choices_of("tuner")
    assert all(issubclass(c, keras_tuner.Tuner) for c in tune.TUNERS.values())
    assert pipeline.AUGMENTATIONS == choices_of("augment")
    assert (optim.OPTIMIZERS, optim.LR_SCHEDULES) == (choices_of("optimizer"),
                                                      choices_of("lr_schedule"))
    assert tuple(fit.CHECKPOINTS) == choices_of("checkpoint")
    assert ensemble.AVERAGES == choices_of("teacher_average")
    assert tuple(tune.SEARCHABLE) == choices_of("tune_params")
