"""tfkd: ensembles, knowledge distillation and self-distillation for Keras 3 / TensorFlow."""

import importlib

import wrapt

__version__ = "0.1.0"

# Loaded on first use, so that `tfkd --help` and the CLI's bad-flag errors answer
# without waiting for TensorFlow to import.
_EXPORTS = {
    "Distiller": "tfkd.distiller",
    "Hint": "tfkd.distiller",
    "StudentCheckpoint": "tfkd.distiller",
    "with_teacher_logits": "tfkd.distiller",
    "Ensemble": "tfkd.ensemble",
    "SoftTargetKL": "tfkd.losses",
    "ProbabilityMSE": "tfkd.losses",
    "HintLoss": "tfkd.losses",
    "terms": "tfkd.terms",
    "build_model": "tfkd.models",
    "load_dataset": "tfkd.data",
    "make_tf_dataset": "tfkd.data",
}

__all__ = sorted(_EXPORTS)

# The modules whose classes a saved model can name (Distiller, Ensemble, the losses,
# metrics and learning-rate schedules), registered with keras.saving by importing them.
_SERIALIZABLE = ("tfkd.distiller", "tfkd.ensemble", "tfkd.losses", "tfkd.metrics", "tfkd.optim")


def _register_with_keras(keras_module):
    for module in _SERIALIZABLE:
        importlib.import_module(module)
    importlib.import_module("tfkd.terms").import_all()


# NOTE: `import tfkd` must not import Keras (5 s, and TensorFlow with it), yet
# `import tfkd; keras.saving.load_model("distiller.keras")` must find tfkd's classes,
# whose registration runs when their modules are imported. A post-import hook
# registers them as soon as Keras is imported, or now if it already is. wrapt (a
# dependency of TensorFlow) provides the hook; importing it costs about 0.1 s.
wrapt.register_post_import_hook(_register_with_keras, "keras")


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return module if module.__name__ == f"tfkd.{name}" else getattr(module, name)
    raise AttributeError(f"module 'tfkd' has no attribute {name!r}")
