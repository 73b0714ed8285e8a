"""tfkd: ensembles, knowledge distillation and self-distillation for Keras 3 / TensorFlow."""

import importlib

__version__ = "0.1.0"

# Loaded on first use, so that `tfkd --help` and the CLI's bad-flag errors answer
# without waiting for TensorFlow to import.
_EXPORTS = {
    "Distiller": "tfkd.distiller",
    "Hint": "tfkd.distiller",
    "with_teacher_logits": "tfkd.distiller",
    "Ensemble": "tfkd.ensemble",
    "SoftTargetKL": "tfkd.losses",
    "ProbabilityMSE": "tfkd.losses",
    "HintLoss": "tfkd.losses",
    "build_model": "tfkd.models",
    "load_dataset": "tfkd.data",
    "make_tf_dataset": "tfkd.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfkd' has no attribute {name!r}")
