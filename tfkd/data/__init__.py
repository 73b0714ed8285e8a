"""Datasets as fixed train / validation / test `Splits`, and their tf.data pipeline.

Importing this package registers the embedded datasets ("digits", "mnist1d"); further
loaders join `DATASETS` through `register_dataset`. Any other name is looked up in
TensorFlow Datasets (`tfkd.data.tfds_loader`).
"""

from tfkd.data import embedded as _embedded  # noqa: F401  (registers its loaders)
from tfkd.data.pipeline import make_tf_dataset
from tfkd.data.registry import (DATASETS, DatasetError, Splits, dataset_names, load_dataset,
                                register_dataset)

__all__ = ["DATASETS", "DatasetError", "Splits", "dataset_names", "load_dataset",
           "make_tf_dataset", "register_dataset"]
