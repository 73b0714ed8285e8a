"""What every data file tfkd reads is checked for before it is opened: that it is the kind
of thing asked for (a regular file, a directory), and, for what is read into memory whole,
that the machine has the memory.

Written by hand: opening a FIFO blocks until a writer appears, and Python's errors for a
symbolic link loop or a directory say "[Errno 40]" and "[Errno 21]", not what the path is.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Optional

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def path_problem(path: str, want: str = "file") -> Optional[str]:
    """None if `path` is a readable regular file (`want="file"`) or directory
    (`want="directory"`), else what it is instead ("does not exist", "is a symbolic link
    loop", "is a directory", "is a FIFO (named pipe)", ...). Reads no content, never blocks."""
    try:
        status = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return ("is a broken symbolic link" if os.path.islink(path) else "does not exist")
        if e.errno == errno.EACCES:
            return "cannot be reached (permission denied)"
        return f"cannot be read ({os.strerror(e.errno) if e.errno else e})"
    mode = status.st_mode
    if want == "directory":
        if not stat.S_ISDIR(mode):
            return "is a file, not a directory"
        if not os.access(path, os.R_OK | os.X_OK):
            return "is a directory that cannot be read (permission denied)"
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    for test, kind in _KINDS:
        if test(mode):
            return f"is {kind}, not a regular file"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def available_memory() -> int:
    """Bytes of memory available to a new allocation without swapping: MemAvailable from
    /proc/meminfo (which counts reclaimable caches), else the free pages sysconf reports."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def size_text(count: int) -> str:
    """Bytes as a short figure (the workdir's messages' format)."""
    from tfkd.workdir import _size  # the one formatter; tfkd/workdir.py owns it

    return _size(count)
