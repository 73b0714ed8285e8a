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
