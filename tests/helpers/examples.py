"""Code examples of the Markdown pages, for the tests that run them as written."""

import os
import re

from helpers.command import ROOT


def markdown_example(page, name):
    """The code of the ```python block after `<!-- example: name -->` in `page` (a path
    relative to the repository root)."""
    text = open(os.path.join(ROOT, page), encoding="utf-8").read()
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"{page} has no example named {name!r}"
    return match.group(1)
