"""The name -> builder registry behind `build_model`, and per-layer seeded initializers."""

from __future__ import annotations

from typing import Callable, Optional

import keras
import numpy as np

# A builder takes (input_shape, num_classes, *, seeds: LayerSeeds, name: str, **kwargs) and
# returns a functional keras.Model that outputs logits.
Builder = Callable[..., keras.Model]

MODELS: dict[str, Builder] = {}
# What each model reads: {input rank: what the axes are}; None reads any rank.
INPUTS: dict[str, Optional[dict]] = {}
IMAGES = {3: "height, width, channels"}


def register_model(name: str, *, inputs: Optional[dict] = None) -> Callable[[Builder], Builder]:
    """Decorator adding a model builder to `MODELS` under `name`. `inputs` declares the
    input ranks it reads, {rank: "what the axes are"} (None: any), checked by `build_model`
    and, from the data alone, before a run trains anything (`input_problem`)."""

    def decorator(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = builder
        INPUTS[name] = inputs
        return builder

    return decorator


def input_problem(name: str, input_shape) -> Optional[str]:
    """Why model `name` cannot read inputs of `input_shape` (no batch axis), or None."""
    ranks = INPUTS[name]
    if ranks is None or len(input_shape) in ranks:
        return None
    accepted = " or ".join(f"{rank} ({axes})" for rank, axes in sorted(ranks.items()))
    return f"{name} takes inputs of rank {accepted}, got input_shape={tuple(input_shape)!r}"


def models_for(input_shape) -> list:
    """The registered models that read inputs of `input_shape`."""
    return sorted(name for name in MODELS if input_problem(name, input_shape) is None)


class LayerSeeds:
    """Hands each layer its own initializer seed, derived from the model seed and a counter.

    NOTE: every layer needs a distinct initializer object. An integer-seeded Keras
    initializer returns the same values on every call, so sharing one would give equally
    shaped layers identical weights. Integer seeds also make Keras use stateless random ops,
    so seeded builds neither read nor advance any global RNG.
    """

    def __init__(self, seed: Optional[int]):
        self.seed = seed
        self._count = 0

    def next(self) -> Optional[int]:
        if self.seed is None:
            return None
        self._count += 1
        # SeedSequence mixes (seed, index) so that nearby model seeds do not share layer seeds
        # the way `seed + index` would. Keras checks isinstance(seed, int): no NumPy ints.
        state = np.random.SeedSequence([self.seed, self._count]).generate_state(1)
        return int(state[0] >> 1)

    def he(self) -> keras.initializers.Initializer:
        """For kernels followed by ReLU."""
        return keras.initializers.HeUniform(seed=self.next())

    def glorot(self) -> keras.initializers.Initializer:
        """For the linear logits layer."""
        return keras.initializers.GlorotUniform(seed=self.next())


def build_model(
    name: str,
    input_shape,
    num_classes: int,
    *,
    seed: Optional[int] = None,
    model_name: Optional[str] = None,
    **kwargs,
) -> keras.Model:
    """Builds model `name` for inputs of `input_shape` (no batch dimension).

    The model outputs logits of shape (batch, num_classes); its penultimate layer is named
    "features" and its last "logits". The same non-negative `seed` gives bit-identical
    initial weights; None leaves initialisation unseeded. `model_name` names the Keras model
    (default: `name`, numbered when taken). `kwargs` go to the builder.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or (
        num_classes < 2
    ):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    try:
        input_shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_shape must be a sequence of positive integers, got {input_shape!r}"
        ) from None
    if not input_shape or min(input_shape) <= 0:
        raise ValueError(
            f"input_shape must be a non-empty sequence of positive integers without the "
            f"batch dimension, got {input_shape!r}"
        )
    problem = input_problem(name, input_shape)
    if problem:
        raise ValueError(problem)
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    seeds = LayerSeeds(None if seed is None else int(seed))
    # Keras requires distinct names among the sub-models of one model (an ensemble of
    # members, a Distiller's teachers and student), so number them as Keras numbers layers.
    if model_name is None:
        uid = keras.backend.get_uid(name)
        model_name = name if uid == 1 else f"{name}_{uid - 1}"
    return MODELS[name](input_shape, int(num_classes), seeds=seeds, name=model_name, **kwargs)
