"""Datasets as fixed train / validation / test `Splits`, and their tf.data pipeline.

Importing this package registers the embedded datasets ("digits", "mnist1d") and the
generated "multiview"; further loaders join `DATASETS` through `register_dataset`. Any
other name is looked up in TensorFlow Datasets (`tfkd.data.tfds_loader`).
"""

from tfkd.data import embedded as _embedded  # noqa: F401  (registers its loaders)
from tfkd.data.multiview import load_multiview
from tfkd.data.pipeline import make_tf_dataset
from tfkd.data.registry import (DATASETS, DatasetError, Splits, dataset_names, load_dataset,
                                register_dataset)

# The generated multi-view data of Allen-Zhu & Li with its default parameters (seeded by
# the split seed); tools/multiview_repro.py varies the parameters.
register_dataset("multiview")(load_multiview)

__all__ = ["DATASETS", "DatasetError", "Splits", "dataset_names", "load_dataset",
           "make_tf_dataset", "register_dataset"]
