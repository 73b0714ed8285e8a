"""Every data file tfkd reads is validated, not trusted (issue 28): bad values in any split,
labels beyond int32, one class, damaged or wrong-kind .npz archives and image files,
decompression bombs and archives declaring more memory than the machine has are each
refused with one line naming the file, the array and the first bad position."""

import os
import re
import struct
import zipfile
import zlib

import numpy as np
import pytest

from tfkd.data import DatasetError, arrays, files, load_dataset
from tfkd.data.arrays import splits_from_arrays

from helpers.command import tfkd


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


def _arrays(n_train=40, n_test=20, shape=(6, 6), classes=4, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.normal(size=(n_train,) + shape).astype(dtype),
                y_train=np.arange(n_train) % classes,
                x_test=rng.normal(size=(n_test,) + shape).astype(dtype),
                y_test=np.arange(n_test) % classes)


def _load(source, tmp_path, data, **kwargs):
    """The arrays through `source`: an npz: file, or splits_from_arrays, which every other
    source (keras:, folder:, TFDS) passes its arrays through."""
    if source == "npz":
        path = tmp_path / "set.npz"
        np.savez(path, **data)
        return load_dataset(f"npz:{path}", **kwargs), f"npz:{path}"
    return splits_from_arrays("arrays", data["x_train"], data["y_train"], data["x_test"],
                              data["y_test"], split_seed=0, val_size=None, **kwargs), "arrays"


# --- non-finite inputs --------------------------------------------------------------------

BAD_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "beyond_float32": 1e39}
CASES = [(source, split, kind, dtype, shape)
         for source in ("npz", "arrays")
         for split in ("x_train", "x_test")
         for kind in BAD_VALUES
         for dtype in (np.float16, np.float32, np.float64)
         for shape in ((6, 6), (5,), (4, 4, 3))
         if not (kind == "beyond_float32" and dtype != np.float64)]


@pytest.mark.parametrize("chunk", [None, 7], ids=["chunk_default", "chunk_7"])
@pytest.mark.parametrize("source, split, kind, dtype, shape", CASES)
def test_a_bad_input_value_is_named_at_its_first_position(tmp_path, monkeypatch, chunk, source,
                                                          split, kind, dtype, shape):
    if chunk:  # chunk boundaries mid-array: the position is still the array's own
        monkeypatch.setattr(arrays, "_FINITE_CHUNK", chunk)
    data = _arrays(shape=shape, dtype=dtype)
    seed = zlib.crc32(f"{source}{split}{kind}{dtype}{shape}{chunk}".encode())
    rng = np.random.default_rng(seed)
    x = data[split]
    planted = rng.choice(x.size, size=rng.integers(1, 4), replace=False)
    x.flat[planted] = BAD_VALUES[kind]
    first = tuple(int(i) for i in np.unravel_index(planted.min(), x.shape))
    with pytest.raises(DatasetError) as error:
        _load(source, tmp_path, data)
    message = _one_line(error)
    position = f"{split}[{', '.join(map(str, first))}]"
    assert position + " is " in message, (message, position)
    assert message.startswith(f"npz:{tmp_path / 'set.npz'}:" if source == "npz" else "arrays:")
    assert ("beyond float32's range" if kind == "beyond_float32" else
            f"is {kind}") in message


def test_finite_float_inputs_load_and_integer_extremes_are_finite(tmp_path):
    data = _arrays(dtype=np.float64)
    data["x_train"][0, 0, 0] = 3.0e38  # within float32's range
    splits, _ = _load("arrays", tmp_path, data)
    assert np.isfinite(splits.x_train).all() and np.isfinite(splits.x_test).all()
    big = _arrays()
    big["x_train"] = np.full((40, 6, 6), np.iinfo(np.int64).max, dtype=np.int64)
    big["x_train"][::2] = 0
    assert np.isfinite(_load("npz", tmp_path, big)[0].x_train).all()


@pytest.mark.parametrize("dtype", [np.complex64, "U3", "datetime64[s]"])
def test_inputs_that_are_not_real_numbers_are_refused(tmp_path, dtype):
    data = _arrays()
    data["x_test"] = data["x_test"].astype(dtype)
    with pytest.raises(DatasetError, match=r"x_test must (hold real numbers|be numeric)") as e:
        _load("npz", tmp_path, data)
    _one_line(e)


# --- labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["npz", "arrays"])
@pytest.mark.parametrize("split", ["y_train", "y_test"])
@pytest.mark.parametrize("value", [2**31, 2**40 + 1, 2**40 + 3, 2**63 - 1])
def test_labels_beyond_int32_are_named_not_wrapped(tmp_path, source, split, value):
    data = _arrays()
    rng = np.random.default_rng(value % 1000)
    positions = rng.choice(len(data[split]), size=2, replace=False)
    data[split] = data[split].astype(np.int64)
    data[split][positions] = value
    with pytest.raises(DatasetError) as error:
        _load(source, tmp_path, data)
    message = _one_line(error)
    assert f"{split}[{positions.min()}] is label {value}, beyond the largest class index" in \
        message, message


def test_a_label_near_int32_max_is_refused_without_listing_every_class(tmp_path):
    data = _arrays()
    data["y_train"] = data["y_train"].astype(np.int64)
    data["y_train"][5] = 2**31 - 1
    with pytest.raises(DatasetError, match=r"training labels must be 0..2147483647 with every "
                                           r"class present; missing: 4, 5, 6, 7, 8 \(and "
                                           r"2147483638 more\)") as error:
        _load("npz", tmp_path, data)
    _one_line(error)


@pytest.mark.parametrize("source", ["npz", "arrays", "folder", "folder_train_test"])
def test_one_class_only_is_refused(tmp_path, source):
    from test_sources import _write_images

    if source.startswith("folder"):
        root = tmp_path / "images"
        if source == "folder":
            _write_images(root, 6)
            for name in ("dog", "emu"):
                for path in (root / name).iterdir():
                    path.unlink()
                (root / name).rmdir()
        else:
            for split in ("train", "test"):
                _write_images(root / split, 3)
                for name in ("dog", "emu"):
                    for path in (root / split / name).iterdir():
                        path.unlink()
                    (root / split / name).rmdir()
        call = lambda: load_dataset(f"folder:{root}")  # noqa: E731
    else:
        data = _arrays()
        data["y_train"] = np.full(40, 2)
        data["y_test"] = np.full(20, 2)
        call = lambda: _load(source, tmp_path, data)  # noqa: E731
    with pytest.raises(DatasetError, match=r"y_train has one class only \(label \d in all "
                                           r"\d+ examples\); a classifier needs at least "
                                           r"two") as error:
        call()
    _one_line(error)


# --- npz archives: wrong kinds, damage, declared sizes ------------------------------------


def _refused(path, *named):
    with pytest.raises(DatasetError) as error:
        load_dataset(f"npz:{path}")
    message = _one_line(error)
    assert message.startswith(f"npz:{path}"), message
    for text in named:
        assert text in message, (text, message)
    return message


def test_npz_paths_that_are_not_files(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    _refused(tmp_path / "dir.npz", "is a directory")
    os.mkfifo(tmp_path / "fifo.npz")  # opening it would block until a writer came
    _refused(tmp_path / "fifo.npz", "is a FIFO (named pipe), not a regular file")
    os.symlink(tmp_path / "loop_b.npz", tmp_path / "loop_a.npz")
    os.symlink(tmp_path / "loop_a.npz", tmp_path / "loop_b.npz")
    _refused(tmp_path / "loop_a.npz", "is a symbolic link loop")
    os.symlink(tmp_path / "gone.npz", tmp_path / "dangling.npz")
    _refused(tmp_path / "dangling.npz", "is a broken symbolic link")


def _good_archive(path, compressed=False):
    (np.savez_compressed if compressed else np.savez)(path, **_arrays(dtype=np.uint8))
    return path.read_bytes()


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_a_truncated_archive_is_refused(tmp_path, fraction):
    data = _good_archive(tmp_path / "good.npz")
    (tmp_path / "cut.npz").write_bytes(data[:int(len(data) * fraction)])
    _refused(tmp_path / "cut.npz", "is not a readable .npz archive")


@pytest.mark.parametrize("seed", range(4))
def test_garbled_member_data_names_the_array(tmp_path, seed):
    """Bytes changed inside a compressed member's data: the central directory still reads,
    the member does not (zlib's or zipfile's CRC error, or a short array)."""
    path = tmp_path / "garbled.npz"
    _good_archive(path, compressed=True)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("x_train.npy")
    data = np.frombuffer(path.read_bytes(), np.uint8).copy()
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    rng = np.random.default_rng(seed)
    where = start + 20 + rng.choice(info.compress_size - 40, size=8, replace=False)
    data[where] ^= 0x5A
    path.write_bytes(data.tobytes())
    _refused(path, "x_train")


def _archive_with(path, **members):
    """A zip whose members are given raw (name -> bytes), as numpy.savez lays them out."""
    good = _arrays(dtype=np.uint8)
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            if name in members:
                archive.writestr(f"{name}.npy", members[name])
            else:
                with archive.open(f"{name}.npy", "w") as member:
                    np.lib.format.write_array(member, good[name])
    return path


def _npy(shape, dtype="<f4", body=b""):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + body


def test_a_member_that_is_not_npy_is_named(tmp_path):
    _refused(_archive_with(tmp_path / "text.npz", y_test=b"0,1,2,3\n" * 5),
             "y_test (y_test.npy) is not a readable .npy array")


def test_an_object_array_is_refused_before_it_is_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, **dict(_arrays(), x_test=np.array([{}] * 20)))
    _refused(path, "x_test holds Python objects", "unpickle")


@pytest.mark.parametrize("shape", [(2**40, 1024), (10**9, 10**9, 3), (2**62, 2**62)])
def test_a_header_declaring_more_than_memory_is_refused_before_reading(tmp_path, shape):
    path = _archive_with(tmp_path / "huge.npz", x_train=_npy(shape, body=b"\0" * 64))
    message = _refused(path, f"x_train declares shape {shape} of float32",
                       "of memory available")
    assert files.size_text(files.available_memory()) in message


def test_the_memory_check_counts_the_arrays_together(tmp_path, monkeypatch):
    path = tmp_path / "set.npz"
    np.savez(path, **_arrays())  # x_train 40 * 36 * 4 = 5760 bytes, y_train 320, x_test 2880
    monkeypatch.setattr("tfkd.data.npz.available_memory", lambda: 8000)
    _refused(path, "x_test declares shape (20, 6, 6) of float32 (2.8 KB, 8.8 KB with the "
                   "arrays before it), more than the 7.8 KB of memory available")


def test_a_header_declaring_more_than_the_member_holds_is_refused(tmp_path):
    path = _archive_with(tmp_path / "short.npz",
                         x_train=_npy((40, 6, 6), "|u1", body=b"\1" * 100))
    _refused(path, "x_train declares shape (40, 6, 6) of uint8 (1440 bytes) but holds 100 "
                   "bytes of data")


def test_a_damaged_npz_through_the_command_is_one_line_exit_2(tmp_path):
    path = _archive_with(tmp_path / "huge.npz", x_train=_npy((2**40, 1024)))
    result = tfkd(f"--workdir={tmp_path / 'run'}", "--smoke", "--mode=train", "--model=mlp",
                  f"--dataset=npz:{path}")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfkd: error:")]
    assert len(errors) == 1 and "x_train declares shape (1099511627776, 1024)" in errors[0], \
        result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# --- image folders ------------------------------------------------------------------------


def _png(width, height, data=b""):
    """A PNG whose header declares width x height (8-bit grey) around `data` as pixels."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data))
            + chunk(b"IEND", b""))


def _folder_with(tmp_path, bad_name, write):
    from test_sources import _write_images

    _write_images(tmp_path / "images", 3)
    bad = tmp_path / "images" / "dog" / bad_name
    if bad.exists():
        bad.unlink()
    write(bad)
    with pytest.raises(DatasetError) as error:
        load_dataset(f"folder:{tmp_path / 'images'}")
    message = _one_line(error)
    assert message.startswith(f"folder:{tmp_path / 'images'}: {bad} "), message
    return message


@pytest.mark.parametrize("width, height", [(10000, 10000), (20000, 20000), (200000, 1000)])
def test_decompression_bombs_are_refused_with_their_pixel_count(tmp_path, width, height):
    """Beyond Pillow's MAX_IMAGE_PIXELS (a warning) or twice it (an error): both refused,
    read from the header alone (the file is a few hundred bytes)."""
    message = _folder_with(tmp_path, "001.png", lambda p: p.write_bytes(_png(width, height)))
    assert "possible decompression bomb" in message and f"{width * height} pixels" in message


def test_a_pillow_limit_set_lower_is_honoured(tmp_path, monkeypatch):
    from PIL import Image

    # The others are 8x8 = 64 pixels; 16x16 = 256 is in the warning band of 200.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    message = _folder_with(tmp_path, "001.png",
                           lambda p: p.write_bytes(_png(16, 16, bytes(16 * 17))))
    assert "256 pixels" in message


def _garbled_png(path):
    from PIL import Image

    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start:start + 12] = b"\xff" * 12  # the zlib stream, not the header Pillow reads
    path.write_bytes(bytes(data))


def _tiff_named_png(path):
    from PIL import Image

    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(path, format="TIFF")


@pytest.mark.parametrize("write", [_garbled_png, _tiff_named_png])
def test_an_image_pillow_opens_but_tensorflow_cannot_decode_is_named(tmp_path, write):
    message = _folder_with(tmp_path, "002.png", write)
    assert "cannot be decoded by TensorFlow" in message


def test_image_paths_that_are_not_files(tmp_path):
    assert "is a FIFO (named pipe), not a regular file" in _folder_with(
        tmp_path / "fifo", "003.png", os.mkfifo)
    assert "is a symbolic link loop" in _folder_with(
        tmp_path / "loop", "003.png", lambda p: os.symlink(p, p))


@pytest.mark.parametrize("kind, named", [("file", "is a file, not a directory"),
                                         ("fifo", "is a file, not a directory"),
                                         ("loop", "is a symbolic link loop")])
def test_folder_roots_that_are_not_directories(tmp_path, kind, named):
    root = tmp_path / "root"
    if kind == "file":
        root.write_bytes(b"")
    elif kind == "fifo":
        os.mkfifo(root)
    else:
        os.symlink(root, root)
    with pytest.raises(DatasetError, match=f"folder:{root} {named}") as error:
        load_dataset(f"folder:{root}")
    _one_line(error)


# --- teachers' outputs, checked on the first batch ----------------------------------------


def _teacher(seed, nan_at=None):
    import keras

    from test_user_code import sequential_teacher

    model = sequential_teacher(seed)
    if nan_at is not None:  # one weight of one layer, as a damaged file would have it
        weights = model.get_weights()
        layer = nan_at % len(weights)
        weights[layer].flat[nan_at % weights[layer].size] = np.nan
        model.set_weights(weights)
    assert isinstance(model, keras.Model)
    return model


@pytest.mark.parametrize("bad", [0, 1, 2])
def test_a_teacher_with_nan_weights_is_named_before_training(digits, bad):
    import keras

    import tfkd
    from test_user_code import batches, functional_student

    x, y = digits
    teachers = [_teacher(i, nan_at=7 * i + 3 if i == bad else None) for i in range(3)]
    distiller = tfkd.Distiller(student=functional_student(0), teachers=teachers, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(tfkd.distiller.TeacherOutputError,
                       match=rf"teacher {bad} \(.*\) output nan .*its weights hold non-finite"
                       ) as error:
        distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)
    assert error.value.teacher == bad
    # The same damage in precomputed logits.
    cached = np.asarray(teachers[bad](x[:128]))
    student = tfkd.Distiller(student=functional_student(0), alpha=0.5)
    student.compile(optimizer="adam")
    with pytest.raises(tfkd.distiller.TeacherOutputError,
                       match="the precomputed teacher_logits output nan"):
        student.fit(tfkd.with_teacher_logits(x[:128], cached), y[:128], verbose=0)


@pytest.mark.parametrize("temperature", [1e20, 1e30, 1e38, 1e-40])
@pytest.mark.parametrize("loss", ["kl", "probability_mse"])
def test_a_temperature_that_overflows_the_soft_targets_is_named(digits, temperature, loss):
    import keras

    import tfkd
    from test_user_code import batches, functional_student

    x, y = digits
    distiller = tfkd.Distiller(student=functional_student(0), teachers=[_teacher(1)],
                               alpha=0.5, temperature=temperature, distillation_loss=loss)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    logits = distiller.teachers(x[:8]).numpy()
    value = float(distiller.distillation_loss.loss(logits, distiller.student(x[:8])))
    if np.isfinite(value):  # this loss stays finite at this temperature: it trains
        distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)
        return
    with pytest.raises(tfkd.distiller.TeacherOutputError,
                       match=re.escape(f"temperature={temperature:g} makes the "
                                       "distillation loss")):
        distiller.fit(batches(x[:128], y[:128]), epochs=1, verbose=0)


def test_the_kl_temperatures_of_the_issue_are_refused():
    """The loss values the test above branches on: KL is non-finite at 1e20 and 1e30."""
    from tfkd import losses

    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(2, 8, 10)).astype(np.float32)
    for temperature in (1e20, 1e30):
        assert not np.isfinite(float(losses.SoftTargetKL(temperature=temperature)(t, s)))
    assert np.isfinite(float(losses.SoftTargetKL(temperature=4.0)(t, s)))


@pytest.mark.parametrize("cache", ["--teacher_cache", "--noteacher_cache"])
def test_a_damaged_teacher_file_is_named_by_the_command(tmp_path, cache):
    import keras

    teachers = tmp_path / "teachers"
    from helpers.command import ok

    ok(tfkd("--smoke", "--mode=train", "--model=mlp", "--num_models=2",
            f"--workdir={teachers}"))
    damaged = teachers / "models" / "member_1.keras"
    model = keras.saving.load_model(damaged)
    weights = model.get_weights()
    # The output layer's bias: every path of the forward pass sees it. (A NaN in the first
    # kernel's row of an always-zero pixel was multiplied away by the batched predict.)
    weights[-1][3] = np.nan
    model.set_weights(weights)
    model.save(damaged)
    result = tfkd("--smoke", "--mode=distill", "--model=mlp", "--num_models=2", cache,
                  f"--teacher_dir={teachers}", f"--workdir={tmp_path / 'student'}")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfkd: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert f"teacher file {damaged}" in errors[0] and "non-finite" in errors[0], errors[0]
    assert "learning rate" not in errors[0]
    assert "Traceback" not in result.stderr
