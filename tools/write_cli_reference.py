"""Writes docs/cli.md, the flag reference, from the settings schema (`tfkd --help`).

    python tools/write_cli_reference.py
"""

import os

from tfkd import cli
from tfkd.workdir import write_text

if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_text(os.path.join(root, "docs", "cli.md"), cli.reference_markdown())
