"""The teachers' outputs on augmented views, cached: exact, built once, resumed, redone.

A view of example i in epoch e depends only on (augmentation seed, e, i), so the teachers'
logits on it can be computed before training and read with the batch that holds it.
"""

import json
import os

import numpy as np
import pytest
from helpers.command import ok, tfkd
from helpers.teachers import cache_setup, counting, epoch_views

from tfkd import cache
from tfkd.data import make_tf_dataset
from tfkd.modes import fit, store

PROJECTION = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)


def fake_teacher(images):
    """Logits that depend on every pixel of the view: a fixed linear map."""
    return np.asarray(images, np.float32).reshape(len(images), -1) @ PROJECTION


@pytest.mark.parametrize("augment", ["crop_flip", "jitter"])
def test_each_batch_carries_the_logits_of_its_own_views(digits, augment):
    x, y = digits[0][:100], digits[1][:100]
    views = [epoch_views(x, e, augment=augment) for e in range(2)]
    logits = [fake_teacher(v).astype(np.float16) for v in views]
    assert not np.allclose(views[0], views[1])  # a new view every epoch
    seen = {}
    for shuffle_seed in (1, 2):
        ds = make_tf_dataset(x, y, batch_size=32, shuffle=True, seed=shuffle_seed,
                             augment=augment, augment_seed=7, view_logits=logits, epochs=2)
        batches = list(ds.as_numpy_iterator())
        assert len(batches) == 8  # 4 per epoch, the last of 4 examples
        for inputs_, _ in batches:
            expected = fake_teacher(inputs_["inputs"]).astype(np.float16).astype(np.float32)
            np.testing.assert_allclose(inputs_["teacher_logits"], expected, rtol=2e-3,
                                       atol=2e-2)
        # The same views whatever the order: compare each epoch's views as a set.
        seen[shuffle_seed] = [np.sort(np.concatenate(
            [b[0]["inputs"].reshape(len(b[0]["inputs"]), -1) for b in batches[4 * e:4 * e + 4]]),
            axis=0) for e in range(2)]
    for e in range(2):
        np.testing.assert_array_equal(seen[1][e], seen[2][e])
        np.testing.assert_array_equal(seen[1][e], np.sort(views[e].reshape(100, -1), axis=0))


@pytest.fixture
def setup(tmp_path):
    """A digits config with crop_flip, a saved teacher, and a workdir."""
    return cache_setup(tmp_path)


def test_built_once_then_read_and_a_damaged_or_missing_epoch_is_redone(setup, monkeypatch,
                                                                       caplog):
    config, splits, teachers, workdir = setup
    calls = counting(monkeypatch)
    first = store.view_logits(config, workdir, splits, teachers, seed=11)
    assert len(first) == 3 and len(calls) == 1  # the 3 epochs in one inference pass
    assert first[0].dtype == np.float16 and first[0].shape == (200, 10)
    # Exact: the teacher's own outputs on epoch e's views.
    direct = teachers.model.predict(epoch_views(splits.x_train, 1, seed=3), verbose=0)
    np.testing.assert_allclose(first[1], direct.astype(np.float16), rtol=1e-3, atol=1e-3)

    again = store.view_logits(config, workdir, splits, teachers, seed=12)  # data_seed fixed
    assert len(calls) == 1
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)

    directory = os.path.dirname(first[0].filename)
    first = [np.array(a) for a in first]  # copies: the damage below overwrites the files
    files = sorted(os.listdir(directory))
    garbage = np.full((200, 10), 7.0, np.float16)  # finite, under a valid header
    np.save(os.path.join(directory, next(f for f in files if f.startswith("epoch_1."))),
            garbage)
    os.remove(os.path.join(directory, next(f for f in files if f.startswith("epoch_2."))))
    with caplog.at_level("INFO"):
        redone = store.view_logits(config, workdir, splits, teachers, seed=11)
    assert len(calls) == 2 and "2 of 3 epochs to compute" in caplog.text  # epochs 1 and 2
    assert "is damaged" in caplog.text
    for a, b in zip(first, redone):
        np.testing.assert_array_equal(a, b)


def test_a_build_stopped_midway_keeps_its_finished_epochs(setup, monkeypatch, caplog):
    config, splits, teachers, workdir = setup
    monkeypatch.setattr(store, "VIEW_CHUNK_BYTES", 200 * 10 * 4)  # one epoch per pass
    predict = cache.predict_logits
    calls = []

    def stopped_in_the_second_pass(teachers, x, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C or a kill arrives mid-build
        return predict(teachers, x, **kwargs)

    monkeypatch.setattr(cache, "predict_logits", stopped_in_the_second_pass)
    with pytest.raises(KeyboardInterrupt):
        store.view_logits(config, workdir, splits, teachers, seed=11)
    with caplog.at_level("INFO"):
        logits = store.view_logits(config, workdir, splits, teachers, seed=11)
    assert "2 of 3 epochs to compute" in caplog.text and len(calls) == 4
    assert [a.shape for a in logits] == [(200, 10)] * 3


def test_each_model_its_own_views_without_a_data_seed(setup, monkeypatch):
    import dataclasses

    config, splits, teachers, workdir = setup
    config = dataclasses.replace(config, data_seed=-1)
    calls = counting(monkeypatch)
    a = store.view_logits(config, workdir, splits, teachers, seed=11)
    b = store.view_logits(config, workdir, splits, teachers, seed=12)
    assert len(calls) == 2 and not np.array_equal(a[0], b[0])


def test_a_cache_over_the_size_cap_leaves_the_teachers_online(setup, monkeypatch, caplog):
    import dataclasses

    config, splits, teachers, workdir = setup
    config = dataclasses.replace(config, view_cache_max_gb=1e-6)  # 1 KB; it takes 12 KB
    calls = counting(monkeypatch)
    with caplog.at_level("INFO"):
        plan = fit.plan_teachers(config, workdir, splits, teachers, seed=11)
    assert plan.online is teachers.model and plan.view_logits is None and not calls
    assert "--view_cache_max_gb=1e-06; teachers run online" in caplog.text


def history(workdir, name):
    return json.load(open(os.path.join(workdir, "metrics", f"{name}.json")))["history"]


def test_a_student_of_cached_views_trains_as_one_of_online_teachers(tmp_path):
    """Exactness, through the command: the same losses to float16 precision; and a tune
    on the same views reuses the cache instead of building it again."""
    common = ["--model=mlp", "--epochs=3", "--train_size=400", "--augment=jitter",
              "--data_seed=0", "--num_models=2", "--allow_chance", "--batch_size=64"]
    cached = tmp_path / "cached"
    ok(tfkd("--mode=train", *common, f"--workdir={cached}"))
    built = ok(tfkd("--mode=distill", *common, f"--workdir={cached}"))
    assert "3 of 3 epochs to compute" in built.stderr
    ok(tfkd("--mode=distill", *common, "--noteacher_cache", f"--teacher_dir={cached}",
            f"--workdir={tmp_path / 'online'}"))
    views = [d for d in os.listdir(cached / "cache") if "-views-" in d]
    assert len(views) == 1 and len(os.listdir(cached / "cache" / views[0])) == 3
    assert not os.listdir(tmp_path / "online" / "cache")
    a, b = history(cached, "distilled"), history(tmp_path / "online", "distilled")
    for key in ("loss", "distillation_loss", "student_loss", "accuracy"):
        np.testing.assert_allclose(a[key], b[key], rtol=2e-3, err_msg=key)
    tuned = ok(tfkd("--mode=tune", *common, "--max_trials=2", f"--workdir={cached}"))
    assert "epochs to compute" not in tuned.stderr


def test_top_k_keeps_the_largest_logits_and_the_mean_of_the_rest():
    logits = np.random.default_rng(1).normal(size=(50, 10)).astype(np.float32)
    decoded = cache.TopK(cache.TopK.pack(logits, 3), 10)[np.arange(50)]
    order = np.argsort(-logits, axis=1)
    for row, top, full in zip(decoded, order, logits):
        np.testing.assert_array_equal(row[top[:3]], full[top[:3]])
        np.testing.assert_allclose(row[top[3:]], full[top[3:]].mean(), atol=1e-5)
    # k = classes - 1: the one other logit is its own mean, so nothing is lost.
    exact = cache.TopK(cache.TopK.pack(logits, 9), 10)[np.arange(50)]
    np.testing.assert_allclose(exact, logits, rtol=1e-5, atol=1e-6)


def test_a_top_k_view_cache_stores_less_and_reads_full_rows(setup):
    import dataclasses

    config, splits, teachers, workdir = setup
    full = store.view_logits(config, workdir, splits, teachers, seed=11)
    top = store.view_logits(dataclasses.replace(config, view_cache_top_k=3), workdir, splits,
                            teachers, seed=11)
    assert top[0].packed.shape == (200, 7) and top[0].shape == (200, 10)
    rows = top[1][np.arange(200)]
    exact = np.asarray(full[1], np.float32)
    largest = np.argsort(-exact, axis=1)[:, :3]
    np.testing.assert_allclose(np.take_along_axis(rows, largest, axis=1),
                               np.take_along_axis(exact, largest, axis=1), rtol=2e-3, atol=2e-3)
    # Through the training pipeline: batches carry decoded full rows.
    ds = make_tf_dataset(splits.x_train, splits.y_train, batch_size=64, shuffle=True, seed=11,
                         augment="crop_flip", augment_seed=3, view_logits=top, epochs=3)
    batch = next(iter(ds))[0]["teacher_logits"].numpy()
    assert batch.shape == (64, 10) and np.isfinite(batch).all()


def test_views_drawn_another_way_are_not_read_from_an_older_cache(setup, monkeypatch):
    from tfkd.data import pipeline

    config, splits, teachers, workdir = setup
    calls = counting(monkeypatch)
    store.view_logits(config, workdir, splits, teachers, seed=11)
    monkeypatch.setattr(pipeline, "VIEWS", pipeline.VIEWS + 1)  # as a new tfkd would
    store.view_logits(config, workdir, splits, teachers, seed=11)
    assert len(calls) == 2
