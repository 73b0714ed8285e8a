"""Datasets as fixed train / validation / test `Splits`, and their tf.data pipeline.

`load_dataset(name)` takes a name the registry (`tfkd.data.registry`) knows:

- a named dataset: the embedded "digits" and "mnist1d", the generated "multiview";
- `keras:NAME`: a `keras.datasets` set (`tfkd.data.keras_source`);
- `folder:PATH`: image files, one sub-folder per class (`tfkd.data.folder`);
- `npz:PATH`: a NumPy archive with x_train, y_train, x_test, y_test (`tfkd.data.npz`);
- any other name, or `tfds:NAME`: a TensorFlow Datasets set (`tfkd.data.tfds_loader`).

Importing this package imports those modules, which register themselves; docs/data.md
describes each source. `check_dataset_name` validates a name without loading data.
"""

# Each import registers its loaders; the order is the order of the accepted names in
# messages (isort: skip_file).
from tfkd.data import embedded as _embedded  # noqa: F401  ("digits", "mnist1d")
from tfkd.data import keras_source as _keras_source  # noqa: F401  ("keras:")
from tfkd.data import folder as _folder  # noqa: F401  ("folder:")
from tfkd.data import npz as _npz  # noqa: F401  ("npz:")
from tfkd.data import tfds_loader as _tfds_loader  # noqa: F401  ("tfds:", the fallback)
from tfkd.data.multiview import load_multiview
from tfkd.data.registry import (DATASETS, SOURCES, DatasetError, Splits, accepted_forms,
                                check_dataset_name, dataset_names, display_name, load_dataset,
                                register_dataset, register_source)

# The generated multi-view data of Allen-Zhu & Li with its default parameters (seeded by
# the split seed); tools/multiview_repro.py varies the parameters.
register_dataset("multiview")(load_multiview)

__all__ = ["DATASETS", "SOURCES", "DatasetError", "Splits", "accepted_forms", "augmented_views",
           "check_dataset_name", "dataset_names", "display_name", "load_dataset",
           "make_tf_dataset",
           "register_dataset", "register_source"]


def __getattr__(name):
    # The tf.data pipeline loads on first use: the loaders, and `check_dataset_name`, which
    # validates --dataset, do without TensorFlow (see tfkd.choices).
    if name in ("augmented_views", "make_tf_dataset"):
        from tfkd.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'tfkd.data' has no attribute {name!r}")
