"""Teachers saved to files for the teacher-output cache tests: quick to build, and named
by their files' contents as a run's are."""

import numpy as np

from tfkd import cache
from tfkd.config import Config
from tfkd.modes import fit, inputs
from tfkd.workdir import Workdir


def cache_setup(tmp_path, members=1, model="mlp", **settings):
    """(config, splits, teachers, workdir): a digits config with crop_flip (or `settings`),
    `members` saved models of `model` and a created workdir. One member teaches as itself,
    several as their Ensemble, as `inputs.ensemble_teachers` makes it from the files."""
    import keras

    import tfkd

    settings = {"augment": "crop_flip", "data_seed": 3, "epochs": 3, "train_size": 200,
                **settings}
    config = Config(dataset="digits", model=model, num_models=members,
                    workdir=str(tmp_path / "run"), **settings)
    splits = inputs.load_splits(config)
    workdir = Workdir(config.workdir).create()
    if members == 1:
        path = tmp_path / "member_0.keras"
        tfkd.build_model(model, splits.input_shape, splits.num_classes, seed=1,
                         model_name="member_0").save(path)
        return config, splits, fit.Teachers(keras.saving.load_model(path), "member_0",
                                            (str(path),)), workdir
    for i in range(members):
        workdir.save_model(tfkd.build_model(model, splits.input_shape, splits.num_classes,
                                            seed=1 + i, model_name=f"member_{i}"),
                           f"member_{i}")
    _, teachers = inputs.ensemble_teachers(config, workdir, splits)
    return config, splits, teachers, workdir


def counting(monkeypatch):
    """A list that gets one item per teacher inference pass (`cache.predict_logits`)."""
    calls = []
    predict = cache.predict_logits

    def count(*args, **kwargs):
        calls.append(1)
        return predict(*args, **kwargs)

    monkeypatch.setattr(cache, "predict_logits", count)
    return calls


def epoch_views(x, epoch, seed=7, augment="crop_flip"):
    """Epoch `epoch`'s augmented views of `x`, in example order, as one array."""
    from tfkd.data import augmented_views

    return np.concatenate(list(augmented_views(x, augment=augment, augment_seed=seed,
                                               epoch=epoch).as_numpy_iterator()))
