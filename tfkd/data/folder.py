"""`folder:PATH`: image files, one sub-folder per class, read by
`keras.utils.image_dataset_from_directory`.

Two layouts:

    PATH/train/<class>/*.png  and  PATH/test/<class>/*.png   the test split is given
    PATH/<class>/*.png                                       20% is carved out as test

Class indices follow the sorted sub-folder names, as in Keras. Without `image_size` every
image must have the same size (no silent resizing); images are grey-scale (one channel)
when every file is, RGB otherwise.
"""

from __future__ import annotations

import os

import numpy as np

from tfkd.data.arrays import carve, held_out_count, splits_from_arrays
from tfkd.data.files import path_problem
from tfkd.data.registry import DatasetError, Splits, register_source

# What image_dataset_from_directory reads (its ALLOWLIST_FORMATS); other files are skipped.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
TEST_FRACTION = 0.2  # of the images, when the folder has no test/ sub-folder
_LAYOUT = "PATH/<class>/<image> or PATH/train/<class>/<image> with PATH/test/<class>/<image>"
_GREY_MODES = ("1", "L", "I", "I;16")
_READ_BATCH = 256


def check_folder(path: str) -> None:
    problem = path_problem(os.path.expanduser(path), "directory")
    if problem:
        raise DatasetError(f"folder:{path} {problem}; expected a directory laid out as "
                           f"{_LAYOUT}")


def _class_images(directory, name):
    """{class sub-folder: [image files, recursively]}, sorted; DatasetError if a class or
    the whole directory has no image."""
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir())
    images = {}
    for label in classes:
        found = []
        for root, dirs, files in os.walk(os.path.join(directory, label)):
            dirs.sort()
            found += [os.path.join(root, f) for f in sorted(files)
                      if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DatasetError(f"{name}: class folder {os.path.join(directory, label)} has no "
                               f"image ({', '.join(IMAGE_EXTENSIONS)})")
        images[label] = found
    if not images:
        raise DatasetError(f"{name}: {directory} has no class sub-folders; expected {_LAYOUT}")
    return images


def _sizes_and_modes(paths, name):
    """{(width, height)}, {PIL mode} over `paths`, from the file headers only; DatasetError
    for a path that is not a regular file, an unreadable header, or a decompression bomb.

    Pillow's DecompressionBombWarning (an image beyond Image.MAX_IMAGE_PIXELS) is refused
    like its error (beyond twice that): TensorFlow would decode the whole image.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    sizes, modes = {}, set()
    for path in paths:
        problem = path_problem(path)  # a FIFO named x.png would block Image.open
        if problem:
            raise DatasetError(f"{name}: {path} {problem}; expected an image file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:  # reads the header, not the pixels
                    sizes.setdefault(image.size, path)
                    modes.add(image.mode)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DatasetError(f"{name}: {path} is refused as a possible decompression bomb "
                               f"({_first_line(e).rstrip('.')}; Pillow's limit is PIL.Image."
                               f"MAX_IMAGE_PIXELS)") from None
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise DatasetError(f"{name}: {path} is not a readable image "
                               f"({type(e).__name__})") from None
    return sizes, modes


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _undecodable(paths):
    """(path, reason) of the first of `paths` TensorFlow cannot decode, or None."""
    import tensorflow as tf

    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        except (tf.errors.OpError, ValueError) as e:
            return path, _first_line(getattr(e, "message", e))
    return None


def _read(directory, image_size, color_mode, name, paths):
    """All images under `directory` (the files `paths`) as (float32 in [0, 255], int32
    labels); DatasetError naming the first file TensorFlow cannot decode."""
    import keras
    import tensorflow as tf

    dataset = keras.utils.image_dataset_from_directory(
        directory, labels="inferred", label_mode="int", color_mode=color_mode,
        batch_size=_READ_BATCH, image_size=image_size, shuffle=False, verbose=False)
    images, labels = [], []
    try:
        for x, y in dataset.as_numpy_iterator():
            images.append(x)
            labels.append(y)
    except tf.errors.OpError as e:
        # Pillow read the headers; the pixels (garbled data, a TIFF named .png) fail only
        # here, in a batch that does not say which file. Decoding each one by one does.
        found = _undecodable(paths)
        path, reason = found if found else (directory, _first_line(e.message))
        raise DatasetError(f"{name}: {path} cannot be decoded by TensorFlow ({reason}); "
                           f"give PNG, JPEG, GIF or BMP images ({', '.join(IMAGE_EXTENSIONS)})"
                           ) from None
    return np.concatenate(images), np.concatenate(labels)


@register_source("folder", form="folder:PATH", check=check_folder, options=("image_size", "input_scaling"),
                 usage="folder:PATH (one sub-folder of images per class, optionally under "
                       "train/ and test/)")
def load_folder(path: str, *, split_seed: int = 0, val_size=None, data_dir=None,
                image_size=None, input_scaling=None) -> Splits:
    """The images under `path` as `Splits`; see the module docstring for the layouts."""
    del data_dir  # refused by the registry
    name = f"folder:{path}"
    root = os.path.expanduser(path)
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    given = [d for d in (train_dir, test_dir) if os.path.isdir(d)]
    if len(given) == 1:
        present, absent = ("train", "test") if given[0] == train_dir else ("test", "train")
        raise DatasetError(f"{name} has a {present}/ sub-folder but no {absent}/; expected "
                           f"{_LAYOUT}")
    directories = [train_dir, test_dir] if given else [root]
    per_directory = [_class_images(d, name) for d in directories]
    if given and list(per_directory[0]) != list(per_directory[1]):
        raise DatasetError(f"{name}: train/ has classes {list(per_directory[0])} but test/ has "
                           f"{list(per_directory[1])}; both need the same class sub-folders")
    paths = [p for images in per_directory for files in images.values() for p in files]
    sizes, modes = _sizes_and_modes(paths, name)
    if image_size:
        size = (image_size, image_size)
    elif len(sizes) > 1:
        (first, a), (second, b) = list(sizes.items())[:2]
        raise DatasetError(f"{name}: images differ in size ({a} is {first[0]}x{first[1]}, {b} "
                           f"is {second[0]}x{second[1]}); pass image_size=N to resize all "
                           f"to N x N")
    else:
        width, height = next(iter(sizes))
        size = (height, width)
    color_mode = "grayscale" if modes <= set(_GREY_MODES) else "rgb"
    arrays = [_read(d, size, color_mode, name,
                    [p for files in images.values() for p in files])
              for d, images in zip(directories, per_directory)]
    if given:
        (x_pool, y_pool), (x_test, y_test) = arrays
    else:
        (x_all, y_all), = arrays
        n_test = held_out_count(TEST_FRACTION, len(x_all), name, what="test fraction",
                                held="test")
        test_idx, pool_idx = carve(y_all, n_test, split_seed)
        x_pool, y_pool, x_test, y_test = (x_all[pool_idx], y_all[pool_idx], x_all[test_idx],
                                          y_all[test_idx])
    # image_dataset_from_directory yields float32 in [0, 255] whatever the file type.
    return splits_from_arrays(name, x_pool, y_pool, x_test, y_test, split_seed=split_seed,
                              val_size=val_size, scale=1 / 255.0, input_scaling=input_scaling)
