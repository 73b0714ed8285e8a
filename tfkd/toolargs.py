"""The argument parser of the tools/ scripts: argparse with tfkd's one-line errors."""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `PROG: error: ...`, and exit code 2, as
    tfkd's own command's (argparse prints the usage first). Give `prog` where the tests or
    messages name it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def guarded(prog, workdir, body):
    """(body(), 0), or (None, exit code) after the one line a tool prints for what a user can
    fix: a setting or data tfkd refuses (2), a training run that failed (1), a workdir it
    cannot use (2)."""
    import sys

    from tfkd.config import ConfigError, TrainingError

    try:
        return body(), 0
    except (ConfigError, TrainingError) as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return None, 1 if isinstance(e, TrainingError) else 2
    except OSError as e:
        sys.stderr.write(f"{prog}: error: cannot use workdir {workdir!r}: {e.strerror or e}\n")
        return None, 2
