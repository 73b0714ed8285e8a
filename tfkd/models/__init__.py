"""Model builders by name. Every model is a functional keras.Model that outputs logits, with
its penultimate layer named "features" and its last "logits".

Importing this package imports the modules `tfkd.choices.MODELS` names, whose
`register_model` decorators register "cnn", "mlp", the CIFAR ResNets and WRNs, "patch_net"
and "random_features"; further builders join `MODELS` through `register_model`.
`build_joint` wraps any of them into k networks averaged and trained as one.
"""

import importlib

from tfkd import choices
from tfkd.models.joint import build_joint, joint_members  # noqa: F401  (public API)
from tfkd.models.registry import MODELS, build_model, input_problem, models_for, register_model

__all__ = ["MODELS", "build_model", "input_problem", "models_for", "register_model"]


def _register_builtin():
    """Imports the builders' modules; each must register exactly the names the table (the
    --model choices, read without Keras) gives it."""
    modules = dict.fromkeys(choices.MODELS.values())
    for module in modules:
        importlib.import_module(module)
    registered = {name: builder.__module__ for name, builder in MODELS.items()
                  if builder.__module__ in modules}
    expected = {name: module for name, module in choices.MODELS.items()}
    if registered != expected:
        raise RuntimeError(f"tfkd.choices.MODELS {expected} disagrees with the builders "
                           f"registered {registered}")


_register_builtin()
