"""Checks that the tables and figures in README.md and docs/*.md match what their commands write.

A doc author tags a table (or a paragraph of figures) with one HTML comment directly above
it, naming the command that produces it:

    <!-- produced by: tfkd --workdir=WORKDIR ; table: WORKDIR/results.md -->
    | model | kind | ... |

    <!-- produced by: python tools/krr_self_distill.py --seeds=2 ; fast -->

Options follow the command, each after " ; ":
- `table: PATH`: read the command's output from PATH (relative to the repository) instead
  of its standard output;
- `fast`: the command takes seconds; `--fast` checks only these (the test suite does).
WORKDIR anywhere in the marker is replaced by a fresh temporary directory, one per command;
`tfkd` and `python` run this checkout's tfkd with this interpreter. Markers with the same
command share one run (and its WORKDIR).

A tagged table must equal, cell by cell, the table in the output with the same header row.
A tagged paragraph must appear in the output with the same words; its numbers are compared
one by one. Every mismatch is printed as `file:line: ...`; the exit code is 1 if there is
any, 0 if none.

    python tools/check_docs.py --list          # the tagged tables and their commands
    python tools/check_docs.py --fast          # seconds
    python tools/check_docs.py --only=digits   # markers whose file or command matches
    python tools/check_docs.py                 # everything
"""

import glob
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tfkd.toolargs import OneLineParser  # noqa: E402

MARKER = re.compile(r"^\s*<!--\s*produced by:\s*(.*?)\s*-->\s*$")
# Options are parsed from the end of the marker, so a command may itself contain " ; ".
OPTION = re.compile(r"\s*;\s*(fast|table:\s*\S+)\s*$")
NUMBER = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?")


class Tag:
    """One tagged block: where it is, its command, its options and its documented lines."""

    def __init__(self, path, line, marker, block):
        self.path, self.line, self.block = path, line, block
        self.fast, self.table_file = False, None
        while (option := OPTION.search(marker)):
            marker = marker[:option.start()]
            if option.group(1) == "fast":
                self.fast = True
            else:
                self.table_file = option.group(1).split(":", 1)[1].strip()
        self.command = marker.strip()

    def where(self, offset=0):
        return f"{self.path}:{self.line + offset}"


def find_tags(root):
    """Every tag in root's README.md and docs/*.md, in file order."""
    tags = []
    for path in ["README.md"] + sorted(glob.glob("docs/*.md", root_dir=root)):
        try:
            lines = open(os.path.join(root, path), encoding="utf-8").read().splitlines()
        except FileNotFoundError:
            continue
        for i, text in enumerate(lines):
            if not (marker := MARKER.match(text)):
                continue
            start = i + 1
            while start < len(lines) and not lines[start].strip():
                start += 1
            table = start < len(lines) and lines[start].lstrip().startswith("|")
            end = start
            while end < len(lines) and lines[end].strip() and (
                    not table or lines[end].lstrip().startswith("|")):
                end += 1
            # line numbers are 1-based; Tag.line is the first documented line's.
            tags.append(Tag(path, start + 1, marker.group(1), lines[start:end]))
    return tags


def cells(line):
    """The cells of one Markdown table row, `\\|` kept inside a cell."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [p.strip() for p in parts[1:-1]]


def tables(text):
    """Every Markdown table in text, as [(header cells, [row cells])], separators dropped."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            current.append(cells(line))
        elif current:
            rows = [r for r in current[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            found.append((current[0], rows))
            current = []
    return found


def compare_table(tag, output):
    """Mismatches between a tagged table and the output's table with its header."""
    header, rows = tables("\n".join(tag.block))[0]
    candidates = [t for t in tables(output) if t[0] == header]
    if not candidates:
        headers = "; ".join(" | ".join(h) for h, _ in tables(output)) or "none"
        return [f"{tag.where()}: the output has no table with this header (its tables' "
                f"headers: {headers})"]
    _, written = candidates[0]
    problems = []
    # Table lines in the doc: header, separator, then one row per line.
    for k, (mine, theirs) in enumerate(zip(rows, written)):
        for column, a, b in zip(header, mine, theirs):
            if a != b:
                problems.append(f"{tag.where(2 + k)}: row {mine[0]!r}, column {column!r}: "
                                f"documented {a!r}, the command wrote {b!r}")
        if len(mine) != len(theirs):
            problems.append(f"{tag.where(2 + k)}: row {mine[0]!r} has {len(mine)} cells, "
                            f"the command wrote {len(theirs)}")
    for k, row in enumerate(rows[len(written):]):
        problems.append(f"{tag.where(2 + len(written) + k)}: row {row[0]!r} is documented, "
                        "the command wrote no such row")
    for row in written[len(rows):]:
        problems.append(f"{tag.where(2 + len(rows))}: the command wrote a row the table lacks: "
                        f"| {' | '.join(row)} |")
    return problems


def compare_text(tag, output):
    """Mismatches between a tagged paragraph and the same words in the output."""
    text = " ".join(line.strip() for line in tag.block)
    # The paragraph's words, whitespace-insensitive, with a capture group at each number.
    words = [r"\s*" + r"\s+".join(map(re.escape, piece.split())) + r"\s*"
             for piece in NUMBER.split(text)]
    regex = f"({NUMBER.pattern})".join(words)
    match = re.search(regex, " ".join(output.split()))
    if not match:
        return [f"{tag.where()}: the output has no text like {text!r}"]
    return [f"{tag.where()}: figure {k + 1} of the paragraph: documented {a}, the command "
            f"wrote {b}"
            for k, (a, b) in enumerate(zip(NUMBER.findall(text), match.groups())) if a != b]


def run(command, workdir, root):
    """Runs one command with WORKDIR = workdir; returns its standard output, or raises
    RuntimeError saying why it failed."""
    shims = os.path.join(workdir, ".bin")
    os.makedirs(shims)
    # `tfkd` and `python` in a marker mean this checkout's tfkd under this interpreter,
    # whatever is installed; shell scripts on PATH, so any shell syntax keeps working.
    for name, target in (("python", f'"{sys.executable}"'),
                         ("tfkd", f'"{sys.executable}" -m tfkd')):
        with open(os.path.join(shims, name), "w") as f:
            f.write(f'#!/bin/sh\nexec {target} "$@"\n')
        os.chmod(os.path.join(shims, name), 0o755)
    env = dict(os.environ, PATH=shims + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
               TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command.replace("WORKDIR", workdir), shell=True, cwd=root, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the command exited with {done.returncode}:\n{tail}")
    return done.stdout


def compare(tag, stdout, workdir, root):
    """The mismatches of one tag against its command's output."""
    if not tag.block or MARKER.match(tag.block[0]):
        return [f"{tag.where(-1)}: no table or text follows the marker"]
    output = stdout
    if tag.table_file:
        try:
            path = os.path.join(root, tag.table_file.replace("WORKDIR", workdir))
            output = open(path, encoding="utf-8").read()
        except OSError as error:
            return [f"{tag.where()}: the command wrote no {tag.table_file}: {error.strerror}"]
    if tag.block and tag.block[0].lstrip().startswith("|"):
        return compare_table(tag, output)
    return compare_text(tag, output)


def check(tags, root, log=print):
    """Runs each distinct command once, in a fresh WORKDIR, and compares all its tags;
    returns the mismatches in file order."""
    found = {}
    for command in dict.fromkeys(t.command for t in tags):
        log(f"running: {command}", flush=True)
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="check_docs_") as workdir:
            try:
                stdout = run(command, workdir, root)
            except RuntimeError as failure:
                stdout = failure
            log(f"  took {time.monotonic() - start:.0f} s", flush=True)
            for tag in tags:
                if tag.command == command:
                    found[id(tag)] = ([f"{tag.where()}: {stdout}"]
                                      if isinstance(stdout, RuntimeError)
                                      else compare(tag, stdout, workdir, root))
    return [problem for tag in tags for problem in found[id(tag)]]


def main(argv=None):
    parser = OneLineParser(prog="check_docs.py", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="List the tagged blocks and exit.")
    parser.add_argument("--only", metavar="PATTERN",
                        help="Only tags whose 'file:line command' matches this regex.")
    parser.add_argument("--fast", action="store_true", help="Only tags marked fast.")
    parser.add_argument("--root", default=REPO, help="Where README.md and docs/ are.")
    args = parser.parse_args(argv)
    try:
        only = re.compile(args.only) if args.only else None
    except re.error as error:
        parser.error(f"--only={args.only} is not a regular expression: {error}")
    if not (os.path.isfile(os.path.join(args.root, "README.md"))
            or glob.glob("docs/*.md", root_dir=args.root)):
        parser.error(f"--root={args.root} has no README.md and no docs/*.md")
    every = find_tags(args.root)
    tags = [t for t in every
            if (not args.fast or t.fast)
            and (only is None or only.search(f"{t.where()} {t.command}"))]
    if not tags:
        chosen = " ".join(a for a in (args.fast and "--fast", args.only and f"--only={args.only}")
                          if a)
        parser.error(f"{chosen or 'the docs'} select none of the {len(every)} tagged blocks "
                     "(--list shows them)")
    if args.list:
        for tag in tags:
            print(f"{tag.where()}\t{'fast' if tag.fast else 'slow'}\t{tag.command}"
                  + (f"\t(table: {tag.table_file})" if tag.table_file else ""))
        return 0
    problems = check(tags, args.root)
    for problem in problems:
        print(problem)
    print(f"{len(tags)} tagged blocks, {len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
