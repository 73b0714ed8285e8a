"""`npz:PATH`: a NumPy archive with arrays x_train, y_train, x_test, y_test, as written by

    np.savez("set.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

x_* are numeric arrays of shape (n, ...): uint8 images are scaled to [0, 1] before
standardisation, and grey-scale images (n, h, w) get a channel axis. y_* are integer class
indices 0..K-1 of shape (n,) or (n, 1); every class must occur in y_train. Other arrays in
the archive are ignored; validation is carved from the training arrays.

The archive is validated, not trusted: the path must be a regular file, each array's .npy
header is read first (shape and dtype, before any data), object arrays are refused (loading
them would unpickle, which can run code), and so are arrays whose declared size exceeds
the memory available or the bytes the member holds. Each refusal is one line naming the
file and the array.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib

from numpy.lib import format as npy_format

from tfkd.data.arrays import splits_from_arrays
from tfkd.data.files import available_memory, path_problem, size_text
from tfkd.data.registry import DatasetError, Splits, register_source

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_EXPECTED = f"a .npz archive with arrays {', '.join(ARRAYS)} (written by numpy.savez)"
_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0,
                   (2, 0): npy_format.read_array_header_2_0}
# What reading a damaged member raises: zipfile's CRC and format errors, zlib's for
# garbled deflate data, numpy's ValueError for a short or malformed .npy, RuntimeError and
# NotImplementedError for encrypted or unsupported compression.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
                NotImplementedError)


def check_npz(path: str) -> None:
    problem = path_problem(os.path.expanduser(path))
    if problem:
        raise DatasetError(f"npz:{path} {problem}; expected {_EXPECTED}")


def _reason(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _header(archive, info, name, array):
    """(shape, dtype, bytes before the data) of member `info`, from its .npy header."""
    try:
        with archive.open(info) as member:
            version = npy_format.read_magic(member)
            if version not in _HEADER_READERS:
                raise ValueError(f".npy format version {version[0]}.{version[1]}, which tfkd "
                                 "does not read (structured arrays)")
            shape, _, dtype = _HEADER_READERS[version](member)
            return shape, dtype, member.tell()
    except _READ_ERRORS as e:
        raise DatasetError(f"{name}: {array} ({info.filename}) is not a readable .npy array "
                           f"({_reason(e)})") from None


def _read_archive(path, name):
    """{array: ndarray} of ARRAYS, each checked from its header before it is read."""
    try:
        with open(path, "rb") as file:
            single = file.read(len(npy_format.MAGIC_PREFIX)) == npy_format.MAGIC_PREFIX
        if single:
            raise DatasetError(f"{name} holds a single array, not {_EXPECTED}")
        archive = zipfile.ZipFile(path)
    except _READ_ERRORS as e:
        raise DatasetError(f"{name} is not a readable .npz archive with {', '.join(ARRAYS)} "
                           f"({_reason(e)})") from None
    with archive:
        # As numpy.load names them: a member "x_train.npy" is the array "x_train".
        members = {}
        for info in archive.infolist():
            members.setdefault(info.filename.removesuffix(".npy"), info)
        missing = [a for a in ARRAYS if a not in members]
        if missing:
            raise DatasetError(f"{name} has arrays {', '.join(members) or 'none'}; it needs "
                               f"{', '.join(ARRAYS)} (missing: {', '.join(missing)})")
        headers = {a: _header(archive, members[a], name, a) for a in ARRAYS}
        available, total = available_memory(), 0
        for array, (shape, dtype, offset) in headers.items():
            declared = "shape {} of {}".format(shape, dtype)
            if dtype.hasobject:
                raise DatasetError(f"{name}: {array} holds Python objects ({declared}); "
                                   "loading it would unpickle them, which can run code: store "
                                   "numeric arrays")
            size = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            total += size
            if total > available:
                others = f", {size_text(total)} with the arrays before it" if total > size else ""
                raise DatasetError(f"{name}: {array} declares {declared} ({size_text(size)}"
                                   f"{others}), more than the {size_text(available)} of memory "
                                   "available")
            held = members[array].file_size - offset
            if size > held:
                raise DatasetError(f"{name}: {array} declares {declared} ({size} bytes) but "
                                   f"holds {held} bytes of data; the archive is truncated or "
                                   "damaged")
        arrays = {}
        for array in ARRAYS:
            try:
                with archive.open(members[array]) as member:
                    # NOTE: allow_pickle=False: an archive is data (object arrays are refused
                    # above already; this keeps it so for any header trick).
                    arrays[array] = npy_format.read_array(member, allow_pickle=False)
            except _READ_ERRORS as e:
                raise DatasetError(f"{name}: {array} cannot be read ({_reason(e)}); the "
                                   "archive is damaged") from None
        return arrays


@register_source("npz", form="npz:PATH", check=check_npz,
                 options=("image_size", "input_scaling"),
                 usage=f"npz:PATH (a .npz with {', '.join(ARRAYS)})")
def load_npz(path: str, *, split_seed: int = 0, val_size=None, data_dir=None,
             image_size=None, input_scaling=None) -> Splits:
    """The archive at `path` as `Splits` (see the module docstring)."""
    del data_dir  # refused by the registry
    name = f"npz:{path}"
    arrays = _read_archive(os.path.expanduser(path), name)
    return splits_from_arrays(name, *(arrays[a] for a in ARRAYS), split_seed=split_seed,
                              val_size=val_size, image_size=image_size,
                              input_scaling=input_scaling)
