"""The argument parser of the tools/ scripts: argparse with tfkd's one-line errors."""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `PROG: error: ...`, and exit code 2, as
    tfkd's own command's (argparse prints the usage first). Give `prog` where the tests or
    messages name it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
