"""Flagfiles and recipes, read once, checked, and expanded into the command line.

`tfkd --flagfile=FILE` and `tfkd --recipe=NAME` put FILE's lines where the flag stood, as
absl does, so that flags after them override them. tfkd expands them itself and hands absl
an argv without flagfiles rather than letting absl read them: absl's reader
(`FlagValues._get_flag_file_lines`) opens whatever the name points to and reads it whole
(a FIFO blocks forever, /dev/zero fills memory), follows includes by recursion with no
depth limit (a deep chain ends in a RecursionError), only warns about a cycle, decodes in
the locale's encoding, and keeps a UTF-8 byte-order mark as part of the first flag. It has
no hook to check a file before reading it, and checking first and letting absl read the
file again would read a different file if it changed in between. So one reader here
checks each file as it reads it, and absl only sees the flags.

The format is absl's: one argument per line, blank lines and lines starting with `#` or
`//` skipped, `--flagfile=FILE` including FILE there (a relative FILE is relative to the
working directory, as in absl). Two leniencies: leading blanks before a comment or flag
are ignored, and a UTF-8 byte-order mark (Windows editors write one) is dropped.
"""

import codecs
import errno
import os
import re
import stat

MAX_BYTES = 1 << 20  # a flagfile (or all of one command's together) holds at most 1 MiB
MAX_DEPTH = 20  # flagfiles include flagfiles at most this deep
FORMAT = "flagfiles are UTF-8 text files of --flag=value lines"
_BOMS = {codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16",
         codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32"}


class FlagfileError(ValueError):
    """A flagfile or recipe that cannot be used; the message is one line naming it."""


def expand(argv, recipes):
    """argv (without the program name) with every `--flagfile=FILE` / `--flagfile FILE` and
    `--recipe=NAME` / `--recipe NAME` replaced by the flags they hold, in place; includes
    expanded the same way. `recipes`: {name: path}. Arguments after `--` stay as given."""
    reader = _Reader(recipes)
    out = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            out += [arg, *args]
            break
        name, value = _directive(arg)
        if name and value is None:  # "--flagfile FILE": the value is the next argument
            if not args:
                raise FlagfileError(f"--{name} needs a value (--{name}=FILE or NAME)")
            value = args.pop(0)
        if name:
            out += reader.directive(name, value, chain=())
        else:
            out.append(arg)
    return out


def _directive(arg):
    """("flagfile" or "recipe", its value or None when it is the next argument), or
    (None, None) for any other argument. absl accepts one or two leading dashes."""
    for name in ("flagfile", "recipe"):
        for prefix in (f"--{name}", f"-{name}"):
            if arg == prefix:
                return name, None
            if arg.startswith(prefix + "="):
                return name, arg[len(prefix) + 1:]
    return None, None


class _Reader:
    def __init__(self, recipes):
        self.recipes = recipes
        self.total = 0  # bytes read for this command, over every file

    def directive(self, name, value, chain):
        """The flags a --flagfile or --recipe stands for; `chain`: the files including it."""
        where = f" (included from {_shown(chain)})" if chain else ""
        if name == "recipe":
            if value not in self.recipes:
                raise FlagfileError(f"unknown recipe {value!r}{where}; choose one of: "
                                    f"{', '.join(self.recipes) or '(none found)'}")
            path = self.recipes[value]
        else:
            path = os.path.expanduser(value.strip())
            if not path:
                raise FlagfileError(f"--flagfile needs a file name{where}; {FORMAT}")
        return self.read(path, chain)

    def read(self, path, chain):
        real = os.path.realpath(path)
        if real in (os.path.realpath(p) for p in chain):
            raise FlagfileError(f"flagfile {path!r} includes itself: "
                                f"{_shown((*chain, path))}; remove the --flagfile line that "
                                "closes the circle")
        if len(chain) > MAX_DEPTH:
            raise FlagfileError(f"flagfiles include each other more than {MAX_DEPTH} deep "
                                f"({_shown(chain[:3])} -> ... -> {path!r}); include them "
                                f"at most {MAX_DEPTH} deep")
        text = self._text(path, chain)
        out = []
        # Lines as absl (universal newlines) splits them, not str.splitlines (\f, \u2028, ...).
        for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
            line = line.strip()
            if not line or line.startswith(("#", "//")):
                continue
            name, value = _directive(line)
            if name and value is None:
                raise FlagfileError(f"flagfile {path!r} line {number}: --{name} needs a "
                                    f"value on the same line (--{name}=...)")
            if name:
                out += self.directive(name, value, (*chain, path))
            else:
                out.append(line)
        return out

    def _text(self, path, chain):
        """The checked text of one flagfile: a regular file, at most MAX_BYTES (and the
        command's flagfiles together too), UTF-8 with any byte-order mark dropped."""
        shown = repr(path) + (f" (included from {_shown(chain)})" if chain else "")
        try:
            # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting
            # for a writer; it is refused below like any other file that is not regular.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            what = {errno.ENOENT: "does not exist", errno.EACCES: "cannot be read "
                    "(permission denied)", errno.EISDIR: "is a directory"}.get(
                e.errno, f"cannot be opened: {e.strerror}")
            raise FlagfileError(f"flagfile {shown} {what}; {FORMAT}") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise FlagfileError(f"flagfile {shown} is {_kind(mode)}, not a regular file; "
                                f"{FORMAT}")
        with os.fdopen(fd, "rb") as f:
            try:
                data = f.read(MAX_BYTES + 1)  # never more, whatever the file claims
            except OSError as e:
                raise FlagfileError(f"flagfile {shown} cannot be read: {e.strerror}; "
                                    f"{FORMAT}") from None
        if len(data) > MAX_BYTES:
            raise FlagfileError(f"flagfile {shown} is larger than {MAX_BYTES // 2**20} MiB; "
                                f"{FORMAT}, at most {MAX_BYTES // 2**20} MiB")
        self.total += len(data)
        if self.total > MAX_BYTES:
            raise FlagfileError(f"the flagfiles of this command hold more than "
                                f"{MAX_BYTES // 2**20} MiB together (the last read: {shown}); "
                                "include each file once")
        for bom, encoding in _BOMS.items():  # UTF-32-LE's mark starts like UTF-16-LE's
            if data.startswith(bom) and not (encoding == "UTF-16"
                                             and data.startswith(codecs.BOM_UTF32_LE)):
                raise FlagfileError(f"flagfile {shown} is {encoding} text (it starts with "
                                    f"the byte-order mark {bom.hex(' ').upper()}); save it "
                                    f"as UTF-8: {FORMAT}")
        try:
            # utf-8-sig drops the UTF-8 byte-order mark Windows editors put first.
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise FlagfileError(f"flagfile {shown} is not UTF-8 text (byte {e.start} is "
                                f"0x{data[e.start]:02X}); {FORMAT}") from None


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _shown(chain):
    return " -> ".join(map(repr, chain))
