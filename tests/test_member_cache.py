"""Each member's own logits in the teacher-output caches (`members=True`), for distillation
terms that read every member: the same logits their own predict gives, in caches of their
own names, sized and capped by member, fed to the student's batches as (batch, M, C)."""

import dataclasses
import os

import numpy as np
import pytest
from helpers.teachers import cache_setup, counting, epoch_views

from tfkd import cache, ensemble, runtime
from tfkd.data import make_tf_dataset
from tfkd.modes import fit, store
from tfkd.workdir import layout_kind

F16 = dict(rtol=2e-3, atol=2e-3)  # float16 rounding of logits of a few units


@pytest.fixture
def clean(tmp_path):
    """Two BatchNorm CNN members (their BatchNorm folds for inference), no augmentation."""
    return cache_setup(tmp_path, members=2, model="cnn", augment="none")


@pytest.fixture
def views(tmp_path):
    """Two MLP members, crop_flip views over 3 epochs."""
    return cache_setup(tmp_path, members=2)


def own_predict(teachers, x):
    """Each member's logits on `x`, from the member itself: (n, members, classes)."""
    return np.stack([np.asarray(m(x, training=False)) for m in teachers.model.members], axis=1)


def test_each_members_own_logits_whose_mean_is_the_ensembles(clean, monkeypatch):
    config, splits, teachers, workdir = clean
    folded = []
    for_inference = ensemble.for_inference

    def folding(model, sample):
        model, folds = for_inference(model, sample)
        folded.append(len(folds))
        return model, folds

    monkeypatch.setattr(ensemble, "for_inference", folding)
    train, val = store.teacher_logits(config, workdir, splits, teachers, members=True)
    assert folded == [2, 2]  # train and val: both members' BatchNorm folded
    assert isinstance(train, np.memmap) and train.dtype == np.float16
    assert train.shape == (200, 2, 10) and val.shape == (len(splits.x_val), 2, 10)
    np.testing.assert_allclose(train, own_predict(teachers, splits.x_train), **F16)
    np.testing.assert_allclose(val, own_predict(teachers, splits.x_val), **F16)
    assert not np.allclose(train[:, 0], train[:, 1], atol=0.1)  # two different members
    ensemble_train, _ = store.teacher_logits(config, workdir, splits, teachers)
    assert ensemble_train.shape == (200, 10)
    np.testing.assert_allclose(np.asarray(train, np.float32).mean(axis=1), ensemble_train,
                               **F16)


@pytest.mark.parametrize("first", [True, False], ids=["members_first", "ensemble_first"])
def test_a_members_cache_and_an_ensemble_cache_are_never_read_for_each_other(clean,
                                                                            monkeypatch, first):
    config, splits, teachers, workdir = clean
    calls = counting(monkeypatch)
    shapes = {True: (200, 2, 10), False: (200, 10)}
    for members in (first, not first):
        train, _ = store.teacher_logits(config, workdir, splits, teachers, members=members)
        assert train.shape == shapes[members]
    assert len(calls) == 4  # train and val of each: neither read the other's files
    for members in (True, False):
        train, _ = store.teacher_logits(config, workdir, splits, teachers, members=members)
        assert train.shape == shapes[members]
    assert len(calls) == 4  # each read back from its own files
    files = sorted(os.listdir(workdir.path("cache")))
    assert len(files) == 4 and len({f.split(".")[0] for f in files}) == 2


def test_a_damaged_members_cache_is_computed_again(clean, monkeypatch, caplog):
    config, splits, teachers, workdir = clean
    calls = counting(monkeypatch)
    train, _ = store.teacher_logits(config, workdir, splits, teachers, members=True)
    path, first = train.filename, np.array(train)
    np.save(path, np.full((200, 2, 10), 7.0, np.float16))  # finite, under a valid header
    with caplog.at_level("WARNING"):
        again, _ = store.teacher_logits(config, workdir, splits, teachers, members=True)
    assert "is damaged" in caplog.text and len(calls) == 3  # the train split only
    np.testing.assert_array_equal(again, first)


def test_one_teacher_model_is_one_member(tmp_path):
    config, splits, teachers, workdir = cache_setup(tmp_path, augment="none")
    train, _ = store.teacher_logits(config, workdir, splits, teachers, members=True)
    alone, _ = store.teacher_logits(config, workdir, splits, teachers)
    assert train.shape == (200, 1, 10)
    np.testing.assert_allclose(train[:, 0], alone, **F16)


def test_a_cluster_computes_each_members_logits_in_memory(clean, monkeypatch):
    config, splits, teachers, workdir = clean
    stored, _ = store.teacher_logits(config, workdir, splits, teachers, members=True)
    monkeypatch.setattr(runtime, "cluster", object())
    train, val = store.teacher_logits(config, workdir, splits, teachers, members=True)
    assert not isinstance(train, np.memmap) and train.dtype == np.float16
    assert val.shape == (len(splits.x_val), 2, 10)
    np.testing.assert_allclose(train, stored, **F16)


def test_each_members_logits_on_every_epochs_views(views, monkeypatch, caplog):
    config, splits, teachers, workdir = views
    calls = counting(monkeypatch)
    with caplog.at_level("INFO"):
        logits = store.view_logits(config, workdir, splits, teachers, seed=11, members=True)
    assert "3 epochs x 200 views x 2 members x 10 classes" in caplog.text
    assert len(logits) == 3 and len(calls) == 1 and logits[1].shape == (200, 2, 10)
    np.testing.assert_allclose(logits[1], own_predict(teachers, epoch_views(
        splits.x_train, 1, seed=3)), **F16)
    ensemble_views = store.view_logits(config, workdir, splits, teachers, seed=11)
    assert len(calls) == 2 and ensemble_views[1].shape == (200, 10)
    np.testing.assert_allclose(np.asarray(logits[1], np.float32).mean(axis=1),
                               ensemble_views[1], **F16)
    store.view_logits(config, workdir, splits, teachers, seed=11, members=True)
    assert len(calls) == 2  # read back
    # Entries the pre-flight check of a workdir knows (`workdir.LAYOUT`).
    cache_dir = workdir.path("cache")
    entries = [os.path.relpath(os.path.join(top, name), workdir.root).replace(os.sep, "/")
               for top, folders, files in os.walk(cache_dir) for name in folders + files]
    assert len(entries) == 8 and all(layout_kind(e) for e in entries)  # 2 folders, 6 epochs


def test_the_size_cap_counts_every_member(views, monkeypatch, caplog):
    config, splits, teachers, workdir = views
    # The ensemble's views take 3 x 200 x 10 x 2 = 12,000 bytes, the members' twice that.
    config = dataclasses.replace(config, view_cache_max_gb=18_000 / 2**30)
    calls = counting(monkeypatch)
    with caplog.at_level("INFO"):
        plan = fit.plan_teachers(config, workdir, splits, teachers, seed=11, members=True)
    assert plan.online is teachers.model and plan.view_logits is None and not calls
    assert "3 epochs x 200 views x 2 members x 10 numbers would take" in caplog.text
    assert "teachers run online" in caplog.text
    plan = fit.plan_teachers(config, workdir, splits, teachers, seed=11)
    assert plan.online is None and plan.view_logits[0].shape == (200, 10)


def test_top_k_packs_each_member_on_its_own(views):
    config, splits, teachers, workdir = views
    full = store.view_logits(config, workdir, splits, teachers, seed=11, members=True)
    top = store.view_logits(dataclasses.replace(config, view_cache_top_k=3), workdir, splits,
                            teachers, seed=11, members=True)
    assert top[0].packed.shape == (200, 2, 7) and top[0].shape == (200, 2, 10)
    rows, exact = top[2][np.arange(200)], np.asarray(full[2], np.float32)
    largest = np.argsort(-exact, axis=-1)[..., :3]
    np.testing.assert_allclose(np.take_along_axis(rows, largest, axis=-1),
                               np.take_along_axis(exact, largest, axis=-1), **F16)
    ds = make_tf_dataset(splits.x_train, splits.y_train, batch_size=64, shuffle=True, seed=11,
                         augment="crop_flip", augment_seed=3, view_logits=top, epochs=3)
    batches = [b[0]["teacher_logits"].numpy() for b in ds]
    assert [b.shape for b in batches[:4]] == [(64, 2, 10)] * 3 + [(8, 2, 10)]


def test_batches_carry_each_members_logits(clean):
    config, splits, teachers, workdir = clean
    train, _ = store.teacher_logits(config, workdir, splits, teachers, members=True)
    ds = make_tf_dataset(splits.x_train, splits.y_train, batch_size=64, teacher_logits=train)
    batches = [inputs["teacher_logits"].numpy() for inputs, _ in ds]
    assert [b.shape for b in batches] == [(64, 2, 10)] * 3 + [(8, 2, 10)]
    np.testing.assert_array_equal(np.concatenate(batches), train)  # example order


def test_augmented_batches_carry_each_members_logits_of_their_views(views):
    config, splits, teachers, workdir = views
    logits = store.view_logits(config, workdir, splits, teachers, seed=11, members=True)
    ds = make_tf_dataset(splits.x_train, splits.y_train, batch_size=64, shuffle=True, seed=5,
                         augment="crop_flip", augment_seed=3, view_logits=logits, epochs=3,
                         initial_epoch=1)
    for inputs, _ in ds:  # each view with its own teachers' logits
        np.testing.assert_allclose(inputs["teacher_logits"], own_predict(
            teachers, inputs["inputs"].numpy()), **F16)


def test_fit_model_asks_for_members_as_the_run_reads_them(views, monkeypatch):
    config, splits, teachers, workdir = views
    asked = []

    def plan(*args, members, **kwargs):
        asked.append(members)
        raise KeyboardInterrupt  # the plan is all this test needs

    monkeypatch.setattr(fit, "plan_teachers", plan)
    for reads in (False, True):
        monkeypatch.setattr(fit, "_reads_members", lambda config: reads)
        with pytest.raises(KeyboardInterrupt):
            fit.fit_model(config, workdir, splits, name="distilled", kind="distilled", seed=11,
                          teachers=teachers)
    assert asked == [False, True]
