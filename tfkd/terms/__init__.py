"""Distillation terms: each distillation method is one module of this package, and one class.

The registry is the package itself: a module `tfkd/terms/<name>.py` registers the class of
method `<name>` (`@register("<name>")` from `tfkd.terms.base`). The method setting's choices,
`tfkd --help`, docs/cli.md and the model identity all read `NAMES`, listed from the package's
files without importing them (so without TensorFlow or Keras: `tfkd --help` stays fast); a
method's class is imported on first use by `get(name)`. Adding a method is adding a module
(docs/extending.md).
"""

import importlib
import os
import pkgutil

_MODULES = tuple(sorted(info.name for info in pkgutil.iter_modules([os.path.dirname(__file__)])
                        if not info.name.startswith("_")))
# Terms that are not a choice of --distillation_loss: the base class, and the FitNets hint,
# which --hint_layer adds to the chosen method.
_ADDED = ("base", "hint")
# The methods --distillation_loss chooses from.
NAMES = tuple(name for name in _MODULES if name not in _ADDED)


def get(name):
    """The Term class registered as `name` (a ValueError naming the choices otherwise)."""
    if name not in _MODULES or name == "base":
        raise ValueError(f"unknown distillation method {name!r}; choose one of: "
                         f"{', '.join(NAMES)}")
    importlib.import_module(f"{__name__}.{name}")
    from tfkd.terms.base import REGISTRY

    if name not in REGISTRY:
        raise RuntimeError(f"tfkd/terms/{name}.py registers no term named {name!r} "
                           f"(it needs @register({name!r}) on its class)")
    return REGISTRY[name]


def import_all():
    """Imports every term module (registering each class with Keras, for loading saved
    Distillers)."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")


def __getattr__(name):
    # `from tfkd.terms import DKD`: the classes, by class name, imported on first use.
    import_all()
    from tfkd.terms import base

    found = {cls.__name__: cls for cls in base.REGISTRY.values()}
    found.update(Term=base.Term, LossTerm=base.LossTerm)
    if name in found:
        return found[name]
    raise AttributeError(f"module 'tfkd.terms' has no attribute {name!r}")


def from_settings(name, config):
    """Method `name` made from the run's settings (`Term.settings` maps them to its
    arguments)."""
    cls = get(name)
    return cls(**{argument: getattr(config, setting)
                  for setting, argument in cls.settings.items()})


def reads(config):
    """What the run's distillation terms read besides the teachers' averaged logits:
    "labels", "members" (each teacher's own logits), "layers" (intermediate features)."""
    found = set().union(*(get(name).reads for name in config.run_methods()))
    if config.hint_layer:
        found |= get("hint").reads
    return frozenset(found)
